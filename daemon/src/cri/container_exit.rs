//! Exits of CRI containers: the monitor records each exit (code, time,
//! reason) from `/tasks/exit` and OOM kills from `/tasks/oom`, then deletes
//! the task; at berthd start the reconcile records the exits that happened
//! while it was down. As containerd's CRI event monitor.

use super::container::{now_ns, state_of};
use super::{CriService, NAMESPACE};
use berth_proto::cri;
use berth_proto::filters::Filter;
use berth_proto::pb::containerd::events as ev;
use berth_proto::pb::containerd::v1::types::Status as TaskStatus;
use std::sync::Arc;

/// The reason of an exit: an OOM kill stays the reason whatever the code.
pub fn exit_reason(previous: &str, code: u32) -> String {
    if previous == "OOMKilled" {
        previous.to_string()
    } else if code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    }
}

impl CriService {
    /// Records the exit of container `id` (once: a later record of the
    /// same exit changes nothing), deletes its task and closes its stdin.
    pub(crate) async fn record_exit(&self, id: &str, status: u32, at_ns: i64) {
        let mut first = false;
        let updated = self.store.update_container(id, |m| {
            if m.finished_at == 0 {
                first = true;
                m.started = true;
                m.finished_at = at_ns.max(1);
                m.exit_code = i32::try_from(status).unwrap_or(255);
                m.reason = exit_reason(&m.reason, status);
            }
        });
        match self.tasks.delete(NAMESPACE, id).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(container = id, "CRI: delete the exited task: {}", e.chain()),
        }
        self.cstate.close_stdin(id);
        match updated {
            Ok(c) if first => {
                self.container_event(&c, cri::ContainerEventType::ContainerStoppedEvent)
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(container = id, "CRI: record exit: {}", e.chain()),
        }
    }

    /// An OOM kill in container `id`: the reason its exit will carry.
    fn record_oom(&self, id: &str) {
        match self
            .store
            .update_container(id, |m| m.reason = "OOMKilled".into())
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(container = id, "CRI: record OOM: {}", e.chain()),
        }
    }

    /// Subscribes to task exits and OOM kills of `k8s.io` and handles them
    /// in the background. Call before [`reconcile_containers`], so no exit
    /// falls between the two.
    pub fn start_exit_monitor(self: &Arc<Self>) {
        let filter = match Filter::parse(&format!(
            r#"namespace=={NAMESPACE},topic~="^/tasks/(exit|oom)$""#
        )) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("CRI exit monitor: event filter: {e}");
                return;
            }
        };
        let mut rx = self.events.subscribe(filter);
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(env) = rx.recv().await {
                let Some(any) = env.event else { continue };
                if env.topic == "/tasks/oom" {
                    if let Some(o) = berth_proto::typeurl::unpack::<ev::TaskOom>(&any)
                        && this.is_container(&o.container_id)
                    {
                        this.record_oom(&o.container_id);
                    }
                    continue;
                }
                let Some(e) = berth_proto::typeurl::unpack::<ev::TaskExit>(&any) else {
                    continue;
                };
                // An exec's exit is not the container's.
                if e.id != e.container_id || !this.is_container(&e.container_id) {
                    continue;
                }
                let at = e
                    .exited_at
                    .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                    .unwrap_or_else(now_ns);
                let this = this.clone();
                // Off the event loop: a delete waits for the shim.
                tokio::spawn(async move {
                    this.record_exit(&e.container_id, e.exit_status, at).await;
                });
            }
        });
    }

    fn is_container(&self, id: &str) -> bool {
        self.store.container(id).is_ok_and(|c| c.meta.id == id)
    }

    /// At berthd start: containers that were running when berthd stopped
    /// and whose task exited meanwhile (found stopped) or is gone get their
    /// exit recorded; those still running stay RUNNING.
    pub async fn reconcile_containers(&self) {
        let all = match self.store.cri_containers() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("CRI: cannot list containers: {}", e.chain());
                return;
            }
        };
        let mut exited = 0;
        for c in all {
            if state_of(&c.meta) != cri::ContainerState::ContainerRunning {
                continue;
            }
            let id = c.meta.id.clone();
            match self.tasks.get(NAMESPACE, &id, "").await {
                Ok(p) if p.status == TaskStatus::Stopped as i32 => {
                    let at = p
                        .exited_at
                        .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                        .unwrap_or_else(now_ns);
                    self.record_exit(&id, p.exit_status, at).await;
                    exited += 1;
                }
                Ok(_) => {
                    // Still running: its stdin FIFO is held again.
                    if !c.meta.stdin_fifo.is_empty() {
                        let _ = self.hold_stdin(&id, &c.meta.stdin_fifo);
                    }
                }
                Err(e) if e.is_not_found() => {
                    // No task at all: its exit is unknown (containerd: 255).
                    self.record_exit(&id, 255, now_ns()).await;
                    let _ = self
                        .store
                        .update_container(&id, |m| m.reason = "Unknown".into());
                    exited += 1;
                }
                Err(e) => tracing::warn!(container = %id, "CRI: task state: {}", e.chain()),
            }
        }
        tracing::info!(exited, "CRI: containers reconciled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(exit_reason("", 0), "Completed");
        assert_eq!(exit_reason("", 1), "Error");
        assert_eq!(exit_reason("OOMKilled", 137), "OOMKilled");
        assert_eq!(exit_reason("OOMKilled", 0), "OOMKilled");
    }
}
