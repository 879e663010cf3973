//! [`TaskRuntime`] over containerd shim v2 processes: each task is served
//! by its own shim, created with the shim binary's `start`, driven over
//! ttrpc and cleaned up with the binary's `delete` once it is gone.

use super::client::ShimClient;
use super::contract::{CreateTask, Created, Exit, Found, TaskRuntime};
use super::manager::{ShimManager, remove_bundle};
use crate::error::{Error, Result};
use crate::types::now;
use berth_proto::pb::containerd::task::v2 as shimapi;
use berth_proto::pb::containerd::v1::types::ProcessInfo;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// How long a State call may take (listing must not hang on one shim).
const STATE_DEADLINE: Duration = Duration::from_secs(10);
/// The exit reported when a dead shim saved none: killed (128 + SIGKILL).
const KILLED: u32 = 128 + 9;

/// The shim-backed runtime.
pub struct ShimRuntime {
    manager: ShimManager,
}

/// One task's shim.
pub struct ShimTask {
    ns: String,
    id: String,
    bundle: PathBuf,
    binary: PathBuf,
    /// `None` for a shim found dead on restart.
    client: Option<ShimClient>,
}

impl ShimTask {
    fn client(&self) -> Result<&ShimClient> {
        self.client
            .as_ref()
            .ok_or_else(|| Error::unavailable(format!("the shim of task {} is gone", self.id)))
    }

    /// Calls the shim's task service.
    async fn call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp> {
        self.client()?.call(method, req).await
    }
}

impl ShimRuntime {
    pub fn new(manager: ShimManager) -> Self {
        Self { manager }
    }

    async fn create_shim(&self, req: CreateTask) -> Result<Created<ShimTask>> {
        let CreateTask {
            ns,
            id,
            runtime,
            spec,
            runtime_options,
            request: mut create,
        } = req;
        let binary = self.manager.shim_binary(&runtime)?;
        let bundle = self.manager.write_bundle(&ns, &id, &spec)?;
        let client = match self
            .manager
            .start(&ns, &id, &binary, &bundle, runtime_options.as_ref())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                remove_bundle(&bundle);
                return Err(e);
            }
        };
        create.id.clone_from(&id);
        create.bundle = bundle.display().to_string();
        if create.options.is_none() {
            create.options = runtime_options;
        }
        let task = ShimTask {
            ns,
            id,
            bundle,
            binary,
            client: Some(client),
        };
        match task
            .call::<_, shimapi::CreateTaskResponse>("Create", &create)
            .await
        {
            Ok(r) => Ok(Created { task, pid: r.pid }),
            Err(e) => {
                // Leave nothing: the shim, whatever it mounted, the bundle.
                self.stop_shim(&task, true).await;
                let _ = self
                    .manager
                    .delete(&task.binary, &task.ns, &task.id, &task.bundle)
                    .await;
                remove_bundle(&task.bundle);
                Err(e)
            }
        }
    }

    async fn stop_shim(&self, task: &ShimTask, now: bool) {
        let req = shimapi::ShutdownRequest {
            id: task.id.clone(),
            now,
        };
        let _ = task.call::<_, ()>("Shutdown", &req).await;
    }
}

impl TaskRuntime for ShimRuntime {
    type Task = ShimTask;

    async fn create(&self, req: CreateTask) -> Result<Created<ShimTask>> {
        self.create_shim(req).await
    }

    async fn start(&self, t: &ShimTask, exec_id: &str) -> Result<u32> {
        let req = shimapi::StartRequest {
            id: t.id.clone(),
            exec_id: exec_id.into(),
        };
        let r: shimapi::StartResponse = t.call("Start", &req).await?;
        Ok(r.pid)
    }

    async fn state(&self, t: &ShimTask, exec_id: &str) -> Result<shimapi::StateResponse> {
        let req = shimapi::StateRequest {
            id: t.id.clone(),
            exec_id: exec_id.into(),
        };
        t.client()?.call_within(STATE_DEADLINE, "State", &req).await
    }

