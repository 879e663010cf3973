//! Tasks: running containers through per-container shims.
//!
//! Creating a task writes the bundle (`config.json` from the container's
//! spec) under `<state>/io.containerd.runtime.v2.task/<ns>/<id>`, starts the
//! runtime's shim (`… start`, which prints its ttrpc address), and calls the
//! shim's `Create`. The registry here only maps ids to shim connections: it
//! is never locked across a call to a shim. The shim is the truth about a
//! task; on restart the daemon reconnects to every live shim in parallel and
//! reports the tasks of dead ones as stopped, with their saved exit status.

use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::types::{now, timestamp};
use berth_proto::pb::containerd::events as ev;
use berth_proto::pb::containerd::task::v2 as shimapi;
use berth_proto::pb::containerd::task::v2::task_ttrpc::TaskClient;
use berth_proto::pb::containerd::v1::types::{Process, ProcessInfo, Status};
use berth_proto::ttrpc::{self, Context};
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Directory (under state) holding bundles, per namespace.
pub const BUNDLES: &str = "io.containerd.runtime.v2.task";
/// How long reconnecting to one shim may take on restart.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(3);

/// How runtimes map to shim binaries.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Explicit shim binary per runtime name (e.g. io.containerd.runc.v2 →
    /// /usr/bin/containerd-shim-runc-v2).
    pub shims: HashMap<String, PathBuf>,
}

/// One task the daemon knows of.
enum Entry {
    /// Being created (the id is taken).
    Creating,
    /// Served by a live shim.
    Live(Arc<Shim>),
    /// Its shim is gone; what it saved.
    Dead {
        pid: u32,
        exit_status: u32,
        exited_at: i64,
        bundle: PathBuf,
        binary: PathBuf,
    },
}

/// A connection to a shim.
pub struct Shim {
    client: TaskClient,
    pub bundle: PathBuf,
    binary: PathBuf,
    ns: String,
}

impl Shim {
    fn ctx(&self) -> Context {
        Context::with_namespace(&self.ns)
    }
}

/// The task manager.
pub struct Tasks {
    state: PathBuf,
    grpc_address: String,
    ttrpc_address: String,
    runtimes: RuntimeConfig,
    events: Arc<Exchange>,
    registry: Mutex<HashMap<(String, String), Entry>>,
}

fn shim_err(s: ttrpc::Status) -> Error {
    Error::new(s.kind(), s.message)
}

impl Tasks {
    pub fn new(
        state: &Path,
        grpc_address: &str,
        ttrpc_address: &str,
        runtimes: RuntimeConfig,
        events: Arc<Exchange>,
    ) -> Self {
        Self {
            state: state.to_path_buf(),
            grpc_address: grpc_address.to_string(),
            ttrpc_address: ttrpc_address.to_string(),
            runtimes,
            events,
            registry: Mutex::new(HashMap::new()),
        }
    }

