//! The built-in OCI runtime: no runc needed. Containers are built by forked
//! children of the shim (see `init.rs`); the shim owns their cgroup.

use super::init;
use super::{CreateOpts, Created, ExecOpts, OciRuntime};
use crate::cgroup::Cgroup;
use crate::{Error, Result};
use berth_proto::pb::io::containerd::cgroups::v1::Metrics;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use oci_spec::runtime::{LinuxResources, Spec};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

struct State {
    pid: u32,
    cgroup: Option<Cgroup>,
    cgroups_path: String,
    /// The init's sync socket, until it has been started.
    sync: Option<OwnedFd>,
}

/// The built-in runtime (one container per shim).
#[derive(Default)]
pub struct Builtin {
    state: Mutex<Option<State>>,
}

fn unsupported(spec: &Spec) -> Result<()> {
    if let Some(l) = spec.linux()
        && l.seccomp().is_some()
    {
        return Err(Error::unimplemented(
            "seccomp profiles are not supported by the built-in runtime yet: use runc (BinaryName)",
        ));
    }
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

fn sync_pair() -> Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("create sync socket", e))
}

/// Parses `p<pid>` or `e<message>` from a child.
fn pid_or_error(msg: &str) -> Result<u32> {
    if let Some(p) = msg.strip_prefix('p') {
        return p
            .parse()
            .map_err(|_| Error::internal(format!("bad pid message {msg:?}")));
    }
    Err(child_error(msg))
}

fn child_error(msg: &str) -> Error {
    match msg.strip_prefix('e') {
        Some(m) => Error::precondition(m.to_string()),
        None if msg.is_empty() => Error::internal("the container process exited during setup"),
        None => Error::internal(format!(
            "unexpected message {msg:?} from the container process"
        )),
    }
}

fn reap(pid: nix::unistd::Pid) {
    let _ = nix::sys::wait::waitpid(pid, None);
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

    fn cgroup(&self) -> Result<Cgroup> {
        self.with(|s| Ok(Cgroup::load(&s.cgroups_path)))
    }
}

impl OciRuntime for Builtin {
    fn create(&self, opts: CreateOpts) -> Result<Created> {
        unsupported(&opts.spec)?;
        let linux = opts.spec.linux().clone().unwrap_or_default();
        let cgroups_path = linux
            .cgroups_path()
            .clone()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("/berth/{}", opts.id));
        let cgroup = Cgroup::create(&cgroups_path, linux.resources().as_ref())?;
        let joins = match cgroup.self_join_files() {
            Ok(j) => j,
            Err(e) => {
                cgroup.delete();
                return Err(e.context("create container"));
            }
        };
        let shim_moves_it = joins.is_none();
        let (parent, child) = sync_pair()?;
        // SAFETY: the shim is single-threaded; the child only runs our code
        // and exits or execs.
        let fork = unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))?;
        let nix::unistd::ForkResult::Parent { child: mid } = fork else {
            drop(parent);
            let code = init::intermediate(&opts.spec, &opts.rootfs, opts.io, joins, child);
            // SAFETY: leave the forked child.
            unsafe { libc::_exit(code) }
        };
        drop(child);
        drop(opts.io); // the container holds its ends now
        drop(joins);
        let first = init::recv(&parent);
        reap(mid);
        let pid = match first.and_then(|m| pid_or_error(&m)) {
            Ok(p) => p,
            Err(e) => {
                cgroup.delete();
                return Err(e.context("create container"));
            }
        };
        let setup = (|| {
            if shim_moves_it {
                cgroup.add(pid)?;
                init::send(&parent, "c");
            }
            // A terminal's master comes first when the process wants one.
            let (mut m, console) = init::recv_fd(&parent)?;
            if m == "m" {
                m = init::recv(&parent)?;
            }
            if m == "r" {
                Ok(console)
            } else {
                Err(child_error(&m))
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
                cgroup.delete();
                return Err(e.context("create container"));
            }
        };
        *self
            .state
            .lock()
            .map_err(|_| Error::internal("runtime state poisoned"))? = Some(State {
            pid,
            cgroup: Some(cgroup),
            cgroups_path,
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
        init::send(&sync, "s");
        // Exec closes the socket; a message means it failed.
        match init::recv(&sync) {
            Ok(m) if m.is_empty() => Ok(()),
            Ok(m) => Err(child_error(&m)),
            Err(e) => Err(e),
        }
    }

    fn exec(&self, _id: &str, opts: ExecOpts) -> Result<Created> {
        let (init_pid, path) = self.with(|s| Ok((s.pid, s.cgroups_path.clone())))?;
        let (parent, child) = sync_pair()?;
        // SAFETY: as in create.
        let fork = unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))?;
        let nix::unistd::ForkResult::Parent { child: mid } = fork else {
            drop(parent);
            let code = init::exec_intermediate(init_pid, &path, &opts.process, opts.io, child);
            // SAFETY: leave the forked child.
            unsafe { libc::_exit(code) }
        };
        drop(child);
        drop(opts.io);
        let first = init::recv(&parent);
        reap(mid);
        let pid = first
            .and_then(|m| pid_or_error(&m))
            .map_err(|e| e.context(format!("exec {}", opts.exec_id)))?;
        // A terminal's master may come first; then the exec itself (the
        // socket closes) or its failure.
        let (mut m, console) = init::recv_fd(&parent)?;
        if m == "m" {
            m = init::recv(&parent)?;
        }
        match m {
            m if m.is_empty() => Ok(Created { pid, console }),
            m => Err(child_error(&m).context(format!("exec {}", opts.exec_id))),
        }
    }

    fn kill(&self, _id: &str, pid: u32, signal: u32, all: bool) -> Result<()> {
        if all {
            self.cgroup()?.kill_all(signal as i32);
            return Ok(());
        }
        super::signal_process(pid, signal)
    }

    fn delete(&self, _id: &str) -> Result<()> {
        let mut g = self
            .state
            .lock()
            .map_err(|_| Error::internal("runtime state poisoned"))?;
        if let Some(s) = g.take() {
            let cg = s.cgroup.unwrap_or_else(|| Cgroup::load(&s.cgroups_path));
            cg.kill_all(libc::SIGKILL);
            cg.delete();
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
        Ok(self.cgroup()?.procs())
    }

    fn update(&self, _id: &str, resources: &LinuxResources) -> Result<()> {
        self.cgroup()?.update(resources)
    }

    fn stats(&self, _id: &str) -> Result<Metrics> {
        Ok(self.cgroup()?.stats())
    }

    fn oom_eventfd(&self, _id: &str) -> Option<OwnedFd> {
        self.cgroup().ok()?.oom_eventfd().ok()
    }
}
