//! The serving shim: the `containerd.task.v2.Task` ttrpc service over one
//! container, the reaper, and event publishing.

use crate::bootstrap::{SavedExit, files, now, timestamp, write_file};
use crate::events::Publisher;
use crate::runtime::{Choice, CreateOpts, ExecOpts, OciRuntime};
use crate::stdio::{ChildIo, ShimIo};
use crate::{Error, Flags, Result};
use berth_proto::pb::containerd::events as ev;
use berth_proto::pb::containerd::runc::v1::{Options as RuncOptions, ProcessDetails};
use berth_proto::pb::containerd::task::v2 as api;
use berth_proto::pb::containerd::task::v2::task_ttrpc;
use berth_proto::pb::containerd::v1::types::{ProcessInfo, Status};
use berth_proto::ttrpc::{Context, Status as TStatus};
use berth_proto::typeurl;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How long output copies may take to drain after a process exits.
const IO_DRAIN: Duration = Duration::from_secs(2);

struct Proc {
    pid: u32,
    status: Status,
    stdin: String,
    stdout: String,
    stderr: String,
    terminal: bool,
    exit: Option<SavedExit>,
    io: ShimIo,
    exited: watch::Sender<bool>,
    /// For an exec not yet started: what to start.
    pending: Option<(oci_spec::runtime::Process, ChildIo)>,
}

impl Proc {
    fn new(stdin: &str, stdout: &str, stderr: &str, terminal: bool, io: ShimIo) -> Proc {
        Proc {
            pid: 0,
            status: Status::Created,
            stdin: stdin.into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            terminal,
            exit: None,
            io,
            exited: watch::channel(false).0,
            pending: None,
        }
    }
}

#[derive(Default)]
struct Inner {
    runtime: Option<Arc<dyn OciRuntime>>,
    init: Option<Proc>,
    execs: HashMap<String, Proc>,
    rootfs: Option<PathBuf>,
    deleted: bool,
    /// Exits of pids not (yet) known: a fast process can exit before its
    /// pid is recorded.
    early_exits: HashMap<u32, i32>,
}

/// The shim's state and service.
pub struct Shim {
    ns: String,
    id: String,
    bundle: PathBuf,
    publisher: Publisher,
    inner: Mutex<Inner>,
    shutdown: Notify,
}

type R<T> = std::result::Result<T, TStatus>;