    async fn kill(&self, t: &ShimTask, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let req = shimapi::KillRequest {
            id: t.id.clone(),
            exec_id: exec_id.into(),
            signal,
            all,
        };
        t.call("Kill", &req).await
    }

    async fn exec(&self, t: &ShimTask, req: shimapi::ExecProcessRequest) -> Result<()> {
        t.call("Exec", &req).await
    }

    async fn resize_pty(&self, t: &ShimTask, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let req = shimapi::ResizePtyRequest {
            id: t.id.clone(),
            exec_id: exec_id.into(),
            width,
            height,
        };
        t.call("ResizePty", &req).await
    }

    async fn close_io(&self, t: &ShimTask, exec_id: &str, stdin: bool) -> Result<()> {
        let req = shimapi::CloseIoRequest {
            id: t.id.clone(),
            exec_id: exec_id.into(),
            stdin,
        };
        t.call("CloseIO", &req).await
    }

    async fn pause(&self, t: &ShimTask) -> Result<()> {
        t.call("Pause", &shimapi::PauseRequest { id: t.id.clone() })
            .await
    }

    async fn resume(&self, t: &ShimTask) -> Result<()> {
        t.call("Resume", &shimapi::ResumeRequest { id: t.id.clone() })
            .await
    }

    async fn pids(&self, t: &ShimTask) -> Result<Vec<ProcessInfo>> {
        let r: shimapi::PidsResponse = t
            .call("Pids", &shimapi::PidsRequest { id: t.id.clone() })
            .await?;
        Ok(r.processes)
    }

    async fn update(
        &self,
        t: &ShimTask,
        resources: Option<prost_types::Any>,
        annotations: HashMap<String, String>,
    ) -> Result<()> {
        let req = shimapi::UpdateTaskRequest {
            id: t.id.clone(),
            resources,
            annotations,
        };
        t.call("Update", &req).await
    }

    async fn reopen_log(&self, t: &ShimTask) -> Result<()> {
        use berth_proto::pb::berth::shim::v1::{ReopenLogRequest, logs_ttrpc::SERVICE};
        let req = ReopenLogRequest { id: t.id.clone() };
        let r: Result<()> = t.client()?.call_service(SERVICE, "ReopenLog", &req).await;
        r.map_err(|e| {
            if e.kind() == berth_proto::errdefs::Kind::Unimplemented {
                Error::unimplemented(format!(
                    "the shim of task {} ({}) cannot reopen logs: {}",
                    t.id,
                    t.binary.display(),
                    e.message()
                ))
            } else {
                e
            }
        })
    }

    async fn stats(&self, t: &ShimTask) -> Result<Option<prost_types::Any>> {
        let r: shimapi::StatsResponse = t
            .call("Stats", &shimapi::StatsRequest { id: t.id.clone() })
            .await?;
        Ok(r.stats)
    }

    async fn wait(&self, t: &ShimTask, exec_id: &str) -> Result<shimapi::WaitResponse> {
        let req = shimapi::WaitRequest {
            id: t.id.clone(),
            exec_id: exec_id.into(),
        };
        t.call("Wait", &req).await
    }

    async fn delete(&self, t: &ShimTask, exec_id: &str) -> Result<shimapi::DeleteResponse> {
        let req = shimapi::DeleteRequest {
            id: t.id.clone(),
            exec_id: exec_id.into(),
        };
        t.call("Delete", &req).await
    }

    async fn shutdown(&self, t: &ShimTask) {
        self.stop_shim(t, false).await;
        remove_bundle(&t.bundle);
    }

    fn is_gone(&self, t: &ShimTask) -> bool {
        t.client.as_ref().is_none_or(ShimClient::is_closed)
    }

    async fn cleanup(&self, t: &ShimTask) -> Exit {
        match self
            .manager
            .delete(&t.binary, &t.ns, &t.id, &t.bundle)
            .await
        {
            Ok(d) => Exit {
                pid: d.pid,
                status: d.exit_status,
                at: d
                    .exited_at
                    .as_ref()
                    .map_or_else(now, crate::types::from_timestamp),
            },
            Err(e) => {
                tracing::warn!("cleanup after shim of {}/{}: {e}", t.ns, t.id);
                Exit {
                    pid: 0,
                    status: KILLED,
                    at: now(),
                }
            }
        }
    }

