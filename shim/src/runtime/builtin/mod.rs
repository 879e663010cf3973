//! The built-in OCI runtime: no runc needed. Containers are built by forked
//! children of the shim ([`init`] is their sequence); the shim owns their
//! cgroup ([`crate::cgroup`]).
//!
//! Every system call of container setup goes through [`sys::Sys`], one
//! module per concern: [`namespaces`], [`rootfs`] (pivot, masked and
//! read-only paths), [`mounts`], [`devices`], [`creds`] (rlimits, ids,
//! capabilities), [`tty`], [`exec`], [`seccomp`] (the spec's filter),
//! and [`sync`] (the socket to the shim, fd passing). May use
//! `crate::cgroup`, `crate::stdio` and `berth-mount`; nothing here knows
//! the ttrpc service.

pub mod creds;
pub mod devices;
pub mod exec;
pub mod init;
pub mod mounts;
pub mod namespaces;
pub mod rootfs;
pub mod seccomp;
pub mod sync;
pub mod sys;
pub mod tty;

use super::oci::{CreateOpts, Created, ExecOpts, OciRuntime, signal_process};
use crate::cgroup::{Cgroup, Hierarchy};
use crate::{Error, Result};
use berth_proto::pb::io::containerd::cgroups::v1::Metrics;
use oci_spec::runtime::{LinuxResources, LinuxSeccomp, Spec};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

struct State {
    pid: u32,
    cgroup: Arc<dyn Cgroup>,
    cgroups_path: String,
    /// The container's seccomp profile, for its exec processes too.
    seccomp: Option<LinuxSeccomp>,
    /// The init's sync socket, until it has been started.
    sync: Option<OwnedFd>,
}

/// The built-in runtime (one container per shim).
#[derive(Default)]
pub struct Builtin {
    state: Mutex<Option<State>>,
}

fn unsupported(spec: &Spec) -> Result<()> {
    if spec.hooks().as_ref().is_some_and(|h| {
        h.prestart().is_some()
            || h.create_runtime().is_some()
            || h.create_container().is_some()
            || h.start_container().is_some()
            || h.poststart().is_some()
    }) {
        return Err(Error::unimplemented(
            "OCI hooks are not supported by the built-in runtime yet: use runc (BinaryName)",
        ));
    }
    Ok(())
}

/// Frees a filter only the child needed, and the heap its building grew:
/// the long-lived shim should not keep it resident (see `crate::memory`).
fn release(filter: Option<libseccomp::ScmpFilterContext>) {
    if filter.is_some() {
        drop(filter);
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe { libc::malloc_trim(0) };
    }
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
}

impl OciRuntime for Builtin {
    fn create(&self, opts: CreateOpts) -> Result<Created> {
        unsupported(&opts.spec)?;
        let linux = opts.spec.linux().clone().unwrap_or_default();
        // Translated before anything is made, so a profile we cannot apply
        // fails the create cleanly; the init only loads it.
        let filter = linux.seccomp().as_ref().map(seccomp::build).transpose()?;
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
            let code = init::intermediate(
                &opts.spec,
                &opts.rootfs,
                opts.io,
                joins,
                shim_moves,
                into,
                filter.as_ref(),
                child,
            );
            init::exit_child(code)
        };
        drop(child);
        release(filter);
        drop(opts.io); // the container holds its ends now
        drop(joins);
        drop(into);
        let first = sync::recv(&parent);
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
            // A terminal's master comes first when the process wants one.
            let (m, console) = sync::recv_ready(&parent)?;
            if m == "r" {
                Ok(console)
            } else {
                Err(sync::child_error(&m))
            }
        })();
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
            seccomp: linux.seccomp().clone(),
            sync: Some(parent),
        });
        Ok(Created { pid, console })
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
        let (init_pid, path, profile) =
            self.with(|s| Ok((s.pid, s.cgroups_path.clone(), s.seccomp.clone())))?;
        // Exec processes get the container's filter too (runc).
        let filter = profile.as_ref().map(seccomp::build).transpose()?;
        let (parent, child) = sync::pair()?;
        // SAFETY: as in create.
        let fork = unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))?;
        let nix::unistd::ForkResult::Parent { child: mid } = fork else {
            drop(parent);
            let code = init::exec_intermediate(
                init_pid,
                &path,
                &opts.process,
                filter.as_ref(),
                opts.io,
                child,
            );
            init::exit_child(code)
        };
        drop(child);
        release(filter);
        drop(opts.io);
        let first = sync::recv(&parent);
        reap(mid);
        let pid = first
            .and_then(|m| sync::pid_or_error(&m))
            .map_err(|e| e.context(format!("exec {}", opts.exec_id)))?;
        // A terminal's master may come first; then the exec itself (the
        // socket closes) or its failure.
        match sync::recv_ready(&parent)? {
            (m, console) if m.is_empty() => Ok(Created { pid, console }),
            (m, _) => Err(sync::child_error(&m).context(format!("exec {}", opts.exec_id))),
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

    fn stats(&self, _id: &str) -> Result<Metrics> {
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
            seccomp: None,
            sync: None,
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