fn exit_code(status: nix::sys::wait::WaitStatus) -> Option<(u32, i32)> {
    use nix::sys::wait::WaitStatus::*;
    match status {
        Exited(pid, code) => Some((pid.as_raw() as u32, code)),
        Signaled(pid, sig, _) => Some((pid.as_raw() as u32, 128 + sig as i32)),
        _ => None,
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
        let exit = SavedExit {
            pid,
            status: code as u32,
            exited_at: now(),
        };
        let exec_id = if g
            .init
            .as_ref()
            .is_some_and(|p| p.pid == pid && p.exit.is_none())
        {
            Some(String::new())
        } else {
            g.execs
                .iter()
                .find(|(_, p)| p.pid == pid && p.exit.is_none())
                .map(|(k, _)| k.clone())
        };
        let Some(exec_id) = exec_id else {
            g.early_exits.insert(pid, code);
            return;
        };
        let is_init = exec_id.is_empty();
        let p = if is_init {
            g.init.as_mut()
        } else {
            g.execs.get_mut(&exec_id)
        };
        let Some(p) = p else { return };
        p.exit = Some(exit);
        let outputs = std::mem::take(&mut p.io.outputs);
        if let Some(i) = p.io.input.take() {
            i.abort();
        }
        let runtime = g.runtime.clone();
        drop(g);
        if is_init {
            // Durable before anyone hears of it: a crash must not lose it.
            if let Err(e) = write_file(
                &self.bundle.join(files::INIT_EXIT),
                &serde_json::to_vec(&exit).unwrap_or_default(),
            ) {
                eprintln!("record exit of {pid}: {e}");
            }
            // What outlives init is killed, as with a pid namespace.
            if let Some(rt) = &runtime {
                let _ = rt.kill(&self.id, pid, libc::SIGKILL as u32, true);
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            for o in outputs {
                let _ = tokio::time::timeout(IO_DRAIN, o).await;
            }
            let mut g = this.lock();
            let p = if is_init {
                g.init.as_mut()
            } else {
                g.execs.get_mut(&exec_id)
            };
            if let Some(p) = p {
                p.status = Status::Stopped;
                // send_replace: a waiter may subscribe only after the exit.
                p.exited.send_replace(true);
            }
            drop(g);
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
            let p = if exec_id.is_empty() {
                g.init.as_mut()
            } else {
                g.execs.get_mut(exec_id)
            };
            if let Some(p) = p {
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
        let Some(fd) = rt.oom_eventfd(&self.id) else {
            return;
        };
        let Ok(afd) = crate::stdio::async_fd(fd) else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok(mut g) = afd.readable().await else {
                    return;
                };
                let mut buf = [0u8; 8];
                match g.try_io(|f| {
                    nix::unistd::read(f.get_ref(), &mut buf).map_err(std::io::Error::from)
                }) {
                    Ok(Ok(8)) => {
                        // The cgroup going away also signals the eventfd.
                        let gone = this.lock().deleted;
                        if gone {
                            return;
                        }
                        this.publisher.publish(
                            "/tasks/oom",
                            &ev::TaskOom {
                                container_id: this.id.clone(),
                            },
                        );
                    }
                    Ok(_) => return,
                    Err(_would_block) => continue,
                }
            }
        });
    }

    fn do_create(self: &Arc<Self>, req: api::CreateTaskRequest) -> Result<u32> {
        self.check_id(&req.id)?;
        if self.lock().init.is_some() {
            return Err(Error::already_exists(format!(
                "container {} already created",
                self.id
            )));
        }
        let bundle = if req.bundle.is_empty() {
            self.bundle.clone()
        } else {
            PathBuf::from(&req.bundle)
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
                crate::runtime::external::state_root(&opts.root, &bundle, &self.ns)
            },
            binary: opts.binary_name.clone(),
            systemd_cgroup: opts.systemd_cgroup,
        };
        write_file(
            &bundle.join(files::RUNTIME),
            &serde_json::to_vec(&choice).unwrap_or_default(),
        )?;
        let spec = crate::runtime::load_spec(&bundle)?;
        let rootfs = if req.rootfs.is_empty() {
            let p = spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_else(|| "rootfs".into());
            if p.is_absolute() { p } else { bundle.join(p) }
        } else {
            let dir = bundle.join("rootfs");
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create rootfs directory", e))?;
            let mounts: Vec<berth_mount::Mount> =
                req.rootfs.iter().cloned().map(Into::into).collect();
            berth_mount::mount_all(&mounts, &dir)
                .map_err(|e| Error::from(e).context("mount rootfs"))?;
            self.lock().rootfs = Some(dir.clone());
            dir
        };
        let undo = |this: &Arc<Self>| {
            if let Some(r) = this.lock().rootfs.take() {
                let _ = berth_mount::unmount(&r);
            }
        };
        let (child_io, shim_io) =
            match crate::stdio::setup(&req.stdin, &req.stdout, &req.stderr, req.terminal) {
                Ok(v) => v,
                Err(e) => {
                    undo(self);
                    return Err(e);
                }
            };
        let rt: Arc<dyn OciRuntime> = Arc::from(choice.build());
        let mut shim_io = shim_io;
        let created = match rt.create(CreateOpts {
            id: self.id.clone(),
            bundle: bundle.clone(),
            rootfs: rootfs.clone(),
            spec,
            io: child_io,
        }) {
            Ok(c) => c,
            Err(e) => {
                undo(self);
                return Err(e);
            }
        };
        let pid = created.pid;
        if let Some(master) = created.console {
            crate::stdio::attach_console(&mut shim_io, master)?;
        }
        write_file(&bundle.join(files::INIT_PID), pid.to_string().as_bytes())?;
        {
            let mut g = self.lock();
            let mut p = Proc::new(&req.stdin, &req.stdout, &req.stderr, req.terminal, shim_io);
            p.pid = pid;
            g.init = Some(p);
            g.runtime = Some(rt.clone());
        }
        self.watch_oom(&rt);
        self.publisher.publish(
            "/tasks/create",
            &ev::TaskCreate {
                container_id: self.id.clone(),
                bundle: bundle.display().to_string(),
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
                let p = g
                    .init
                    .as_ref()
                    .ok_or_else(|| Error::not_found("no init process"))?;
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
        let (process, io) = {
            let mut g = self.lock();
            let p = g
                .execs
                .get_mut(&req.exec_id)
                .ok_or_else(|| Error::not_found(format!("exec {} not found", req.exec_id)))?;
            p.pending.take().ok_or_else(|| {
                Error::precondition(format!("exec {} was already started", req.exec_id))
            })?
        };
        let created = rt.exec(
            &self.id,
            ExecOpts {
                exec_id: req.exec_id.clone(),
                process,
                io,
            },
        )?;
        let pid = created.pid;
        if let Some(master) = created.console {
            let mut g = self.lock();
            if let Some(p) = g.execs.get_mut(&req.exec_id) {
                crate::stdio::attach_console(&mut p.io, master)?;
            }
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
        let g = self.lock();
        let p = if exec_id.is_empty() {
            g.init.as_ref()
        } else {
            g.execs.get(exec_id)
        };
        let p = p.ok_or_else(|| {
            Error::not_found(format!("process {exec_id:?} of {} not found", self.id))
        })?;
        Ok(api::StateResponse {
            id: self.id.clone(),
            bundle: self.bundle.display().to_string(),
            pid: p.pid,
            status: p.status as i32,
            stdin: p.stdin.clone(),
            stdout: p.stdout.clone(),
            stderr: p.stderr.clone(),
            terminal: p.terminal,
            exit_status: p.exit.map_or(0, |e| e.status),
            exited_at: p.exit.map(|e| timestamp(e.exited_at)),
            exec_id: exec_id.to_string(),
        })
    }

    fn do_delete(self: &Arc<Self>, req: &api::DeleteRequest) -> Result<api::DeleteResponse> {
        self.check_id(&req.id)?;
        if !req.exec_id.is_empty() {
            let mut g = self.lock();
            let p = g
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| Error::not_found(format!("exec {} not found", req.exec_id)))?;
            if p.status == Status::Running || p.status == Status::Paused {
                return Err(Error::precondition(format!(
                    "exec {} is running: kill it first",
                    req.exec_id
                )));
            }
            let p = g
                .execs
                .remove(&req.exec_id)
                .ok_or_else(|| Error::not_found(format!("exec {} not found", req.exec_id)))?;
            drop(g);
            let exit = p.exit.unwrap_or_default();
            self.publisher.publish(
                "/tasks/delete",
                &ev::TaskDelete {
                    container_id: self.id.clone(),
                    pid: p.pid,
                    exit_status: exit.status,
                    exited_at: Some(timestamp(exit.exited_at)),
                    id: req.exec_id.clone(),
                },
            );
            return Ok(api::DeleteResponse {
                pid: p.pid,
                exit_status: exit.status,
                exited_at: Some(timestamp(exit.exited_at)),
            });
        }
        let (pid, status, rt) = {
            let g = self.lock();
            let p = g
                .init
                .as_ref()
                .ok_or_else(|| Error::not_found(format!("container {} has no task", self.id)))?;
            (p.pid, p.status, g.runtime.clone())
        };
        if status == Status::Running || status == Status::Paused {
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
            .init
            .as_ref()
            .and_then(|p| p.exit)
            .unwrap_or(SavedExit {
                pid,
                status: 128 + libc::SIGKILL as u32,
                exited_at: now(),
            });
        self.publisher.publish(
            "/tasks/delete",
            &ev::TaskDelete {
                container_id: self.id.clone(),
                pid,
                exit_status: exit.status,
                exited_at: Some(timestamp(exit.exited_at)),
                id: self.id.clone(),
            },
        );
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.exited_at)),
        })
    }

    fn do_exec(self: &Arc<Self>, req: api::ExecProcessRequest) -> Result<()> {
        self.check_id(&req.id)?;
        {
            let g = self.lock();
            if g.execs.contains_key(&req.exec_id) {
                return Err(Error::already_exists(format!(
                    "exec {} already exists",
                    req.exec_id
                )));
            }
            let running = g.init.as_ref().is_some_and(|p| p.status == Status::Running);
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
                Error::invalid(format!("exec process spec is not a valid OCI process: {e}"))
            })?;
        let (child_io, shim_io) =
            crate::stdio::setup(&req.stdin, &req.stdout, &req.stderr, req.terminal)?;
        let mut p = Proc::new(&req.stdin, &req.stdout, &req.stderr, req.terminal, shim_io);
        p.pending = Some((process, child_io));
        self.lock().execs.insert(req.exec_id.clone(), p);
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
        let pid = {
            let g = self.lock();
            let p = if req.exec_id.is_empty() {
                g.init.as_ref()
            } else {
                g.execs.get(&req.exec_id)
            };
            let p =
                p.ok_or_else(|| Error::not_found(format!("process {:?} not found", req.exec_id)))?;
            if p.exit.is_some() && !req.all {
                return Err(Error::not_found("process already finished"));
            }
            if p.pid == 0 {
                return Err(Error::precondition("process has not been started"));
            }
            p.pid
        };
        rt.kill(&self.id, pid, req.signal, req.all && req.exec_id.is_empty())
    }

    fn do_pids(&self) -> Result<api::PidsResponse> {
        let rt = self.runtime()?;
        let pids = rt.pids(&self.id)?;
        let g = self.lock();
        let processes = pids
            .into_iter()
            .map(|pid| ProcessInfo {
                pid,
                info: g
                    .execs
                    .iter()
                    .find(|(_, p)| p.pid == pid)
                    .map(|(k, _)| typeurl::pack(&ProcessDetails { exec_id: k.clone() })),
            })
            .collect();
        Ok(api::PidsResponse { processes })
    }

    fn set_status(&self, s: Status) {
        if let Some(p) = self.lock().init.as_mut() {
            p.status = s;
        }
    }
}

