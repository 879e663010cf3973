//! The serving shim: one container's processes ([`process`]), what each
//! task request does to them (here), the reaper and event publishing; the
//! ttrpc adapters ([`task`] with the main loop, [`logs`]), the one place
//! errors become statuses, use this file, never the other way. May use
//! `crate::runtime`, `crate::stdio`, `crate::bundle`, `crate::events`.

pub mod logs;
pub mod process;
pub mod task;

use crate::bundle::{Bundle, SavedExit};
use crate::events::Publisher;
use crate::runtime::{Choice, CreateOpts, ExecOpts, OciRuntime};
use crate::{Error, Result};
use berth_proto::pb::containerd::events as ev;
use berth_proto::pb::containerd::runc::v1::{Options as RuncOptions, ProcessDetails};
use berth_proto::pb::containerd::task::v2 as api;
use berth_proto::pb::containerd::v1::types::{ProcessInfo, Status};
use berth_proto::time::{now, timestamp};
use berth_proto::typeurl;
use process::{Proc, Procs, Stdio};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How long output copies may take to drain after a process exits.
const IO_DRAIN: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Inner {
    runtime: Option<Arc<dyn OciRuntime>>,
    procs: Procs,
    rootfs: Option<PathBuf>,
    /// Who owns the stdio pipes of the container's processes (the create's
    /// runtime options), for its execs too, as containerd's shim.
    io_owner: crate::stdio::IoOwner,
    deleted: bool,
    /// Exits of pids not (yet) known: a fast process can exit before its
    /// pid is recorded.
    early_exits: std::collections::HashMap<u32, i32>,
}

/// The shim's state and service.
pub struct Shim {
    ns: String,
    id: String,
    bundle: Bundle,
    publisher: Publisher,
    inner: Mutex<Inner>,
    shutdown: Notify,
    socket: String, // served on; Shutdown removes it (empty: none)
}

fn exit_code(status: nix::sys::wait::WaitStatus) -> Option<(u32, i32)> {
    use nix::sys::wait::WaitStatus::*;
    let pid = |p: nix::unistd::Pid| u32::try_from(p.as_raw()).ok();
    match status {
        Exited(p, code) => Some((pid(p)?, code)),
        Signaled(p, sig, _) => Some((pid(p)?, 128 + sig as i32)),
        _ => None,
    }
}

