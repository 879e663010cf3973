//! The task service: tasks of containers, over any [`TaskRuntime`].
//!
//! It owns what is not the runtime's business: finding the container a
//! task runs and choosing its runtime, the registry of tasks (an id is
//! taken while its task is created), the exits of tasks whose runtime died
//! (while the daemon was down, or since), the events the daemon publishes
//! for them, and reconciliation with the runtime after a restart. The
//! registry is never locked across a call to the runtime.

use super::contract::{CreateTask, Exit, TaskRuntime};
use crate::containers::Containers;
use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::logs::LogStore;
use crate::network::TaskNetworks;
use crate::types::{now, timestamp};
use berth_proto::errdefs::Kind;
use berth_proto::filters::{Adaptor, Filter};
use berth_proto::pb::containerd::events as ev;
use berth_proto::pb::containerd::task::v2 as shimapi;
use berth_proto::pb::containerd::v1::types::{Process, ProcessInfo, Status};
use berth_proto::services::tasks::v1::CreateTaskRequest;
use berth_proto::types::Metric;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::OnceCell;

/// How often the watcher looks for runtimes that died.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

type Key = (String, String);

fn key(ns: &str, id: &str) -> Key {
    (ns.to_string(), id.to_string())
}

/// A task's runtime handle, and its exit once the runtime is gone.
struct Handle<T> {
    task: T,
    /// Set by the one cleanup after the runtime died; concurrent noticers
    /// (the watcher, a Wait) share it instead of cleaning up twice.
    reaped: OnceCell<Exit>,
}

/// One task the daemon knows of.
enum Entry<T> {
    /// Being created (the id is taken).
    Creating,
    /// Served by a live runtime.
    Live(Arc<Handle<T>>),
    /// Its runtime is gone; what it saved. Kept until deleted.
    Dead(Arc<Handle<T>>, Exit),
}

/// The task manager of a daemon.
pub struct TaskService<R: TaskRuntime> {
    runtime: R,
    containers: Arc<Containers>,
    events: Arc<Exchange>,
    registry: Mutex<HashMap<Key, Entry<R::Task>>>,
    /// Networking of tasks whose containers ask for it (none in unit
    /// tests of the registry).
    networks: Option<Arc<TaskNetworks>>,
    /// A teardown failed: the watcher reconciles networking again.
    retry_networks: AtomicBool,
    /// Where tasks of containers that ask for it log (json-file).
    logs: Option<Arc<LogStore>>,
}

/// What Tasks.List filters see of a task.
struct Id<'a>(&'a str);

impl Adaptor for Id<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path.first()?.as_str(), path.len()) {
            ("id" | "container_id", 1) => Some(self.0.to_string()),
            _ => None,
        }
    }
}

/// A stopped init process as Tasks.Get reports it.
fn stopped(id: &str, exit: Exit) -> Process {
    Process {
        container_id: id.into(),
        id: id.into(),
        pid: exit.pid,
        status: Status::Stopped as i32,
        exit_status: exit.status,
        exited_at: Some(timestamp(exit.at)),
        ..Default::default()
    }
}

impl<R: TaskRuntime> TaskService<R> {
    /// A service with no tasks; [`restore`](Self::restore) finds those of a
    /// previous run.
    pub fn new(runtime: R, containers: Arc<Containers>, events: Arc<Exchange>) -> Self {
        Self {
            runtime,
            containers,
            events,
            registry: Mutex::new(HashMap::new()),
            networks: None,
            retry_networks: AtomicBool::new(false),
            logs: None,
        }
    }

    /// Gives tasks a json-file log where [`LogStore::stdio`] says.
    pub fn with_logs(mut self, logs: Arc<LogStore>) -> Self {
        self.logs = Some(logs);
        self
    }

    /// Every task the daemon knows of (namespace, id).
    pub fn keys(&self) -> Vec<(String, String)> {
        self.reg().keys().cloned().collect()
    }

    /// Sets up and tears down the networks tasks' containers ask for.
    pub fn with_networks(mut self, networks: Arc<TaskNetworks>) -> Self {
        self.networks = Some(networks);
        self
    }

    /// Tears down a task's networking; a failure is logged and retried by
    /// the watcher (the task itself is gone either way).
    async fn detach(&self, ns: &str, id: &str) {
        if let Some(n) = &self.networks
            && let Err(e) = n.detach_task(ns, id).await
        {
            tracing::warn!("task {ns}/{id}: {}; retrying later", e.chain());
            self.retry_networks.store(true, Ordering::Relaxed);
        }
    }