fn map<T>(r: Result<T>) -> R<T> {
    r.map_err(TStatus::from)
}

/// The ttrpc adapter (the one place shim errors become statuses).
pub struct Service(pub Arc<Shim>);

impl task_ttrpc::Task for Service {
    async fn state(&self, _c: Context, req: api::StateRequest) -> R<api::StateResponse> {
        map(self
            .0
            .check_id(&req.id)
            .and_then(|()| self.0.proc_state(&req.exec_id)))
    }

    async fn create(&self, _c: Context, req: api::CreateTaskRequest) -> R<api::CreateTaskResponse> {
        map(self
            .0
            .do_create(req)
            .map(|pid| api::CreateTaskResponse { pid }))
    }

    async fn start(&self, _c: Context, req: api::StartRequest) -> R<api::StartResponse> {
        let r = self.0.do_start(&req);
        if r.is_ok() && req.exec_id.is_empty() {
            // The container runs: from here on the shim mostly sleeps. Once
            // the client has had its answer, let go of the code only setup
            // needed (see crate::memory).
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                crate::memory::trim_code_pages();
            });
        }
        map(r.map(|pid| api::StartResponse { pid }))
    }

    async fn delete(&self, _c: Context, req: api::DeleteRequest) -> R<api::DeleteResponse> {
        // A task killed just before delete may not be reaped yet: give the
        // reaper a moment.
        for _ in 0..100 {
            let running = {
                let g = self.0.lock();
                let p = if req.exec_id.is_empty() {
                    g.init.as_ref()
                } else {
                    g.execs.get(&req.exec_id)
                };
                p.is_some_and(|p| p.exit.is_some() && p.status != Status::Stopped)
            };
            if !running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        map(self.0.do_delete(&req))
    }

    async fn pids(&self, _c: Context, req: api::PidsRequest) -> R<api::PidsResponse> {
        map(self.0.check_id(&req.id).and_then(|()| self.0.do_pids()))
    }

    async fn pause(&self, _c: Context, req: api::PauseRequest) -> R<()> {
        map((|| {
            self.0.check_id(&req.id)?;
            self.0.runtime()?.pause(&self.0.id)?;
            self.0.set_status(Status::Paused);
            self.0.publisher.publish(
                "/tasks/paused",
                &ev::TaskPaused {
                    container_id: self.0.id.clone(),
                },
            );
            Ok(())
        })())
    }

    async fn resume(&self, _c: Context, req: api::ResumeRequest) -> R<()> {
        map((|| {
            self.0.check_id(&req.id)?;
            self.0.runtime()?.resume(&self.0.id)?;
            self.0.set_status(Status::Running);
            self.0.publisher.publish(
                "/tasks/resumed",
                &ev::TaskResumed {
                    container_id: self.0.id.clone(),
                },
            );
            Ok(())
        })())
    }

    async fn checkpoint(&self, _c: Context, _req: api::CheckpointTaskRequest) -> R<()> {
        Err(TStatus::unimplemented(
            "checkpoint (needs CRIU support, not built yet)",
        ))
    }

    async fn kill(&self, _c: Context, req: api::KillRequest) -> R<()> {
        map(self.0.do_kill(&req))
    }

    async fn exec(&self, _c: Context, req: api::ExecProcessRequest) -> R<()> {
        map(self.0.do_exec(req))
    }

    async fn resize_pty(&self, _c: Context, req: api::ResizePtyRequest) -> R<()> {
        map((|| {
            let g = self.0.lock();
            let p = if req.exec_id.is_empty() {
                g.init.as_ref()
            } else {
                g.execs.get(&req.exec_id)
            };
            let p =
                p.ok_or_else(|| Error::not_found(format!("process {:?} not found", req.exec_id)))?;
            let c =
                p.io.console
                    .as_ref()
                    .ok_or_else(|| Error::precondition("the process has no terminal"))?;
            crate::stdio::resize(c, req.width, req.height)
        })())
    }

    async fn close_io(&self, _c: Context, req: api::CloseIoRequest) -> R<()> {
        map((|| {
            let mut g = self.0.lock();
            let p = if req.exec_id.is_empty() {
                g.init.as_mut()
            } else {
                g.execs.get_mut(&req.exec_id)
            };
            let p =
                p.ok_or_else(|| Error::not_found(format!("process {:?} not found", req.exec_id)))?;
            if req.stdin
                && let Some(close) = p.io.close_input.take()
            {
                // notify_one keeps the wake-up if the copy is busy writing.
                close.notify_one();
            }
            Ok(())
        })())
    }

    async fn update(&self, _c: Context, req: api::UpdateTaskRequest) -> R<()> {
        map((|| {
            self.0.check_id(&req.id)?;
            let any = req
                .resources
                .ok_or_else(|| Error::invalid("update needs resources"))?;
            let res: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
                .map_err(|e| {
                    Error::invalid(format!("resources are not valid OCI Linux resources: {e}"))
                })?;
            self.0.runtime()?.update(&self.0.id, &res)
        })())
    }

    async fn wait(&self, _c: Context, req: api::WaitRequest) -> R<api::WaitResponse> {
        let mut rx = {
            let g = self.0.lock();
            let p = if req.exec_id.is_empty() {
                g.init.as_ref()
            } else {
                g.execs.get(&req.exec_id)
            };
            match p {
                Some(p) => p.exited.subscribe(),
                None => {
                    return Err(TStatus::from(Error::not_found(format!(
                        "process {:?} not found",
                        req.exec_id
                    ))));
                }
            }
        };
        let _ = rx.wait_for(|done| *done).await;
        let g = self.0.lock();
        let p = if req.exec_id.is_empty() {
            g.init.as_ref()
        } else {
            g.execs.get(&req.exec_id)
        };
        let exit = p.and_then(|p| p.exit).unwrap_or_default();
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.exited_at)),
        })
    }

    async fn stats(&self, _c: Context, req: api::StatsRequest) -> R<api::StatsResponse> {
        map((|| {
            self.0.check_id(&req.id)?;
            let m = self.0.runtime()?.stats(&self.0.id)?;
            Ok(api::StatsResponse {
                stats: Some(typeurl::pack(&m)),
            })
        })())
    }

    async fn connect(&self, _c: Context, _req: api::ConnectRequest) -> R<api::ConnectResponse> {
        let task_pid = self.0.lock().init.as_ref().map_or(0, |p| p.pid);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    async fn shutdown(&self, _c: Context, _req: api::ShutdownRequest) -> R<()> {
        let done = {
            let g = self.0.lock();
            g.init.is_none() || g.deleted
        };
        if done {
            self.0.shutdown.notify_one();
        }
        Ok(())
    }
}