fn stdio_of(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Stdio {
    Stdio {
        stdin: stdin.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
        terminal,
    }
}

impl Shim {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn runtime(&self) -> Result<Arc<dyn OciRuntime>> {
        self.lock()
            .runtime
            .clone()
            .ok_or_else(|| Error::not_found(format!("container {} has not been created", self.id)))
    }

    fn check_id(&self, id: &str) -> Result<()> {
        if !id.is_empty() && id != self.id {
            return Err(Error::not_found(format!(
                "this shim serves container {}, not {id}",
                self.id
            )));
        }
        Ok(())
    }

    /// Collects every exited child and finishes their processes.
    fn reap(self: &Arc<Self>) {
        loop {
            match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => return,
                Ok(st) => {
                    if let Some((pid, code)) = exit_code(st) {
                        self.on_exit(pid, code);
                    }
                }
            }
        }
    }

    fn on_exit(self: &Arc<Self>, pid: u32, code: i32) {
        let mut g = self.lock();
        let Some(exec_id) = g.procs.running_with_pid(pid) else {
            g.early_exits.insert(pid, code);
            return;
        };
        let exit = SavedExit {
            pid,
            status: u32::try_from(code).unwrap_or(u32::MAX),
            exited_at: now(),
        };
        let Ok(p) = g.procs.get_mut(&exec_id) else {
            return;
        };
        let outputs = p.exited(exit);
        let runtime = g.runtime.clone();
        drop(g);
        let is_init = exec_id.is_empty();
        if is_init {
            // Durable before anyone hears of it: a crash must not lose it.
            if let Err(e) = self.bundle.write_exit(&exit) {
                eprintln!("record exit of {pid}: {}", e.chain());
            }
            // What outlives init is killed, as with a pid namespace.
            if let Some(rt) = &runtime
                && let Err(e) = rt.kill(&self.id, pid, libc::SIGKILL as u32, true)
            {
                eprintln!("kill what outlived init {pid}: {}", e.chain());
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            for o in outputs {
                // A copy still running after IO_DRAIN is left behind: the
                // exit is reported regardless.
                if tokio::time::timeout(IO_DRAIN, o).await.is_err() {
                    eprintln!("output of {pid} still copying after {IO_DRAIN:?}");
                }
            }
            if let Ok(p) = this.lock().procs.get_mut(&exec_id) {
                p.stopped();
            }
            this.publisher.publish(
                "/tasks/exit",
                &ev::TaskExit {
                    container_id: this.id.clone(),
                    id: if is_init { this.id.clone() } else { exec_id },
                    pid,
                    exit_status: exit.status,
                    exited_at: Some(timestamp(exit.exited_at)),
                },
            );
        });
    }

    /// Records a started process's pid, picking up an exit that came first.
    fn started(self: &Arc<Self>, exec_id: &str, pid: u32) {
        let early = {
            let mut g = self.lock();
            if let Ok(p) = g.procs.get_mut(exec_id) {
                p.pid = pid;
                if p.status == Status::Created {
                    p.status = Status::Running;
                }
            }
            g.early_exits.remove(&pid)
        };
        if let Some(code) = early {
            self.on_exit(pid, code);
        }
    }

    fn watch_oom(self: &Arc<Self>, rt: &Arc<dyn OciRuntime>) {
        let Some(crate::cgroup::OomWatch { fd, mut counter }) = rt.oom_watch(&self.id) else {
            return;
        };
        let afd = match crate::stdio::async_fd(fd) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("watch OOM kills: {}", e.chain());
                return;
            }
        };
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok(mut g) = afd.readable().await else {
                    return;
                };
                match g.try_io(|f| counter.drain(f.get_ref())) {
                    Ok(Ok(0)) => continue,
                    Ok(Ok(_)) => {
                        // The cgroup going away also signals the watch.
                        if this.lock().deleted {
                            return;
                        }
                        this.publisher.publish(
                            "/tasks/oom",
                            &ev::TaskOom {
                                container_id: this.id.clone(),
                            },
                        );
                    }
                    Ok(Err(_)) => return,
                    Err(_would_block) => continue,
                }
            }
        });
    }

    /// Unmounts a rootfs this shim mounted, after a failed create.
    fn undo_rootfs(&self) {
        if let Some(r) = self.lock().rootfs.take()
            && let Err(e) = berth_mount::unmount(&r)
        {
            eprintln!("unmount {} after a failed create: {e}", r.display());
        }
    }

    fn do_create(self: &Arc<Self>, req: api::CreateTaskRequest) -> Result<u32> {
        self.check_id(&req.id)?;
        if self.lock().procs.init().is_some() {
            return Err(Error::already_exists(format!(
                "container {} already created",
                self.id
            )));
        }
        let bundle = if req.bundle.is_empty() {
            self.bundle.clone()
        } else {
            Bundle::new(&req.bundle)
        };
        let opts: RuncOptions = req
            .options
            .as_ref()
            .and_then(typeurl::unpack)
            .unwrap_or_default();
        let choice = Choice {
            root: if opts.binary_name.is_empty() {
                String::new()
            } else {
                crate::runtime::external::state_root(&opts.root, bundle.dir(), &self.ns)
            },
            binary: opts.binary_name.clone(),
            systemd_cgroup: opts.systemd_cgroup,
        };
        bundle.write_runtime(&choice)?;
        let spec = crate::runtime::load_spec(bundle.dir())?;
        let rootfs = if req.rootfs.is_empty() {
            let p = spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_else(|| "rootfs".into());
            if p.is_absolute() {
                p
            } else {
                bundle.dir().join(p)
            }
        } else {
            let dir = bundle.rootfs();
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create rootfs directory", e))?;
            let mounts: Vec<berth_mount::Mount> =
                req.rootfs.iter().cloned().map(Into::into).collect();
            berth_mount::mount_all(&mounts, &dir)
                .map_err(|e| Error::from(e).context("mount rootfs"))?;
            self.lock().rootfs = Some(dir.clone());
            dir
        };
        let owner = crate::stdio::IoOwner {
            uid: opts.io_uid,
            gid: opts.io_gid,
        };
        self.lock().io_owner = owner;
        let (child_io, mut shim_io) =
            match crate::stdio::setup(&req.stdin, &req.stdout, &req.stderr, req.terminal, owner) {
                Ok(v) => v,
                Err(e) => {
                    self.undo_rootfs();
                    return Err(e);
                }
            };
        let rt: Arc<dyn OciRuntime> = Arc::from(choice.build());
        let created = match rt.create(CreateOpts {
            id: self.id.clone(),
            bundle: bundle.dir().to_path_buf(),
            rootfs,
            spec,
            io: child_io,
        }) {
            Ok(c) => c,
            Err(e) => {
                self.undo_rootfs();
                return Err(e);
            }
        };
        let pid = created.pid;
        if let Some(master) = created.console {
            crate::stdio::attach_console(&mut shim_io, master)?;
        }
        bundle.write_pid(pid)?;
        {
            let mut g = self.lock();
            let stdio = stdio_of(&req.stdin, &req.stdout, &req.stderr, req.terminal);
            let mut p = Proc::new(stdio, shim_io);
            p.pid = pid;
            g.procs.insert("", p);
            g.runtime = Some(rt.clone());
        }
        self.watch_oom(&rt);
        self.publisher.publish(
            "/tasks/create",
            &ev::TaskCreate {
                container_id: self.id.clone(),
                bundle: bundle.dir().display().to_string(),
                rootfs: req.rootfs.clone(),
                io: Some(ev::TaskIo {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                }),
                checkpoint: String::new(),
                pid,
            },
        );
        Ok(pid)
    }

    fn do_start(self: &Arc<Self>, req: &api::StartRequest) -> Result<u32> {
        self.check_id(&req.id)?;
        let rt = self.runtime()?;
        if req.exec_id.is_empty() {
            let pid = {
                let g = self.lock();
                let p = g.procs.get("")?;
                if p.status != Status::Created {
                    return Err(Error::precondition(format!(
                        "container {} is {:?}, not created",
                        self.id, p.status
                    )));
                }
                p.pid
            };
            rt.start(&self.id)?;
            self.started("", pid);
            self.publisher.publish(
                "/tasks/start",
                &ev::TaskStart {
                    container_id: self.id.clone(),
                    pid,
                },
            );
            return Ok(pid);
        }
        let (process, io) = self
            .lock()
            .procs
            .get_mut(&req.exec_id)?
            .pending
            .take()
            .ok_or_else(|| {
                Error::precondition(format!("exec {} was already started", req.exec_id))
            })?;
        let created = rt.exec(
            &self.id,
            ExecOpts {
                exec_id: req.exec_id.clone(),
                process,
                io,
            },
        )?;
        let pid = created.pid;
        if let Some(master) = created.console
            && let Ok(p) = self.lock().procs.get_mut(&req.exec_id)
        {
            crate::stdio::attach_console(&mut p.io, master)?;
        }
        self.started(&req.exec_id, pid);
        self.publisher.publish(
            "/tasks/exec-started",
            &ev::TaskExecStarted {
                container_id: self.id.clone(),
                exec_id: req.exec_id.clone(),
                pid,
            },
        );
        Ok(pid)
    }

    fn proc_state(&self, exec_id: &str) -> Result<api::StateResponse> {
        let bundle = self.bundle.dir().display().to_string();
        Ok(self
            .lock()
            .procs
            .get(exec_id)?
            .state(&self.id, &bundle, exec_id))
    }

    fn do_delete(self: &Arc<Self>, req: &api::DeleteRequest) -> Result<api::DeleteResponse> {
        self.check_id(&req.id)?;
        let (pid, exit) = if req.exec_id.is_empty() {
            self.delete_init()?
        } else {
            let mut g = self.lock();
            if g.procs.get(&req.exec_id)?.is_live() {
                return Err(Error::precondition(format!(
                    "exec {} is running: kill it first",
                    req.exec_id
                )));
            }
            let p = g.procs.remove(&req.exec_id)?;
            (p.pid, p.exit_or_default())
        };
        self.publisher.publish(
            "/tasks/delete",
            &ev::TaskDelete {
                container_id: self.id.clone(),
                pid,
                exit_status: exit.status,
                exited_at: Some(timestamp(exit.exited_at)),
                id: if req.exec_id.is_empty() {
                    self.id.clone()
                } else {
                    req.exec_id.clone()
                },
            },
        );
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.exited_at)),
        })
    }

    /// Deletes the container: runtime state, cgroup, rootfs.
    fn delete_init(&self) -> Result<(u32, SavedExit)> {
        let (pid, live, rt) = {
            let g = self.lock();
            let p = g.procs.get("")?;
            (p.pid, p.is_live(), g.runtime.clone())
        };
        if live {
            return Err(Error::precondition(format!(
                "task {} is running: kill it before deleting",
                self.id
            )));
        }
        if let Some(rt) = &rt {
            rt.delete(&self.id)?;
        }
        let rootfs = {
            let mut g = self.lock();
            g.deleted = true;
            g.rootfs.take()
        };
        if let Some(r) = rootfs {
            berth_mount::unmount(&r).map_err(|e| Error::from(e).context("unmount rootfs"))?;
        }
        let exit = self
            .lock()
            .procs
            .init()
            .and_then(|p| p.exit)
            .unwrap_or(SavedExit {
                pid,
                status: 128 + libc::SIGKILL as u32,
                exited_at: now(),
            });
        Ok((pid, exit))
    }

    fn do_exec(self: &Arc<Self>, req: api::ExecProcessRequest) -> Result<()> {
        self.check_id(&req.id)?;
        {
            let g = self.lock();
            if g.procs.contains(&req.exec_id) {
                return Err(Error::already_exists(format!(
                    "exec {} already exists",
                    req.exec_id
                )));
            }
            let running = g.procs.init().is_some_and(|p| p.status == Status::Running);
            if !running {
                return Err(Error::precondition(format!(
                    "container {} is not running",
                    self.id
                )));
            }
        }
        berth_proto::identifiers::validate(&req.exec_id)
            .map_err(|e| Error::invalid(format!("exec id: {e}")))?;
        let spec = req
            .spec
            .ok_or_else(|| Error::invalid("exec needs a process spec"))?;
        let process: oci_spec::runtime::Process =
            serde_json::from_slice(&spec.value).map_err(|e| {
                Error::caused(
                    berth_proto::errdefs::Kind::InvalidArgument,
                    "exec process spec is not a valid OCI process",
                    e,
                )
            })?;
        let owner = self.lock().io_owner;
        let (child_io, shim_io) =
            crate::stdio::setup(&req.stdin, &req.stdout, &req.stderr, req.terminal, owner)?;
        let stdio = stdio_of(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        let mut p = Proc::new(stdio, shim_io);
        p.pending = Some((process, child_io));
        self.lock().procs.insert(&req.exec_id, p);
        self.publisher.publish(
            "/tasks/exec-added",
            &ev::TaskExecAdded {
                container_id: self.id.clone(),
                exec_id: req.exec_id,
            },
        );
        Ok(())
    }

    fn do_kill(&self, req: &api::KillRequest) -> Result<()> {
        self.check_id(&req.id)?;
        let rt = self.runtime()?;
        let pid = self.lock().procs.get(&req.exec_id)?.kill_target(req.all)?;
        rt.kill(&self.id, pid, req.signal, req.all && req.exec_id.is_empty())
    }

    fn do_pids(&self) -> Result<api::PidsResponse> {
        let pids = self.runtime()?.pids(&self.id)?;
        let g = self.lock();
        let processes = pids
            .into_iter()
            .map(|pid| ProcessInfo {
                pid,
                info: g
                    .procs
                    .exec_with_pid(pid)
                    .map(|k| typeurl::pack(&ProcessDetails { exec_id: k.into() })),
            })
            .collect();
        Ok(api::PidsResponse { processes })
    }

    /// Pause or resume: the runtime, then the init's status and the event.
    fn set_paused(&self, id: &str, paused: bool) -> Result<()> {
        self.check_id(id)?;
        let rt = self.runtime()?;
        if paused {
            rt.pause(&self.id)?;
        } else {
            rt.resume(&self.id)?;
        }
        if let Ok(p) = self.lock().procs.get_mut("") {
            p.status = if paused {
                Status::Paused
            } else {
                Status::Running
            };
        }
        let container_id = self.id.clone();
        if paused {
            self.publisher
                .publish("/tasks/paused", &ev::TaskPaused { container_id });
        } else {
            self.publisher
                .publish("/tasks/resumed", &ev::TaskResumed { container_id });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::exit_code;
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;

    #[test]
    fn exit_statuses_as_containerd_reports_them() {
        let p = Pid::from_raw(42);
        assert_eq!(exit_code(WaitStatus::Exited(p, 3)), Some((42, 3)));
        // Killed by a signal: 128 + its number, as a shell reports it.
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some((42, 137))
        );
        assert_eq!(exit_code(WaitStatus::Stopped(p, Signal::SIGSTOP)), None);
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }
}
