//! The restart manager: restarts the task of a container labelled
//! `berth.restart` when it exits, as docker's restart policies do, with
//! docker's backoff (100 ms, doubling, at most a minute, back to 100 ms
//! after a run of 10 s). The count of restarts is kept in the label
//! `berth.restart-count`, so `on-failure:N` holds across berthd restarts.
//! A container the user stopped (`berth.stopped=true`) is left alone; when
//! berthd starts, `always` containers are restarted even so (docker
//! restarts them with the daemon), `unless-stopped` ones are not.
//! After a host reboot (an empty state directory: no task at all) the
//! same rule holds for the containers that had started before
//! ([`STARTED`]); the lost task counts as an exit with status 255.
//!
//! A restart deletes the stopped task and creates a new one on the
//! container's snapshot with no stdio, so that it logs to its json-file log.

use crate::containers::{Container, ContainerRecord, Containers};
use crate::error::Result;
use crate::events::Exchange;
use crate::runtime::Tasks;
use crate::snapshots::Snapshots;
use berth_proto::filters::Filter;
use berth_proto::labels::{RESTART, RESTART_COUNT, RestartPolicy, STARTED, STOPPED};
use berth_proto::pb::containerd::events as ev;
use berth_proto::pb::containerd::v1::types::Status as TaskStatus;
use berth_proto::services::tasks::v1::CreateTaskRequest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// docker's first delay.
const FIRST: Duration = Duration::from_millis(100);
/// docker's longest delay.
const MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay (docker's).
const RESET_AFTER: Duration = Duration::from_secs(10);

/// The delay before each restart of one container.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    delay: Duration,
}

impl Backoff {
    /// The delay before the next restart, after a run that lasted `ran`.
    pub fn next(&mut self, ran: Duration) -> Duration {
        if ran >= RESET_AFTER {
            self.delay = Duration::ZERO;
        }
        self.delay = if self.delay.is_zero() {
            FIRST
        } else {
            (self.delay * 2).min(MAX)
        };
        self.delay
    }
}

/// Why a task exit is being looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    /// The task exited while berthd ran.
    Exit,
    /// berthd started and found the task stopped.
    DaemonStart,
    /// berthd started and found no task of a container started before:
    /// the host rebooted (or the state directory was emptied).
    Reboot,
}

/// The exit status a task lost with the host counts as (docker's for a
/// container whose process it could not find again).
const LOST: u32 = 255;

/// Whether a container whose task exited with `status` is restarted, given
/// its policy, how often it was restarted and whether the user stopped it.
pub fn should_restart(
    policy: RestartPolicy,
    status: u32,
    count: u32,
    stopped: bool,
    occasion: Occasion,
) -> bool {
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always => !stopped || occasion != Occasion::Exit,
        RestartPolicy::UnlessStopped => !stopped,
        RestartPolicy::OnFailure(max) => {
            !stopped && status != 0 && max.is_none_or(|max| count < max)
        }
    }
}

type Key = (String, String);

/// Restarts the tasks of containers with a restart policy.
pub struct RestartManager {
    containers: Arc<Containers>,
    tasks: Arc<Tasks>,
    snapshots: Arc<Snapshots>,
    events: Arc<Exchange>,
    /// Per container: its backoff, when its task last started, and whether
    /// a restart is pending (so that an exit is handled once).
    state: Mutex<HashMap<Key, State>>,
}

#[derive(Default)]
struct State {
    backoff: Backoff,
    started: Option<Instant>,
    pending: bool,
}

impl RestartManager {
    pub fn new(
        containers: Arc<Containers>,
        tasks: Arc<Tasks>,
        snapshots: Arc<Snapshots>,
        events: Arc<Exchange>,
    ) -> Arc<Self> {
        Arc::new(Self {
            containers,
            tasks,
            snapshots,
            events,
            state: Mutex::new(HashMap::new()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HashMap<Key, State>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Listens for task starts and exits, and looks at the tasks berthd
    /// found stopped when it started (their exits happened while it was
    /// down). Call after the task service restored its tasks.
    pub fn start(self: &Arc<Self>) {
        let filter = match Filter::parse(r#"topic~="^/tasks/(start|exit)$""#) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("restart manager: event filter: {e}");
                return;
            }
        };
        let mut rx = self.events.subscribe(filter);
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(env) = rx.recv().await {
                let Some(any) = env.event else { continue };
                if env.topic == "/tasks/start" {
                    if let Some(s) = berth_proto::typeurl::unpack::<ev::TaskStart>(&any) {
                        this.mark_started(&env.namespace, &s.container_id);
                        this.state()
                            .entry((env.namespace, s.container_id))
                            .or_default()
                            .started = Some(Instant::now());
                    }
                    continue;
                }
                let Some(e) = berth_proto::typeurl::unpack::<ev::TaskExit>(&any) else {
                    continue;
                };
                // An exec's exit is not the task's.
                if e.id != e.container_id {
                    continue;
                }
                this.consider(env.namespace, e.container_id, e.exit_status, Occasion::Exit);
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            let tasks = this.tasks.keys();
            for (ns, id) in &tasks {
                // Tasks started by a berthd that did not mark them yet.
                this.mark_started(ns, id);
                match this.tasks.get(ns, id, "").await {
                    Ok(p) if p.status == TaskStatus::Stopped as i32 => {
                        this.consider(ns.clone(), id.clone(), p.exit_status, Occasion::DaemonStart);
                    }
                    _ => {}
                }
            }
            let with_policy = match this.containers.all_labelled(RESTART) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("restart manager: list containers: {e}");
                    return;
                }
            };
            for (ns, c) in with_policy {
                let started = c.record.labels.get(STARTED).is_some_and(|v| v == "true");
                if started && !tasks.contains(&(ns.clone(), c.id.clone())) {
                    this.consider(ns, c.id, LOST, Occasion::Reboot);
                }
            }
        });
    }

