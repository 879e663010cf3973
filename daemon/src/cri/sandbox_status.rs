//! PodSandboxStatus, ListPodSandbox, and the reconciliation of pods with
//! their infra tasks when berthd starts.

use super::store::Sandbox;
use super::{CriService, NAMESPACE};
use crate::error::Result;
use berth_proto::cri;
use berth_proto::pb::containerd::v1::types::Status;
use std::collections::HashMap;

impl CriService {
    /// Whether the infra task of pod `id` runs; its pid if so.
    async fn infra_pid(&self, id: &str) -> Option<u32> {
        match self.tasks.get(NAMESPACE, id, "").await {
            Ok(p) if p.status == Status::Running as i32 => Some(p.pid),
            _ => None,
        }
    }

    /// READY: not stopped and the infra task runs.
    async fn state_of(&self, s: &Sandbox) -> (cri::PodSandboxState, Option<u32>) {
        let pid = if s.meta.stopped {
            None
        } else {
            self.infra_pid(&s.meta.id).await
        };
        match pid {
            Some(_) => (cri::PodSandboxState::SandboxReady, pid),
            None => (cri::PodSandboxState::SandboxNotready, None),
        }
    }

    pub async fn pod_sandbox_status(
        &self,
        r: cri::PodSandboxStatusRequest,
    ) -> Result<cri::PodSandboxStatusResponse> {
        let s = self.store.sandbox(&r.pod_sandbox_id)?;
        let (state, pid) = self.state_of(&s).await;
        let config = s.meta.config.clone().unwrap_or_default();
        let ns_options = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|c| c.namespace_options.clone())
            .unwrap_or_default();
        // As containerd: no IP once the pod's network is gone.
        let ready = state == cri::PodSandboxState::SandboxReady;
        let network = cri::PodSandboxNetworkStatus {
            ip: if ready {
                s.meta.ip.clone()
            } else {
                String::new()
            },
            additional_ips: if ready {
                s.meta
                    .additional_ips
                    .iter()
                    .map(|ip| cri::PodIp { ip: ip.clone() })
                    .collect()
            } else {
                Vec::new()
            },
        };
        let mut info = HashMap::new();
        if r.verbose {
            let v = serde_json::json!({
                "pid": pid.unwrap_or(0),
                "image": s.record.record.image,
                "snapshotKey": s.record.record.snapshot_key,
                "snapshotter": s.record.record.snapshotter,
                "runtimeType": s.record.record.runtime,
                "netNamespacePath": s.meta.netns_path,
                "sandboxFilesDir": s.meta.etc_dir,
                "shmPath": s.meta.shm_path,
                "cgroupParent": s.meta.cgroup_parent,
                "cgroupsPath": super::sandbox_spec::cgroups_path(&config, &s.meta.id).unwrap_or_default(),
                "stopped": s.meta.stopped,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(cri::PodSandboxStatus {
                id: s.meta.id.clone(),
                metadata: config.metadata.clone(),
                state: state as i32,
                created_at: s.meta.created_at,
                network: Some(network),
                linux: Some(cri::LinuxPodSandboxStatus {
                    namespaces: Some(cri::Namespace {
                        options: Some(ns_options),
                    }),
                }),
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
                runtime_handler: s.meta.runtime_handler.clone(),
            }),
            info,
            ..Default::default()
        })
    }

    pub async fn list_pod_sandbox(
        &self,
        r: cri::ListPodSandboxRequest,
    ) -> Result<cri::ListPodSandboxResponse> {
        let mut filter = r.filter.unwrap_or_default();
        // An abbreviated id names the pod it uniquely starts (containerd).
        if !filter.id.is_empty()
            && let Ok(s) = self.store.sandbox(&filter.id)
        {
            filter.id = s.meta.id;
        }
        let mut items = Vec::new();
        for s in self.store.sandboxes()? {
            if !filter.id.is_empty() && filter.id != s.meta.id {
                continue;
            }
            let config = s.meta.config.clone().unwrap_or_default();
            if !filter
                .label_selector
                .iter()
                .all(|(k, v)| config.labels.get(k) == Some(v))
            {
                continue;
            }
            let (state, _) = self.state_of(&s).await;
            if let Some(want) = &filter.state
                && want.state != state as i32
            {
                continue;
            }
            items.push(cri::PodSandbox {
                id: s.meta.id.clone(),
                metadata: config.metadata.clone(),
                state: state as i32,
                created_at: s.meta.created_at,
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
                runtime_handler: s.meta.runtime_handler.clone(),
            });
        }
        Ok(cri::ListPodSandboxResponse { items })
    }

    /// At daemon start (after the task service restored its tasks): a pod
    /// whose infra task died while berthd was down is NOTREADY (what is
    /// left of its task and network goes); a pod stopped half-way by a
    /// crash is stopped completely. Running pods keep their network.
    pub async fn reconcile(&self) {
        let pods = match self.store.sandboxes() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e.chain(), "CRI: cannot list pods");
                return;
            }
        };
        let mut ready = 0;
        for s in &pods {
            let running = self.infra_pid(&s.meta.id).await.is_some();
            if running && !s.meta.stopped {
                ready += 1;
                continue;
            }
            if let Err(e) = self.end_task(&s.meta.id).await {
                tracing::warn!(id = %s.meta.id, error = %e.chain(), "CRI: clean up a dead pod's task");
            }
        }
        tracing::info!(pods = pods.len(), ready, "CRI: pods loaded");
    }
}
