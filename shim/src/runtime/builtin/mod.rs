//! The built-in OCI runtime: no runc needed. Containers are built by forked
//! children of the shim ([`init`] is their sequence); the shim owns their
//! cgroup ([`crate::cgroup`]).
//!
//! Every system call of container setup goes through [`sys::Sys`], one
//! module per concern: [`namespaces`], [`rootfs`] (pivot, masked and
//! read-only paths), [`mounts`], [`devices`], [`creds`] (rlimits, ids,
//! capabilities), [`tty`], [`exec`], [`seccomp`] (the spec's filter),
//! [`hooks`] (the OCI hooks and where they run), [`userns`] (user
//! namespaces and their maps), [`apparmor`] (the process's profile), and
//! [`sync`] (the socket to the shim, fd passing). May use
//! `crate::cgroup`, `crate::stdio` and `berth-mount`; nothing here knows
//! the ttrpc service.

pub mod apparmor;
pub mod creds;
pub mod devices;
pub mod exec;
pub mod hooks;
pub mod init;
pub mod mounts;
pub mod namespaces;
pub mod procfs;
pub mod rootfs;
pub mod seccomp;
pub mod sync;
pub mod sys;
pub mod tty;
pub mod userns;

use super::oci::{CreateOpts, Created, ExecOpts, OciRuntime, signal_process};
use crate::cgroup::{Cgroup, Hierarchy};
use crate::{Error, Result};
use hooks::Kind;
use oci_spec::runtime::{LinuxResources, LinuxSeccomp, Spec};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

struct State {
    pid: u32,
    cgroup: Arc<dyn Cgroup>,
    cgroups_path: String,
    /// The init's sync socket, until it has been started.
    sync: Option<OwnedFd>,
    /// The container's user namespace, which its exec processes join.
    userns: Option<userns::UserNs>,
    /// For the poststart and poststop hooks' state.
    spec: Spec,
    id: String,
    bundle: std::path::PathBuf,
}

/// Runs the poststop hooks; a failure is a warning and the delete goes on
/// (the runtime spec). Their state has no pid, as runc's.
fn poststop(spec: &Spec, id: &str, bundle: &std::path::Path) {
    let post = hooks::of(spec, Kind::Poststop);
    let state = hooks::state_json(spec, id, bundle, "stopped", 0);
    if let Err(e) = hooks::run_all(Kind::Poststop, &post, &state) {
        eprintln!("container {id}: {}", e.chain());
    }
}

/// The built-in runtime (one container per shim).
#[derive(Default)]
pub struct Builtin {
    state: Mutex<Option<State>>,
}

fn unsupported(spec: &Spec) -> Result<()> {
    if let Some(field) = ignored_field(spec) {
        return Err(Error::unimplemented(format!(
            "{field} is not supported by the built-in runtime: use runc (BinaryName)"
        )));
    }
    Ok(())
}

/// The filter a forked child loads, compiled there: libseccomp's heap must
/// not stay in the long-lived shim (`crate::memory`). Failing, the child's.
fn compile_in_child(profile: Option<&LinuxSeccomp>, sock: &OwnedFd) -> Option<seccomp::Program> {
    match profile.map(seccomp::compile).transpose() {
        Ok(f) => f,
        Err(e) => {
            sync::send_error(sock, &e);
            init::exit_child(1)
        }
    }
}

/// The first spec field the built-in runtime would otherwise ignore: a
/// container must never run without something its spec asked for.
fn ignored_field(spec: &Spec) -> Option<&'static str> {
    if spec.domainname().as_deref().is_some_and(|d| !d.is_empty()) {
        return Some("domainname");
    }
    if let Some(p) = spec.process() {
        if p.io_priority().is_some() {
            return Some("process.ioPriority");
        }
        if p.scheduler().is_some() {
            return Some("process.scheduler");
        }
        if p.exec_cpu_affinity().is_some() {
            return Some("process.execCPUAffinity");
        }
    }
    let l = spec.linux().as_ref()?;
    let set = [
        (l.intel_rdt().is_some(), "linux.intelRdt"),
        (l.personality().is_some(), "linux.personality"),
        (l.time_offsets().is_some(), "linux.timeOffsets"),
        (l.memory_policy().is_some(), "linux.memoryPolicy"),
        (
            l.net_devices().as_ref().is_some_and(|d| !d.is_empty()),
            "linux.netDevices",
        ),
        (
            l.mount_label().as_deref().is_some_and(|m| !m.is_empty()),
            "linux.mountLabel",
        ),
    ];
    set.into_iter().find(|(s, _)| *s).map(|(_, f)| f)
}