    fn reg(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bundle(&self, ns: &str, id: &str) -> PathBuf {
        self.state.join(BUNDLES).join(ns).join(id)
    }

    /// The shim binary for a runtime name.
    pub fn shim_binary(&self, runtime: &str) -> Result<PathBuf> {
        if let Some(p) = self.runtimes.shims.get(runtime) {
            return Ok(p.clone());
        }
        // io.containerd.<name>.<version> → containerd-shim-<name>-<version>;
        // runc.v2 is served by our own shim unless configured otherwise.
        let parts: Vec<&str> = runtime.split('.').collect();
        if parts.len() < 2 {
            return Err(Error::invalid(format!(
                "runtime {runtime:?} is not a valid runtime name: expected io.containerd.<name>.<version>"
            )));
        }
        let (name, ver) = (parts[parts.len() - 2], parts[parts.len() - 1]);
        let name = if name == "runc" { "berth" } else { name };
        let bin = format!("containerd-shim-{name}-{ver}");
        let mut candidates = Vec::new();
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            candidates.push(dir.join(&bin));
        }
        if let Some(paths) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&paths).map(|d| d.join(&bin)));
        }
        candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
            Error::not_found(format!(
                "runtime {runtime:?}: shim binary {bin} not found next to berthd or on PATH"
            ))
        })
    }

    fn live(&self, ns: &str, id: &str) -> Result<Arc<Shim>> {
        match self.reg().get(&(ns.to_string(), id.to_string())) {
            Some(Entry::Live(s)) => Ok(s.clone()),
            Some(Entry::Creating) => Err(Error::unavailable(format!("task {id} is being created"))),
            Some(Entry::Dead { .. }) => Err(Error::precondition(format!(
                "task {id} is stopped (its shim is gone): delete it"
            ))),
            None => Err(Error::not_found(format!(
                "no running task found: task {id} not found"
            ))),
        }
    }

    /// Creates a task for a container.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        ns: &str,
        id: &str,
        runtime: &str,
        spec_json: &[u8],
        runtime_options: Option<prost_types::Any>,
        req: shimapi::CreateTaskRequest,
    ) -> Result<u32> {
        {
            let mut r = self.reg();
            let k = (ns.to_string(), id.to_string());
            if r.contains_key(&k) {
                return Err(Error::already_exists(format!("task {id}: already exists")));
            }
            r.insert(k, Entry::Creating);
        }
        let out = self
            .create_inner(ns, id, runtime, spec_json, runtime_options, req)
            .await;
        let mut r = self.reg();
        let k = (ns.to_string(), id.to_string());
        match out {
            Ok((shim, pid)) => {
                r.insert(k, Entry::Live(shim));
                Ok(pid)
            }
            Err(e) => {
                r.remove(&k);
                Err(e)
            }
        }
    }

    async fn create_inner(
        &self,
        ns: &str,
        id: &str,
        runtime: &str,
        spec_json: &[u8],
        runtime_options: Option<prost_types::Any>,
        mut req: shimapi::CreateTaskRequest,
    ) -> Result<(Arc<Shim>, u32)> {
        let binary = self.shim_binary(runtime)?;
        let bundle = self.bundle(ns, id);
        if bundle.exists() {
            // Left by a task deleted while we were down.
            let _ = std::fs::remove_dir_all(&bundle);
        }
        std::fs::create_dir_all(&bundle)
            .map_err(|e| crate::error::io_err(format!("create bundle {}", bundle.display()), e))?;
        std::fs::write(bundle.join("config.json"), spec_json)
            .map_err(|e| crate::error::io_err("write config.json", e))?;
        let shim = match self
            .start_shim(ns, id, &binary, &bundle, runtime_options.as_ref())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&bundle);
                return Err(e);
            }
        };
        req.id = id.to_string();
        req.bundle = bundle.display().to_string();
        if req.options.is_none() {
            req.options = runtime_options;
        }
        match shim.client.create(shim.ctx(), &req).await {
            Ok(r) => Ok((Arc::new(shim), r.pid)),
            Err(e) => {
                let _ = shim
                    .client
                    .shutdown(
                        shim.ctx(),
                        &shimapi::ShutdownRequest {
                            id: id.to_string(),
                            now: true,
                        },
                    )
                    .await;
                let _ = self.shim_delete(&binary, ns, id, &bundle).await;
                let _ = std::fs::remove_dir_all(&bundle);
                Err(shim_err(e))
            }
        }
    }

    async fn start_shim(
        &self,
        ns: &str,
        id: &str,
        binary: &Path,
        bundle: &Path,
        opts: Option<&prost_types::Any>,
    ) -> Result<Shim> {
        use tokio::io::AsyncWriteExt;
        let self_exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut child = tokio::process::Command::new(binary)
            .args([
                "-namespace",
                ns,
                "-address",
                &self.grpc_address,
                "-publish-binary",
                &self_exe,
                "-id",
                id,
                "start",
            ])
            .current_dir(bundle)
            .env("TTRPC_ADDRESS", &self.ttrpc_address)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| crate::error::io_err(format!("start shim {}", binary.display()), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            if let Some(o) = opts {
                let _ = stdin.write_all(&o.encode_to_vec()).await;
            }
            drop(stdin);
        }
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "shim {} did not start within 30s",
                    binary.display()
                ))
            })?
            .map_err(|e| crate::error::io_err("wait for shim start", e))?;
        if !out.status.success() {
            return Err(Error::internal(format!(
                "start shim {}: {}",
                binary.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let client = ttrpc::Client::connect(&address)
            .await
            .map_err(|e| Error::unavailable(format!("connect to shim at {address}: {e}")))?;
        let _ = std::fs::write(
            bundle.join("shim-binary-path"),
            binary.display().to_string(),
        );
        Ok(Shim {
            client: TaskClient::new(client),
            bundle: bundle.to_path_buf(),
            binary: binary.to_path_buf(),
            ns: ns.to_string(),
        })
    }

    /// Runs the shim's `delete` action (cleanup after it is gone) and
    /// returns the saved exit.
    async fn shim_delete(
        &self,
        binary: &Path,
        ns: &str,
        id: &str,
        bundle: &Path,
    ) -> Result<shimapi::DeleteResponse> {
        let out = tokio::process::Command::new(binary)
            .args([
                "-namespace",
                ns,
                "-address",
                &self.grpc_address,
                "-publish-binary",
                "berthd",
                "-id",
                id,
            ])
            .arg("-bundle")
            .arg(bundle)
            .arg("delete")
            .current_dir(bundle)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| crate::error::io_err("run shim delete", e))?;
        if !out.status.success() {
            return Err(Error::internal(format!(
                "shim delete for {id}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        shimapi::DeleteResponse::decode(out.stdout.as_slice())
            .map_err(|e| Error::internal(format!("shim delete output for {id}: {e}")))
    }

    /// Starts the task's init (empty exec id) or an exec.
    pub async fn start(&self, ns: &str, id: &str, exec_id: &str) -> Result<u32> {
        let s = self.live(ns, id)?;
        let r = s
            .client
            .start(
                s.ctx(),
                &shimapi::StartRequest {
                    id: id.into(),
                    exec_id: exec_id.into(),
                },
            )
            .await
            .map_err(shim_err)?;
        Ok(r.pid)
    }

    /// Deletes the task (it must have stopped) and its bundle; returns its exit.
    pub async fn delete(&self, ns: &str, id: &str) -> Result<shimapi::DeleteResponse> {
        let k = (ns.to_string(), id.to_string());
        let dead = match self.reg().get(&k) {
            Some(Entry::Dead {
                pid,
                exit_status,
                exited_at,
                bundle,
                binary,
            }) => Some((
                *pid,
                *exit_status,
                *exited_at,
                bundle.clone(),
                binary.clone(),
            )),
            _ => None,
        };
        if let Some((pid, status, at, bundle, binary)) = dead {
            let _ = self.shim_delete(&binary, ns, id, &bundle).await;
            let _ = std::fs::remove_dir_all(&bundle);
            self.reg().remove(&k);
            self.events.publish(
                ns,
                "/tasks/delete",
                &ev::TaskDelete {
                    container_id: id.into(),
                    pid,
                    exit_status: status,
                    exited_at: Some(timestamp(at)),
                    id: id.into(),
                },
            );
            return Ok(shimapi::DeleteResponse {
                pid,
                exit_status: status,
                exited_at: Some(timestamp(at)),
            });
        }
        let s = self.live(ns, id)?;
        let r = s
            .client
            .delete(
                s.ctx(),
                &shimapi::DeleteRequest {
                    id: id.into(),
                    exec_id: String::new(),
                },
            )
            .await
            .map_err(shim_err)?;
        let _ = s
            .client
            .shutdown(
                s.ctx(),
                &shimapi::ShutdownRequest {
                    id: id.into(),
                    now: false,
                },
            )
            .await;
        let _ = std::fs::remove_dir_all(&s.bundle);
        self.reg().remove(&k);
        Ok(r)
    }

    /// Deletes an exec process.
    pub async fn delete_process(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
    ) -> Result<shimapi::DeleteResponse> {
        let s = self.live(ns, id)?;
        s.client
            .delete(
                s.ctx(),
                &shimapi::DeleteRequest {
                    id: id.into(),
                    exec_id: exec_id.into(),
                },
            )
            .await
            .map_err(shim_err)
    }

    /// State of a process (empty exec id: the task's init).
    pub async fn get(&self, ns: &str, id: &str, exec_id: &str) -> Result<Process> {
        let dead = match self.reg().get(&(ns.to_string(), id.to_string())) {
            Some(Entry::Dead {
                pid,
                exit_status,
                exited_at,
                ..
            }) => Some((*pid, *exit_status, *exited_at)),
            _ => None,
        };
        if let Some((pid, status, at)) = dead {
            return Ok(Process {
                container_id: id.into(),
                id: id.into(),
                pid,
                status: Status::Stopped as i32,
                exit_status: status,
                exited_at: Some(timestamp(at)),
                ..Default::default()
            });
        }
        let s = self.live(ns, id)?;
        let st = s
            .client
            .state(
                s.ctx().timeout(Duration::from_secs(10)),
                &shimapi::StateRequest {
                    id: id.into(),
                    exec_id: exec_id.into(),
                },
            )
            .await
            .map_err(shim_err)?;
        Ok(Process {
            container_id: id.into(),
            id: if exec_id.is_empty() {
                id.into()
            } else {
                exec_id.into()
            },
            pid: st.pid,
            status: st.status,
            stdin: st.stdin,
            stdout: st.stdout,
            stderr: st.stderr,
            terminal: st.terminal,
            exit_status: st.exit_status,
            exited_at: st.exited_at,
        })
    }

    /// Every task of a namespace.
    pub async fn list(&self, ns: &str) -> Result<Vec<Process>> {
        let ids: Vec<String> = self
            .reg()
            .iter()
            .filter(|((n, _), e)| n == ns && !matches!(e, Entry::Creating))
            .map(|((_, id), _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in ids {
            match self.get(ns, &id, "").await {
                Ok(p) => out.push(p),
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!("task {ns}/{id}: {e}"),
            }
        }
        out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        Ok(out)
    }

    /// Signals a process (or with `all`, every process of the task).
    pub async fn kill(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<()> {
        let s = self.live(ns, id)?;
        s.client
            .kill(
                s.ctx(),
                &shimapi::KillRequest {
                    id: id.into(),
                    exec_id: exec_id.into(),
                    signal,
                    all,
                },
            )
            .await
            .map_err(shim_err)
    }

    /// Adds an exec process (started by `start`).
    pub async fn exec(&self, ns: &str, id: &str, req: shimapi::ExecProcessRequest) -> Result<()> {
        let s = self.live(ns, id)?;
        s.client.exec(s.ctx(), &req).await.map_err(shim_err)
    }

    pub async fn resize_pty(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<()> {
        let s = self.live(ns, id)?;
        s.client
            .resize_pty(
                s.ctx(),
                &shimapi::ResizePtyRequest {
                    id: id.into(),
                    exec_id: exec_id.into(),
                    width,
                    height,
                },
            )
            .await
            .map_err(shim_err)
    }

    pub async fn close_io(&self, ns: &str, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        let s = self.live(ns, id)?;
        s.client
            .close_io(
                s.ctx(),
                &shimapi::CloseIoRequest {
                    id: id.into(),
                    exec_id: exec_id.into(),
                    stdin,
                },
            )
            .await
            .map_err(shim_err)
    }

    pub async fn pause(&self, ns: &str, id: &str) -> Result<()> {
        let s = self.live(ns, id)?;
        s.client
            .pause(s.ctx(), &shimapi::PauseRequest { id: id.into() })
            .await
            .map_err(shim_err)
    }

    pub async fn resume(&self, ns: &str, id: &str) -> Result<()> {
        let s = self.live(ns, id)?;
        s.client
            .resume(s.ctx(), &shimapi::ResumeRequest { id: id.into() })
            .await
            .map_err(shim_err)
    }

    /// Processes of the task, with exec ids where known.
    pub async fn pids(&self, ns: &str, id: &str) -> Result<Vec<ProcessInfo>> {
        let s = self.live(ns, id)?;
        Ok(s.client
            .pids(s.ctx(), &shimapi::PidsRequest { id: id.into() })
            .await
            .map_err(shim_err)?
            .processes)
    }

    pub async fn update(
        &self,
        ns: &str,
        id: &str,
        resources: Option<prost_types::Any>,
        annotations: HashMap<String, String>,
    ) -> Result<()> {
        let s = self.live(ns, id)?;
        s.client
            .update(
                s.ctx(),
                &shimapi::UpdateTaskRequest {
                    id: id.into(),
                    resources,
                    annotations,
                },
            )
            .await
            .map_err(shim_err)
    }

    /// Resource statistics of a task.
    pub async fn stats(&self, ns: &str, id: &str) -> Result<Option<prost_types::Any>> {
        let s = self.live(ns, id)?;
        Ok(s.client
            .stats(s.ctx(), &shimapi::StatsRequest { id: id.into() })
            .await
            .map_err(shim_err)?
            .stats)
    }

    /// Waits for a process to exit.
    pub async fn wait(&self, ns: &str, id: &str, exec_id: &str) -> Result<shimapi::WaitResponse> {
        let dead = match self.reg().get(&(ns.to_string(), id.to_string())) {
            Some(Entry::Dead {
                exit_status,
                exited_at,
                ..
            }) if exec_id.is_empty() => Some((*exit_status, *exited_at)),
            _ => None,
        };
        if let Some((status, at)) = dead {
            return Ok(shimapi::WaitResponse {
                exit_status: status,
                exited_at: Some(timestamp(at)),
            });
        }
        let s = self.live(ns, id)?;
        match s
            .client
            .wait(
                s.ctx(),
                &shimapi::WaitRequest {
                    id: id.into(),
                    exec_id: exec_id.into(),
                },
            )
            .await
        {
            Ok(r) => Ok(r),
            // The shim died while we waited: report what it saved.
            Err(e) if e.code == ttrpc::Code::Unavailable && exec_id.is_empty() => {
                self.mark_dead(ns, id).await;
                Box::pin(self.wait(ns, id, exec_id)).await
            }
            Err(e) => Err(shim_err(e)),
        }
    }

    /// Ids of every task (for metrics filters).
    pub fn ids(&self, ns: &str) -> Vec<String> {
        self.reg()
            .iter()
            .filter(|((n, _), e)| n == ns && matches!(e, Entry::Live(_)))
            .map(|((_, id), _)| id.clone())
            .collect()
    }

    /// Namespaces with tasks.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.reg().keys().map(|(n, _)| n.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// A shim went away: clean up after it and remember the exit.
    async fn mark_dead(&self, ns: &str, id: &str) {
        let shim = match self.reg().get(&(ns.to_string(), id.to_string())) {
            Some(Entry::Live(s)) => s.clone(),
            _ => return,
        };
        let (pid, status, at) = self.cleanup_dead(&shim.binary, ns, id, &shim.bundle).await;
        self.reg().insert(
            (ns.to_string(), id.to_string()),
            Entry::Dead {
                pid,
                exit_status: status,
                exited_at: at,
                bundle: shim.bundle.clone(),
                binary: shim.binary.clone(),
            },
        );
        self.events.publish(
            ns,
            "/tasks/exit",
            &ev::TaskExit {
                container_id: id.into(),
                id: id.into(),
                pid,
                exit_status: status,
                exited_at: Some(timestamp(at)),
            },
        );
    }

    /// Watches live shims; a closed connection means the shim died.
    pub fn watch(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let gone: Vec<(String, String)> = this
                    .reg()
                    .iter()
                    .filter_map(|(k, e)| match e {
                        Entry::Live(s) if s.client.inner().is_closed() => Some(k.clone()),
                        _ => None,
                    })
                    .collect();
                for (ns, id) in gone {
                    // A deliberate shutdown removes the entry first.
                    tracing::warn!("shim of task {ns}/{id} is gone; cleaning up");
                    this.mark_dead(&ns, &id).await;
                }
            }
        });
    }

    /// Reconnects to the shims of a previous run, in parallel, each within a
    /// deadline; tasks whose shim is gone are cleaned up and kept as stopped.
    pub async fn restore(self: &Arc<Self>) {
        let root = self.state.join(BUNDLES);
        let Ok(nss) = std::fs::read_dir(&root) else {
            return;
        };
        let mut jobs = Vec::new();
        for ns in nss.flatten() {
            let ns_name = ns.file_name().to_string_lossy().to_string();
            let Ok(ids) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for e in ids.flatten() {
                let id = e.file_name().to_string_lossy().to_string();
                let this = self.clone();
                let ns_name = ns_name.clone();
                let bundle = e.path();
                jobs.push(tokio::spawn(async move {
                    this.restore_one(&ns_name, &id, &bundle).await
                }));
            }
        }
        let n = jobs.len();
        for j in jobs {
            let _ = j.await;
        }
        if n > 0 {
            tracing::info!(tasks = n, "restored tasks from a previous run");
        }
    }

    async fn restore_one(&self, ns: &str, id: &str, bundle: &Path) {
        let binary = std::fs::read_to_string(bundle.join("shim-binary-path"))
            .map(|s| PathBuf::from(s.trim()))
            .or_else(|_| self.shim_binary("io.containerd.berth.v2"))
            .unwrap_or_default();
        let address = std::fs::read_to_string(bundle.join("address")).unwrap_or_default();
        let connect = async {
            let c = ttrpc::Client::connect(address.trim()).await.ok()?;
            let client = TaskClient::new(c);
            client
                .connect(
                    Context::with_namespace(ns),
                    &shimapi::ConnectRequest { id: id.into() },
                )
                .await
                .ok()?;
            Some(client)
        };
        let k = (ns.to_string(), id.to_string());
        match tokio::time::timeout(RECONNECT_DEADLINE, connect).await {
            Ok(Some(client)) => {
                let shim = Shim {
                    client,
                    bundle: bundle.to_path_buf(),
                    binary,
                    ns: ns.into(),
                };
                self.reg().insert(k, Entry::Live(Arc::new(shim)));
            }
            _ => {
                let (pid, status, at) = self.cleanup_dead(&binary, ns, id, bundle).await;
                self.reg().insert(
                    k,
                    Entry::Dead {
                        pid,
                        exit_status: status,
                        exited_at: at,
                        bundle: bundle.to_path_buf(),
                        binary,
                    },
                );
            }
        }
    }

    /// Cleans up after a dead shim; returns the saved exit.
    async fn cleanup_dead(
        &self,
        binary: &Path,
        ns: &str,
        id: &str,
        bundle: &Path,
    ) -> (u32, u32, i64) {
        match self.shim_delete(binary, ns, id, bundle).await {
            Ok(d) => (
                d.pid,
                d.exit_status,
                d.exited_at
                    .as_ref()
                    .map_or_else(now, crate::types::from_timestamp),
            ),
            Err(e) => {
                tracing::warn!("cleanup after shim of {ns}/{id}: {e}");
                (0, 128 + 9, now())
            }
        }
    }
}