/// Runs the serving shim (the daemonised child of `start`).
pub fn serve(flags: &Flags, std_l: std::os::unix::net::UnixListener) -> Result<()> {
    // SAFETY: plain prctl; we reap whatever the container leaves behind.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(Error::io(
            "become a subreaper",
            std::io::Error::last_os_error(),
        ));
    }
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(|e| Error::io("bundle", e))?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start runtime", e))?;
    rt.block_on(async {
        std_l
            .set_nonblocking(true)
            .map_err(|e| Error::io("listener", e))?;
        let listener =
            tokio::net::UnixListener::from_std(std_l).map_err(|e| Error::io("listener", e))?;
        let publisher = Publisher::start(
            std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
            flags.namespace.clone(),
        );
        let shim = Arc::new(Shim {
            ns: flags.namespace.clone(),
            id: flags.id.clone(),
            bundle,
            publisher,
            inner: Mutex::new(Inner::default()),
            shutdown: Notify::new(),
        });
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .map_err(|e| Error::io("watch SIGCHLD", e))?;
        let reaper = shim.clone();
        tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                reaper.reap();
            }
        });
        let server = berth_proto::ttrpc::Server::new()
            .register(task_ttrpc::TaskServer(Arc::new(Service(shim.clone()))));
        let s2 = shim.clone();
        let sock = flags.socket.clone();
        server
            .serve(listener, async move {
                s2.shutdown.notified().await;
                // A new shim for the same id must not find this one.
                if !sock.is_empty() {
                    let _ = std::fs::remove_file(&sock);
                }
                // Let the Shutdown reply and the last events go out.
                tokio::time::sleep(Duration::from_millis(100)).await;
            })
            .await
            .map_err(|e| Error::io("serve", e))?;
        if !flags.socket.is_empty() {
            let _ = std::fs::remove_file(Path::new(&flags.socket));
        }
        let _ = &shim.ns;
        Ok(())
    })
}