/// Waits for a child the shim forked itself; gone already is fine.
fn reap(pid: nix::unistd::Pid) {
    if nix::sys::wait::waitpid(pid, None).is_err() {
        // ECHILD: the reaper collected it first.
    }
}

/// Removes a half-made container's cgroup, saying so if that fails too
/// (the create's own error is what the client hears).
fn discard(cgroup: &dyn Cgroup) {
    if let Err(e) = cgroup
        .kill_all(libc::SIGKILL)
        .and_then(|()| cgroup.delete())
    {
        eprintln!(
            "remove cgroup {} of a failed create: {}",
            cgroup.path(),
            e.chain()
        );
    }
}

impl Builtin {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
        let mut g = self
            .state
            .lock()
            .map_err(|_| Error::internal("runtime state poisoned"))?;
        let s = g
            .as_mut()
            .ok_or_else(|| Error::not_found("the container has not been created"))?;
        f(s)
    }

    fn cgroup(&self) -> Result<Arc<dyn Cgroup>> {
        self.with(|s| Ok(s.cgroup.clone()))
    }

    /// Create after the spec passed [`unsupported`] and [`userns::of`].
    fn create_valid(&self, opts: CreateOpts, user: Option<userns::UserNs>) -> Result<Created> {
        let linux = opts.spec.linux().clone().unwrap_or_default();
        // What needs no libseccomp is checked before anything is made.
        linux.seccomp().as_ref().map(seccomp::check).transpose()?;
        let cgroups_path = linux
            .cgroups_path()
            .clone()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("/berth/{}", opts.id));
        let cgroup: Arc<dyn Cgroup> = Hierarchy::detect()
            .create(&cgroups_path, linux.resources().as_ref())
            .map_err(|e| e.context("create container"))?
            .into();
        let joins = match cgroup.self_join_files() {
            Ok(j) => j,
            Err(e) => {
                discard(&*cgroup);
                return Err(e.context("create container"));
            }
        };
        let shim_moves = cgroup.shim_moves();
        // The cgroup2 part is entered at fork when the kernel can (see
        // sync::fork_reporting_pid); without it the shim moves the process.
        let into = cgroup
            .cgroup2_dir()
            .and_then(|d| std::fs::File::open(d).ok())
            .map(OwnedFd::from);
        let (parent, child) = sync::pair()?;
        // SAFETY: the shim is single-threaded; the child only runs our code
        // and exits or execs.
        let fork = unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))?;
        let nix::unistd::ForkResult::Parent { child: mid } = fork else {
            drop(parent);
            let filter = compile_in_child(linux.seccomp().as_ref(), &child);
            let target = init::Target {
                id: &opts.id,
                bundle: &opts.bundle,
                rootfs: &opts.rootfs,
            };
            let code = init::intermediate(
                &opts.spec,
                &target,
                opts.io,
                joins,
                shim_moves,
                into,
                filter.as_ref(),
                user.as_ref(),
                child,
            );
            init::exit_child(code)
        };
        drop(child);
        drop(opts.io); // the container holds its ends now
        drop(joins);
        drop(into);
        let first = userns::first_message(
            &sys::Host,
            &parent,
            mid.as_raw().unsigned_abs(),
            user.as_ref(),
        );
        if first.is_err() {
            // It may be waiting for maps that will not come.
            // SAFETY: our own child, not reaped yet.
            unsafe {
                libc::kill(mid.as_raw(), libc::SIGKILL);
            }
        }
        reap(mid);
        let shim_moves_it = shim_moves && !first.as_deref().is_ok_and(sync::placed_in_cgroup);
        let pid = match first.and_then(|m| sync::pid_or_error(&m)) {
            Ok(p) => p,
            Err(e) => {
                discard(&*cgroup);
                return Err(e.context("create container"));
            }
        };
        let setup = (|| {
            if shim_moves_it {
                let moved = cgroup
                    .shim_move(pid)
                    .and_then(|()| sync::send(&parent, "c"));
                if let Err(e) = moved {
                    // The process builds its rootfs meanwhile and stops at its
                    // first error (a missing program, say); then moving it or
                    // writing to it fails too, but its own report, already
                    // waiting, says what went wrong.
                    return Err(match sync::try_recv(&parent) {
                        Some(m) if m.starts_with('e') => sync::child_error(&m),
                        _ => e,
                    });
                }
            }
            // The init stops before pivot_root for our create hooks ("h"),
            // then a terminal's master comes first when the process wants one,
            // then its seccomp listener descriptor (forwarded) if it has one.
            let about =
                seccomp::listener::About::new(&opts.spec, &opts.id, &opts.bundle, "creating", pid);
            let (m, console) = loop {
                let (m, console) = seccomp::listener::recv_ready(&parent, &about, pid)?;
                if m != "h" {
                    break (m, console);
                }
                let state = hooks::state_json(&opts.spec, &opts.id, &opts.bundle, "creating", pid);
                for kind in [Kind::Prestart, Kind::CreateRuntime] {
                    hooks::run_all(kind, &hooks::of(&opts.spec, kind), &state)?;
                }
                sync::send(&parent, "h")?;
            };
            if m == "r" {
                Ok(console)
            } else {
                Err(sync::child_error(&m))
            }
        })();
        // runc runs poststart at the end of create, while the program waits
        // for start ("created"); a failure stops the container.
        let setup = setup.and_then(|console| {
            let state = hooks::state_json(&opts.spec, &opts.id, &opts.bundle, "created", pid);
            hooks::run_all(
                Kind::Poststart,
                &hooks::of(&opts.spec, Kind::Poststart),
                &state,
            )
            .map(|()| console)
        });
        let console = match setup {
            Ok(c) => c,
            Err(e) => {
                // SAFETY: kill our own half-made container.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
                reap(nix::unistd::Pid::from_raw(pid as i32));
                discard(&*cgroup);
                return Err(e.context("create container"));
            }
        };
        *self
            .state
            .lock()
            .map_err(|_| Error::internal("runtime state poisoned"))? = Some(State {
            pid,
            cgroup,
            cgroups_path,
            sync: Some(parent),
            userns: user,
            spec: opts.spec,
            id: opts.id,
            bundle: opts.bundle,
        });
        Ok(Created { pid, console })
    }
}

