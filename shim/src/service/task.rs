//! The `containerd.task.v2.Task` ttrpc adapter over [`Shim`], the one
//! place shim errors become statuses (with their whole chain of causes),
//! and [`serve`], the serving shim's main loop.

use super::{Inner, Shim};
use crate::bundle::Bundle;
use crate::events::Publisher;
use crate::flags::Flags;
use crate::{Error, Result};
use berth_proto::pb::containerd::task::v2 as api;
use berth_proto::pb::containerd::task::v2::task_ttrpc;
use berth_proto::time::timestamp;
use berth_proto::ttrpc::{Context, Status as TStatus};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

type R<T> = std::result::Result<T, TStatus>;

fn map<T>(r: Result<T>) -> R<T> {
    r.map_err(TStatus::from)
}

/// The ttrpc adapter.
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
            let reporting = self
                .0
                .lock()
                .procs
                .get(&req.exec_id)
                .is_ok_and(|p| p.reporting());
            if !reporting {
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
        map(self.0.set_paused(&req.id, true))
    }

    async fn resume(&self, _c: Context, req: api::ResumeRequest) -> R<()> {
        map(self.0.set_paused(&req.id, false))
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
        map(self
            .0
            .lock()
            .procs
            .get(&req.exec_id)
            .and_then(|p| p.resize(req.width, req.height)))
    }

    async fn close_io(&self, _c: Context, req: api::CloseIoRequest) -> R<()> {
        let mut g = self.0.lock();
        let p = map(g.procs.get_mut(&req.exec_id))?;
        if req.stdin {
            p.close_stdin();
        }
        Ok(())
    }

    async fn update(&self, _c: Context, req: api::UpdateTaskRequest) -> R<()> {
        map((|| {
            self.0.check_id(&req.id)?;
            let any = req
                .resources
                .ok_or_else(|| Error::invalid("update needs resources"))?;
            let res: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
                .map_err(|e| {
                    Error::caused(
                        berth_proto::errdefs::Kind::InvalidArgument,
                        "resources are not valid OCI Linux resources",
                        e,
                    )
                })?;
            self.0.runtime()?.update(&self.0.id, &res)
        })())
    }

    async fn wait(&self, _c: Context, req: api::WaitRequest) -> R<api::WaitResponse> {
        let mut rx = map(self.0.lock().procs.get(&req.exec_id).map(|p| p.subscribe()))?;
        // An error means the process was deleted meanwhile: its exit is
        // answered as unknown (zero), as before.
        if rx.wait_for(|done| *done).await.is_err() {
            eprintln!("wait for {:?}: the process went away", req.exec_id);
        }
        let exit = self
            .0
            .lock()
            .procs
            .get(&req.exec_id)
            .map(|p| p.exit_or_default())
            .unwrap_or_default();
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
                stats: Some(m.to_any()),
            })
        })())
    }

    async fn connect(&self, _c: Context, _req: api::ConnectRequest) -> R<api::ConnectResponse> {
        let task_pid = self.0.lock().procs.init().map_or(0, |p| p.pid);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    async fn shutdown(&self, _c: Context, _req: api::ShutdownRequest) -> R<()> {
        let done = {
            let g = self.0.lock();
            g.procs.init().is_none() || g.deleted
        };
        if done {
            // Before answering: the caller may start a new shim for this id
            // as soon as we reply, and that one must neither find this
            // shim's socket (and reuse a shim about to exit) nor lose its
            // own to a removal of ours that comes later.
            remove_socket(&self.0.socket);
            self.0.shutdown.notify_one();
        }
        Ok(())
    }
}

/// Removes the shim's socket so a new shim for the same id does not find
/// this one; already gone is fine.
fn remove_socket(sock: &str) {
    if sock.is_empty() {
        return;
    }
    match std::fs::remove_file(sock) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("remove {sock}: {e}");
        }
        _ => {}
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
            bundle: Bundle::new(bundle),
            publisher,
            inner: Mutex::new(Inner::default()),
            shutdown: Notify::new(),
            socket: flags.socket.clone(),
        });
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .map_err(|e| Error::io("watch SIGCHLD", e))?;
        let reaper = shim.clone();
        tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                reaper.reap();
            }
        });
        let logs = super::logs::Service(shim.clone());
        let server = berth_proto::ttrpc::Server::new()
            .register(task_ttrpc::TaskServer(Arc::new(Service(shim.clone()))))
            .register(berth_proto::pb::berth::shim::v1::logs_ttrpc::LogsServer(
                Arc::new(logs),
            ));
        let s2 = shim.clone();
        // The socket was removed by Shutdown; removing it again here could
        // take a new shim's socket of the same path. A shim that ends any
        // other way leaves a stale socket, which `start` and `delete` clear.
        server
            .serve(listener, async move {
                s2.shutdown.notified().await;
                // Let the Shutdown reply and the last events go out.
                tokio::time::sleep(Duration::from_millis(100)).await;
            })
            .await
            .map_err(|e| Error::io("serve", e))
    })
}