    /// Records that the task of container `ns/id` started, if it has a
    /// restart policy and it is not recorded yet (one write per container).
    fn mark_started(&self, ns: &str, id: &str) {
        let Ok(c) = self.containers.get(ns, id) else {
            return;
        };
        if !c.record.labels.contains_key(RESTART)
            || c.record.labels.get(STARTED).is_some_and(|v| v == "true")
        {
            return;
        }
        let record = ContainerRecord {
            labels: HashMap::from([(STARTED.to_string(), "true".to_string())]),
            ..Default::default()
        };
        let c = Container {
            id: id.to_string(),
            record,
        };
        if let Err(e) = self
            .containers
            .update(ns, c, &[format!("labels.{STARTED}")])
        {
            tracing::warn!("container {ns}/{id}: label {STARTED}: {e}");
        }
    }

    /// Restarts the container's task if its policy says so, after the
    /// backoff, in the background.
    fn consider(self: &Arc<Self>, ns: String, id: String, status: u32, occasion: Occasion) {
        let Ok(c) = self.containers.get(&ns, &id) else {
            return;
        };
        let labels = &c.record.labels;
        let Some(policy) = labels.get(RESTART) else {
            return;
        };
        let policy = match RestartPolicy::parse(policy) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("container {ns}/{id}: label {RESTART}: {e}; not restarted");
                return;
            }
        };
        let stopped = labels.get(STOPPED).is_some_and(|v| v == "true");
        let count = restart_count(&c);
        if !should_restart(policy, status, count, stopped, occasion) {
            return;
        }
        let delay = {
            let mut st = self.state();
            let s = st.entry((ns.clone(), id.clone())).or_default();
            if s.pending {
                return;
            }
            s.pending = true;
            // Unknown start (before berthd started): a long run.
            let ran = s.started.map_or(RESET_AFTER, |t| t.elapsed());
            s.backoff.next(ran)
        };
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let r = this.restart(&ns, &id, occasion).await;
            if let Some(s) = this.state().get_mut(&(ns.clone(), id.clone())) {
                s.pending = false;
            }
            match r {
                Ok(true) => tracing::info!(
                    "restarted container {ns}/{id} (policy {}, after {delay:?})",
                    policy_name(policy)
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!("restart container {ns}/{id}: {}", e.chain()),
            }
        });
    }

    /// Replaces the stopped task with a new one; false when the container
    /// changed meanwhile (removed, stopped by the user, its task deleted or
    /// started again by someone else).
    async fn restart(&self, ns: &str, id: &str, occasion: Occasion) -> Result<bool> {
        let Ok(c) = self.containers.get(ns, id) else {
            return Ok(false);
        };
        let stopped = c.record.labels.get(STOPPED).is_some_and(|v| v == "true");
        if stopped && occasion == Occasion::Exit {
            return Ok(false);
        }
        match self.tasks.get(ns, id, "").await {
            Ok(p) if p.status == TaskStatus::Stopped as i32 => {
                match self.tasks.delete(ns, id).await {
                    Err(e) if e.is_not_found() => return Ok(false),
                    r => {
                        r?;
                    }
                }
            }
            // After a reboot there is no task to replace.
            Err(e) if e.is_not_found() && occasion == Occasion::Reboot => {}
            _ => return Ok(false),
        }
        let mut labels = HashMap::from([(RESTART_COUNT.to_string(), {
            (restart_count(&c) + 1).to_string()
        })]);
        let mut paths = vec![format!("labels.{RESTART_COUNT}")];
        if stopped {
            // `always` at berthd's start: running again, no longer stopped.
            labels.insert(STOPPED.to_string(), String::new());
            paths.push(format!("labels.{STOPPED}"));
        }
        self.containers.update(
            ns,
            Container {
                id: id.to_string(),
                record: ContainerRecord {
                    labels,
                    ..Default::default()
                },
            },
            &paths,
        )?;
        let rootfs = if c.record.snapshot_key.is_empty() {
            Vec::new()
        } else {
            self.snapshots
                .mounts(ns, &c.record.snapshotter, &c.record.snapshot_key)?
                .into_iter()
                .map(Into::into)
                .collect()
        };
        self.tasks
            .create(
                ns,
                CreateTaskRequest {
                    container_id: id.to_string(),
                    rootfs,
                    ..Default::default()
                },
            )
            .await?;
        if let Err(e) = self.tasks.start(ns, id, "").await {
            // Not left half-made: a created task that never ran.
            let _ = self.tasks.kill(ns, id, "", 9, true).await;
            let _ = self.tasks.delete(ns, id).await;
            return Err(e);
        }
        Ok(true)
    }
}

fn restart_count(c: &Container) -> u32 {
    c.record
        .labels
        .get(RESTART_COUNT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn policy_name(p: RestartPolicy) -> String {
    match p {
        RestartPolicy::No => "no".into(),
        RestartPolicy::Always => "always".into(),
        RestartPolicy::UnlessStopped => "unless-stopped".into(),
        RestartPolicy::OnFailure(None) => "on-failure".into(),
        RestartPolicy::OnFailure(Some(n)) => format!("on-failure:{n}"),
    }
}

#[cfg(test)]
#[path = "restart_tests.rs"]
mod tests;