impl OciRuntime for Builtin {
    fn create(&self, opts: CreateOpts) -> Result<Created> {
        unsupported(&opts.spec)?;
        let user = userns::of(&opts.spec, nix::unistd::getegid().as_raw())?;
        let (spec, id, bundle) = (opts.spec.clone(), opts.id.clone(), opts.bundle.clone());
        self.create_valid(opts, user).inspect_err(|_| {
            // As runc, which destroys what a failed create made, poststop
            // hooks included.
            poststop(&spec, &id, &bundle);
        })
    }

    fn start(&self, _id: &str) -> Result<()> {
        let sync = self.with(|s| {
            s.sync
                .take()
                .ok_or_else(|| Error::precondition("the container was already started"))
        })?;
        sync::send(&sync, "s")?;
        // Exec closes the socket; a message means it failed.
        match sync::recv(&sync)? {
            m if m.is_empty() => Ok(()),
            m => Err(sync::child_error(&m)),
        }
    }

    fn exec(&self, _id: &str, opts: ExecOpts) -> Result<Created> {
        let (running, about) = self.with(|s| {
            let about = seccomp::listener::About::new(&s.spec, &s.id, &s.bundle, "running", s.pid);
            let running = init::Running {
                init_pid: s.pid,
                cgroups_path: s.cgroups_path.clone(),
                user: s.userns.clone(),
                oom_score_adj: s.spec.process().as_ref().and_then(|p| p.oom_score_adj()),
            };
            Ok((running, about))
        })?;
        let (parent, child) = sync::pair()?;
        // SAFETY: as in create.
        let fork = unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))?;
        let nix::unistd::ForkResult::Parent { child: mid } = fork else {
            drop(parent);
            // Exec processes get the container's filter too (runc).
            let filter = compile_in_child(about.profile.as_ref(), &child);
            let code =
                init::exec_intermediate(&running, &opts.process, filter.as_ref(), opts.io, child);
            init::exit_child(code)
        };
        drop(child);
        drop(opts.io);
        let first = sync::recv(&parent);
        reap(mid);
        let pid = first
            .and_then(|m| sync::pid_or_error(&m))
            .map_err(|e| e.context(format!("exec {}", opts.exec_id)))?;
        // A terminal's master may come first, then a seccomp listener
        // descriptor (forwarded); then the exec itself (the socket closes)
        // or its failure.
        let failed = |e: Error| e.context(format!("exec {}", opts.exec_id));
        match seccomp::listener::recv_ready(&parent, &about, pid) {
            Ok((m, console)) if m.is_empty() => Ok(Created { pid, console }),
            Ok((m, _)) => Err(failed(sync::child_error(&m))),
            Err(e) => {
                // SAFETY: kill our own half-made exec process.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                reap(nix::unistd::Pid::from_raw(pid as i32));
                Err(failed(e))
            }
        }
    }

    fn kill(&self, _id: &str, pid: u32, signal: u32, all: bool) -> Result<()> {
        if all {
            let sig = i32::try_from(signal)
                .map_err(|_| Error::invalid(format!("signal {signal} is not valid")))?;
            return self.cgroup()?.kill_all(sig);
        }
        signal_process(pid, signal)
    }

    fn delete(&self, _id: &str) -> Result<()> {
        let mut g = self
            .state
            .lock()
            .map_err(|_| Error::internal("runtime state poisoned"))?;
        if let Some(s) = g.take() {
            s.cgroup
                .kill_all(libc::SIGKILL)
                .and_then(|()| s.cgroup.delete())
                .map_err(|e| e.context(format!("delete cgroup {}", s.cgroups_path)))?;
            poststop(&s.spec, &s.id, &s.bundle);
        }
        Ok(())
    }

    fn pause(&self, _id: &str) -> Result<()> {
        self.cgroup()?.freeze()
    }

    fn resume(&self, _id: &str) -> Result<()> {
        self.cgroup()?.thaw()
    }

    fn pids(&self, _id: &str) -> Result<Vec<u32>> {
        self.cgroup()?.procs()
    }

    fn update(&self, _id: &str, resources: &LinuxResources) -> Result<()> {
        self.cgroup()?.apply(resources)
    }

    fn stats(&self, _id: &str) -> Result<crate::cgroup::Stats> {
        Ok(self.cgroup()?.stats())
    }

    fn oom_watch(&self, _id: &str) -> Option<crate::cgroup::OomWatch> {
        match self.cgroup().and_then(|c| c.oom_watch()) {
            Ok(w) => Some(w),
            Err(e) => {
                // OOM events are lost, the container runs: say so.
                eprintln!("watch OOM kills: {}", e.chain());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Fake;
    use oci_spec::runtime::{LinuxPidsBuilder, LinuxResourcesBuilder};

    /// A runtime whose container was created (init `pid`) in `cg`.
    fn running(cg: Arc<Fake>) -> Builtin {
        let b = Builtin::default();
        *b.state.lock().unwrap() = Some(State {
            pid: 7,
            cgroup: cg,
            cgroups_path: "/default/c1".into(),
            sync: None,
            userns: None,
            spec: Spec::default(),
            id: "c1".into(),
            bundle: "/b".into(),
        });
        b
    }

    #[test]
    fn container_wide_requests_go_to_its_cgroup() {
        let cg = Arc::new(Fake {
            pids: vec![7, 9],
            ..Fake::default()
        });
        let rt = running(cg.clone());
        rt.kill("c1", 7, 15, true).unwrap();
        rt.pause("c1").unwrap();
        rt.resume("c1").unwrap();
        assert_eq!(rt.pids("c1").unwrap(), vec![7, 9]);
        let res = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(3i64).build().unwrap())
            .build()
            .unwrap();
        rt.update("c1", &res).unwrap();
        assert_eq!(
            cg.calls(),
            vec!["kill_all 15", "freeze", "thaw", "procs", "apply pids=3"]
        );
        let e = rt.kill("c1", 7, u32::MAX, true).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::InvalidArgument);
        let e = rt.start("c1").unwrap_err();
        assert!(e.message().contains("already started"), "{e}");
    }

    #[test]
    fn hooks_pass_and_every_ignored_field_is_refused() {
        use oci_spec::runtime::{
            HookBuilder, HooksBuilder, LinuxBuilder, LinuxIntelRdtBuilder, LinuxPersonalityBuilder,
            ProcessBuilder,
        };
        assert!(unsupported(&Spec::default()).is_ok());
        let hook = || vec![HookBuilder::default().path("/bin/true").build().unwrap()];
        // Every kind runs now (see hooks), none is refused.
        let hooks = [
            HooksBuilder::default().prestart(hook()).build(),
            HooksBuilder::default().create_runtime(hook()).build(),
            HooksBuilder::default().create_container(hook()).build(),
            HooksBuilder::default().start_container(hook()).build(),
            HooksBuilder::default().poststart(hook()).build(),
            HooksBuilder::default().poststop(hook()).build(),
        ];
        for h in hooks {
            let mut s = Spec::default();
            s.set_hooks(Some(h.unwrap()));
            unsupported(&s).unwrap();
        }
        let linux = |l: LinuxBuilder| {
            let mut s = Spec::default();
            s.set_linux(Some(l.build().unwrap()));
            s
        };
        let cases = [
            (
                linux(
                    LinuxBuilder::default()
                        .intel_rdt(LinuxIntelRdtBuilder::default().build().unwrap()),
                ),
                "linux.intelRdt",
            ),
            (
                linux(
                    LinuxBuilder::default()
                        .personality(LinuxPersonalityBuilder::default().build().unwrap()),
                ),
                "linux.personality",
            ),
            (
                linux(LinuxBuilder::default().time_offsets(std::collections::HashMap::new())),
                "linux.timeOffsets",
            ),
            (
                linux(LinuxBuilder::default().mount_label("system_u:object_r:x")),
                "linux.mountLabel",
            ),
        ];
        for (s, field) in cases {
            let e = unsupported(&s).unwrap_err();
            assert_eq!(
                e.message(),
                format!("{field} is not supported by the built-in runtime: use runc (BinaryName)")
            );
        }
        let mut s = Spec::default();
        s.set_domainname(Some("example".into()));
        assert!(
            unsupported(&s)
                .unwrap_err()
                .message()
                .starts_with("domainname")
        );
        let mut s = Spec::default();
        let mut p = s
            .process()
            .clone()
            .unwrap_or(ProcessBuilder::default().build().unwrap());
        p.set_io_priority(Some(Default::default()));
        s.set_process(Some(p));
        assert!(
            unsupported(&s)
                .unwrap_err()
                .message()
                .starts_with("process.ioPriority")
        );
    }

    #[test]
    fn delete_kills_then_removes_and_says_when_it_cannot() {
        let cg = Arc::new(Fake::default());
        let rt = running(cg.clone());
        rt.delete("c1").unwrap();
        assert_eq!(cg.calls(), vec!["kill_all 9", "delete"]);
        // Forgotten: a second delete has nothing to do.
        rt.delete("c1").unwrap();
        assert_eq!(cg.calls().len(), 2);
        let e = rt.pause("c1").unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::NotFound);
        let cg = Arc::new(Fake {
            fail: Some("delete"),
            ..Fake::default()
        });
        let e = running(cg).delete("c1").unwrap_err();
        assert_eq!(e.message(), "delete cgroup /default/c1: fake delete");
        assert!(e.chain().contains("busy"), "{}", e.chain());
    }
}