    async fn remove(&self, t: &ShimTask) {
        let _ = self
            .manager
            .delete(&t.binary, &t.ns, &t.id, &t.bundle)
            .await;
        remove_bundle(&t.bundle);
    }

    async fn restore(&self) -> Vec<Found<ShimTask>> {
        let jobs = self
            .manager
            .scan()
            .into_iter()
            .map(|(ns, id, bundle)| async move {
                let binary = self.manager.recorded_binary(&bundle);
                let client = self.manager.reconnect(&ns, &id, &bundle).await;
                Found {
                    alive: client.is_some(),
                    task: ShimTask {
                        ns: ns.clone(),
                        id: id.clone(),
                        bundle,
                        binary,
                        client,
                    },
                    ns,
                    id,
                }
            });
        futures::future::join_all(jobs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RuntimeConfig;
    use berth_proto::errdefs::Kind;

    fn runtime(dir: &tempfile::TempDir, shim: &str) -> ShimRuntime {
        let runtimes = RuntimeConfig {
            shims: [("io.containerd.test.v1".into(), shim.into())].into(),
        };
        ShimRuntime::new(ShimManager::new(dir.path(), "", "", runtimes))
    }

    fn create(id: &str) -> CreateTask {
        CreateTask {
            ns: "ns".into(),
            id: id.into(),
            runtime: "io.containerd.test.v1".into(),
            spec: b"{}".to_vec(),
            runtime_options: None,
            request: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_shim_that_fails_to_start_leaves_no_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir, "/bin/false");
        let err = rt.create(create("c1")).await.err().expect("create fails");
        assert_eq!(err.kind(), Kind::Internal);
        assert!(err.message().starts_with("start shim /bin/false"), "{err}");
        assert!(!rt.manager.bundle("ns", "c1").exists());
        let err = runtime(&dir, "/nonexistent/shim")
            .create(create("c1"))
            .await
            .err()
            .expect("create fails");
        assert_eq!(err.kind(), Kind::NotFound);
        assert!(!rt.manager.bundle("ns", "c1").exists());
    }

    #[tokio::test]
    async fn reopen_log_on_a_shim_without_berths_logs_service_is_unimplemented() {
        // A shim serving no Logs service, as containerd's do not.
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("shim.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(berth_proto::ttrpc::Server::new().serve(listener, async {
            let _ = stopped.await;
        }));
        let address = format!("unix://{}", sock.display());
        let task = ShimTask {
            ns: "ns".into(),
            id: "c1".into(),
            bundle: dir.path().join("bundle"),
            binary: "/usr/bin/containerd-shim-runc-v2".into(),
            client: Some(ShimClient::connect(&address, "ns").await.unwrap()),
        };
        let err = runtime(&dir, "/bin/false")
            .reopen_log(&task)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Kind::Unimplemented);
        assert!(
            err.message().starts_with(
                "the shim of task c1 (/usr/bin/containerd-shim-runc-v2) cannot reopen logs"
            ),
            "{err}"
        );
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_dead_shim_is_gone_unavailable_and_cleaned_up_as_killed() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir, "/bin/false");
        let b = rt.manager.write_bundle("ns", "c1", b"{}").unwrap();
        std::fs::write(b.join("shim-binary-path"), "/bin/false").unwrap();
        let found = rt.restore().await;
        assert_eq!(found.len(), 1);
        let f = &found[0];
        assert_eq!((f.ns.as_str(), f.id.as_str(), f.alive), ("ns", "c1", false));
        assert!(rt.is_gone(&f.task));
        let err = rt.start(&f.task, "").await.unwrap_err();
        assert_eq!(err.kind(), Kind::Unavailable);
        // The shim's delete fails: the task counts as killed.
        let exit = rt.cleanup(&f.task).await;
        assert_eq!((exit.pid, exit.status), (0, KILLED));
        rt.remove(&f.task).await;
        assert!(!b.exists());
    }
}