    /// Tears down the networking of every task not in the registry.
    async fn reconcile_networks(&self) {
        let Some(n) = &self.networks else {
            return;
        };
        let live: std::collections::HashSet<Key> = self
            .reg()
            .iter()
            .filter(|(_, e)| !matches!(e, Entry::Dead(..)))
            .map(|(k, _)| k.clone())
            .collect();
        match n.reconcile(&live).await {
            Ok(0) => {}
            Ok(k) => tracing::info!(containers = k, "tore down networking left behind"),
            Err(e) => {
                tracing::warn!("reconcile networking: {}; retrying later", e.chain());
                self.retry_networks.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The runtime tasks run on.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    fn reg(&self) -> MutexGuard<'_, HashMap<Key, Entry<R::Task>>> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handle of a task with a live runtime.
    fn live(&self, ns: &str, id: &str) -> Result<Arc<Handle<R::Task>>> {
        match self.reg().get(&key(ns, id)) {
            Some(Entry::Live(h)) => Ok(h.clone()),
            Some(Entry::Creating) => Err(Error::unavailable(format!("task {id} is being created"))),
            Some(Entry::Dead(..)) => Err(Error::precondition(format!(
                "task {id} is stopped (its shim is gone): delete it"
            ))),
            None => Err(Error::not_found(format!(
                "no running task found: task {id} not found"
            ))),
        }
    }

    /// The saved exit of a task whose runtime is gone.
    fn dead_exit(&self, ns: &str, id: &str) -> Option<Exit> {
        match self.reg().get(&key(ns, id)) {
            Some(Entry::Dead(_, exit)) => Some(*exit),
            _ => None,
        }
    }

    /// Creates the task of a container; returns the init's pid.
    pub async fn create(&self, ns: &str, r: CreateTaskRequest) -> Result<u32> {
        if r.checkpoint.is_some() {
            return Err(Error::unimplemented(
                "restoring from a checkpoint is not supported yet",
            ));
        }
        let c = self.containers.get(ns, &r.container_id)?;
        let spec: prost_types::Any = c
            .record
            .spec
            .clone()
            .ok_or_else(|| Error::precondition(format!("container {} has no spec", c.id)))?
            .into();
        let runtime = if r.runtime_path.is_empty() {
            c.record.runtime.clone()
        } else {
            r.runtime_path
        };
        let (stdout, stderr) = match &self.logs {
            Some(l) => l.stdio(ns, &c, r.terminal, r.stdout, r.stderr)?,
            None => (r.stdout, r.stderr),
        };
        // As in containerd, the rootfs is what the request names; none means
        // the spec's root.path as is (dockerd mounts its own layers), even if
        // the container has a snapshot: the client fetches mounts itself.
        let request = shimapi::CreateTaskRequest {
            id: c.id.clone(),
            bundle: String::new(),
            rootfs: r.rootfs,
            terminal: r.terminal,
            stdin: r.stdin,
            stdout,
            stderr,
            checkpoint: String::new(),
            parent_checkpoint: String::new(),
            options: r.options,
        };
        let k = key(ns, &c.id);
        {
            let mut reg = self.reg();
            if reg.contains_key(&k) {
                return Err(Error::already_exists(format!(
                    "task {}: already exists",
                    c.id
                )));
            }
            reg.insert(k.clone(), Entry::Creating);
        }
        // The bundle's spec: pointed at the network namespace and files
        // when the container asks for networks.
        let spec = match &self.networks {
            Some(n) => match n.attach(ns, &c.id, &c.record.labels, spec.value).await {
                Ok(s) => s,
                Err(e) => {
                    self.reg().remove(&k);
                    return Err(e);
                }
            },
            None => spec.value,
        };
        let created = self
            .runtime
            .create(CreateTask {
                ns: ns.to_string(),
                id: c.id.clone(),
                runtime,
                spec,
                runtime_options: c.record.runtime_options.clone().map(Into::into),
                request,
            })
            .await;
        if created.is_err() {
            self.detach(ns, &c.id).await;
        }
        let mut reg = self.reg();
        match created {
            Ok(created) => {
                let h = Handle {
                    task: created.task,
                    reaped: OnceCell::new(),
                };
                reg.insert(k, Entry::Live(Arc::new(h)));
                Ok(created.pid)
            }
            Err(e) => {
                reg.remove(&k);
                Err(e)
            }
        }
    }

    /// Starts the task's init (empty exec id) or an exec.
    pub async fn start(&self, ns: &str, id: &str, exec_id: &str) -> Result<u32> {
        let h = self.live(ns, id)?;
        self.runtime.start(&h.task, exec_id).await
    }

    /// Deletes the task (its init must have exited) and its bundle; returns
    /// its exit. A task whose runtime died is forgotten with its saved exit.
    pub async fn delete(&self, ns: &str, id: &str) -> Result<shimapi::DeleteResponse> {
        let k = key(ns, id);
        // Normally torn down when the shim died; repeated in case that
        // failed. While the entry stays, no new task can take the id.
        if self.dead_exit(ns, id).is_some() {
            self.detach(ns, id).await;
        }
        let dead = {
            let mut reg = self.reg();
            match reg.get(&k) {
                Some(Entry::Dead(..)) => match reg.remove(&k) {
                    Some(Entry::Dead(h, exit)) => Some((h, exit)),
                    _ => None,
                },
                _ => None,
            }
        };
        if let Some((h, exit)) = dead {
            self.runtime.remove(&h.task).await;
            // A live shim publishes its own TaskDelete; a dead one cannot.
            self.events.publish(
                ns,
                "/tasks/delete",
                &ev::TaskDelete {
                    container_id: id.into(),
                    pid: exit.pid,
                    exit_status: exit.status,
                    exited_at: Some(timestamp(exit.at)),
                    id: id.into(),
                },
            );
            return Ok(shimapi::DeleteResponse {
                pid: exit.pid,
                exit_status: exit.status,
                exited_at: Some(timestamp(exit.at)),
            });
        }
        let h = self.live(ns, id)?;
        let r = self.runtime.delete(&h.task, "").await?;
        // Before the id is free again, so a new task of it cannot race.
        self.detach(ns, id).await;
        // Forget the task before stopping its runtime, so that the watcher
        // does not take the shutdown for a death.
        {
            let mut reg = self.reg();
            if matches!(reg.get(&k), Some(Entry::Live(cur)) if Arc::ptr_eq(cur, &h)) {
                reg.remove(&k);
            }
        }
        self.runtime.shutdown(&h.task).await;
        Ok(r)
    }

    /// Deletes an exec process.
    pub async fn delete_process(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
    ) -> Result<shimapi::DeleteResponse> {
        let h = self.live(ns, id)?;
        self.runtime.delete(&h.task, exec_id).await
    }

    /// State of a process (empty exec id: the task's init).
    pub async fn get(&self, ns: &str, id: &str, exec_id: &str) -> Result<Process> {
        if let Some(exit) = self.dead_exit(ns, id) {
            return Ok(stopped(id, exit));
        }
        let h = self.live(ns, id)?;
        let st = self.runtime.state(&h.task, exec_id).await?;
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

    /// The tasks of a namespace that `filter` matches, by id. Tasks being
    /// created are not listed yet.
    pub async fn list(&self, ns: &str, filter: &Filter) -> Result<Vec<Process>> {
        let mut ids: Vec<String> = self
            .reg()
            .iter()
            .filter(|((n, id), e)| {
                n == ns && !matches!(e, Entry::Creating) && filter.matches(&Id(id))
            })
            .map(|((_, id), _)| id.clone())
            .collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            match self.get(ns, &id, "").await {
                Ok(p) => out.push(p),
                // Deleted meanwhile.
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!("task {ns}/{id}: {e}"),
            }
        }
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
        let h = self.live(ns, id)?;
        self.runtime.kill(&h.task, exec_id, signal, all).await
    }

    /// Adds an exec process (started by `start`).
    pub async fn exec(&self, ns: &str, id: &str, req: shimapi::ExecProcessRequest) -> Result<()> {
        if req.exec_id.is_empty() {
            return Err(Error::invalid("exec id must be set"));
        }
        let h = self.live(ns, id)?;
        self.runtime.exec(&h.task, req).await
    }

    pub async fn resize_pty(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<()> {
        let h = self.live(ns, id)?;
        self.runtime
            .resize_pty(&h.task, exec_id, width, height)
            .await
    }

    pub async fn close_io(&self, ns: &str, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        let h = self.live(ns, id)?;
        self.runtime.close_io(&h.task, exec_id, stdin).await
    }

    pub async fn pause(&self, ns: &str, id: &str) -> Result<()> {
        let h = self.live(ns, id)?;
        self.runtime.pause(&h.task).await
    }

    pub async fn resume(&self, ns: &str, id: &str) -> Result<()> {
        let h = self.live(ns, id)?;
        self.runtime.resume(&h.task).await
    }

    /// Processes of the task, with exec ids where known.
    pub async fn pids(&self, ns: &str, id: &str) -> Result<Vec<ProcessInfo>> {
        let h = self.live(ns, id)?;
        self.runtime.pids(&h.task).await
    }

    pub async fn update(
        &self,
        ns: &str,
        id: &str,
        resources: Option<prost_types::Any>,
        annotations: HashMap<String, String>,
    ) -> Result<()> {
        let h = self.live(ns, id)?;
        self.runtime.update(&h.task, resources, annotations).await
    }

    /// Waits for a process to exit. If the task's runtime dies meanwhile,
    /// the init's wait ends with the exit the runtime saved.
    pub async fn wait(&self, ns: &str, id: &str, exec_id: &str) -> Result<shimapi::WaitResponse> {
        if exec_id.is_empty()
            && let Some(exit) = self.dead_exit(ns, id)
        {
            return Ok(shimapi::WaitResponse {
                exit_status: exit.status,
                exited_at: Some(timestamp(exit.at)),
            });
        }
        let h = self.live(ns, id)?;
        match self.runtime.wait(&h.task, exec_id).await {
            Err(e) if e.kind() == Kind::Unavailable && exec_id.is_empty() => {
                self.mark_dead(ns, id, &h).await;
                Box::pin(self.wait(ns, id, exec_id)).await
            }
            r => r,
        }
    }

    /// A task's runtime went away: clean up after it, keep the task as
    /// stopped with the exit it saved and publish TaskExit, once.
    async fn mark_dead(&self, ns: &str, id: &str, h: &Arc<Handle<R::Task>>) {
        let exit = *h
            .reaped
            .get_or_init(|| async {
                let exit = self.runtime.cleanup(&h.task).await;
                self.detach(ns, id).await;
                exit
            })
            .await;
        let k = key(ns, id);
        {
            let mut reg = self.reg();
            // Deleted meanwhile, or another noticer got here first.
            if !matches!(reg.get(&k), Some(Entry::Live(cur)) if Arc::ptr_eq(cur, h)) {
                return;
            }
            reg.insert(k, Entry::Dead(h.clone(), exit));
        }
        self.events.publish(
            ns,
            "/tasks/exit",
            &ev::TaskExit {
                container_id: id.into(),
                id: id.into(),
                pid: exit.pid,
                exit_status: exit.status,
                exited_at: Some(timestamp(exit.at)),
            },
        );
    }

    /// Marks every task whose runtime is gone as dead; returns how many.
    pub async fn reap_gone(&self) -> usize {
        let gone: Vec<(Key, Arc<Handle<R::Task>>)> = self
            .reg()
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Live(h) if self.runtime.is_gone(&h.task) => Some((k.clone(), h.clone())),
                _ => None,
            })
            .collect();
        for ((ns, id), h) in &gone {
            tracing::warn!("shim of task {ns}/{id} is gone; cleaning up");
            self.mark_dead(ns, id, h).await;
        }
        gone.len()
    }

    /// Watches live runtimes in the background; one that is gone died.
    pub fn watch(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_INTERVAL).await;
                this.reap_gone().await;
                if this.retry_networks.swap(false, Ordering::Relaxed) {
                    this.reconcile_networks().await;
                }
            }
        });
    }

    /// Takes over the tasks of a previous run: live runtimes are reconnected;
    /// the tasks of dead ones (which exited while the daemon was down) are
    /// cleaned up, in parallel, and kept as stopped with their saved exit.
    pub async fn restore(&self) {
        let found = self.runtime.restore().await;
        let n = found.len();
        let (live, dead): (Vec<_>, Vec<_>) = found.into_iter().partition(|f| f.alive);
        for f in live {
            let h = Handle {
                task: f.task,
                reaped: OnceCell::new(),
            };
            self.reg()
                .insert(key(&f.ns, &f.id), Entry::Live(Arc::new(h)));
        }
        let cleaned = futures::future::join_all(dead.into_iter().map(|f| async move {
            let exit = self.runtime.cleanup(&f.task).await;
            self.detach(&f.ns, &f.id).await;
            (f, exit)
        }))
        .await;
        for (f, exit) in cleaned {
            let h = Handle {
                task: f.task,
                reaped: OnceCell::new_with(Some(exit)),
            };
            self.reg()
                .insert(key(&f.ns, &f.id), Entry::Dead(Arc::new(h), exit));
        }
        if n > 0 {
            tracing::info!(tasks = n, "restored tasks from a previous run");
        }
        // Networking of tasks that no longer exist at all (a crash mid-
        // create or mid-delete).
        self.reconcile_networks().await;
    }
}

#[path = "service_logs.rs"]
mod logs;
#[path = "service_metrics.rs"]
mod metrics;
