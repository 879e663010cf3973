//! Pod sandbox lifecycle: RunPodSandbox, StopPodSandbox,
//! RemovePodSandbox (as containerd's `sandbox_{run,stop,remove}.go`).
//! A pod = a record in `k8s.io` + the pod's files + an infra task whose
//! network namespace and CNI setup the task service makes from the
//! record's `berth.*` network labels (torn down when the task is deleted).

use super::sandbox_spec::{self, SpecInput};
use super::store::{self, POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL};
use super::{CriService, NAMESPACE, sandbox_files};
use crate::containers::{AnyRecord, Container, ContainerRecord};
use crate::error::{Error, Result};
use crate::snapshots::DEFAULT_SNAPSHOTTER;
use crate::types::{Ctx, Labels, now};
use berth_proto::cri;
use berth_proto::errdefs::Kind;
use berth_proto::labels;
use berth_proto::pb::berth::cri::v1::SandboxMetadata;
use berth_proto::services::tasks::v1::CreateTaskRequest;
use std::time::Duration;

/// The shim of pods without a runtime handler.
pub const DEFAULT_RUNTIME: &str = "io.containerd.berth.v2";
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const SIGKILL: u32 = 9;

/// The runtime a pod (and its containers) runs with.
struct Runtime {
    /// The CRI runtime handler ("" = the default).
    handler: String,
    /// The binary the shim drives ("" = its built-in runtime).
    binary: String,
}

impl CriService {
    pub async fn run_pod_sandbox(
        &self,
        r: cri::RunPodSandboxRequest,
    ) -> Result<cri::RunPodSandboxResponse> {
        let config = r
            .config
            .ok_or_else(|| Error::invalid("config: a pod sandbox config is required"))?;
        let md = config
            .metadata
            .clone()
            .ok_or_else(|| Error::invalid("config.metadata is required"))?;
        if md.name.is_empty() {
            return Err(Error::invalid("config.metadata.name must not be empty"));
        }
        let Some(binary) = self.config.runtime_binary_of(&r.runtime_handler) else {
            return Err(Error::not_found(format!(
                "runtime handler {:?} is not configured: add [cri.runtimes.{}] to berthd's \
                 config, or use the default handler \"\"",
                r.runtime_handler, r.runtime_handler
            )));
        };
        let runtime = Runtime {
            handler: r.runtime_handler.clone(),
            binary: binary.to_string(),
        };
        let id = store::new_id();
        let name = store::sandbox_name(&md);
        self.store
            .reserve_name(&name, &id)
            .map_err(|e| e.context("reserve the pod sandbox name"))?;
        match self.run_reserved(&id, &name, &config, &md, &runtime).await {
            Ok(()) => Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id }),
            Err(e) => {
                if let Err(c) = self.discard_sandbox(&id).await {
                    tracing::warn!(%id, error = %c.chain(), "CRI: cleaning up a failed pod");
                }
                self.store.release_name(&name, &id);
                Err(e)
            }
        }
    }

    async fn run_reserved(
        &self,
        id: &str,
        name: &str,
        config: &cri::PodSandboxConfig,
        md: &cri::PodSandboxMetadata,
        runtime: &Runtime,
    ) -> Result<()> {
        let modes = sandbox_spec::modes(config)?;
        let ports = sandbox_spec::port_mappings(config)?;
        // Checked here (the spec uses it too); kept as the kubelet gave it:
        // the pod's containers go below it, as containerd places them.
        sandbox_spec::cgroups_path(config, id)?;
        let cgroup_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        let network = if modes.host_network {
            None
        } else {
            if let Some(p) = self.network_problem() {
                return Err(Error::precondition(format!(
                    "set up the pod's network: {p}"
                )));
            }
            let first = self.networks.list()?.into_iter().next();
            Some(first.map(|n| n.name).ok_or_else(|| {
                Error::precondition("no CNI network config (cni plugin not initialized)")
            })?)
        };
        let image = self.ensure_image(&self.config.sandbox_image).await?;
        let dir = self.pods_dir().join(id);
        let shm = sandbox_files::set_up(&dir, config, modes.host_ipc)?;
        let spec = sandbox_spec::build(&SpecInput {
            id,
            config,
            image: &image.config,
            files_dir: &dir,
            shm: &shm,
            restrict_oom_score_adj: self.config.restrict_oom_score_adj,
        })?;
        let mut labels: Labels = config
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(POD_NAME_LABEL.into(), md.name.clone());
        labels.insert(POD_NAMESPACE_LABEL.into(), md.namespace.clone());
        labels.insert(POD_UID_LABEL.into(), md.uid.clone());
        if let Some(n) = &network {
            labels.insert(labels::NETWORKS.into(), n.clone());
            if !ports.is_empty() {
                let p: Vec<String> = ports.iter().map(ToString::to_string).collect();
                labels.insert(labels::PORTS.into(), p.join(","));
            }
            // As containerd's CRI passes them to the plugins.
            labels.insert(
                labels::CNI_ARGS.into(),
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID={}",
                    md.namespace, md.name, md.uid
                ),
            );
        }
        let record = Container {
            id: id.to_string(),
            record: ContainerRecord {
                labels,
                image: image.name.clone(),
                runtime: DEFAULT_RUNTIME.into(),
                spec: Some(AnyRecord::from(prost_types::Any {
                    type_url: SPEC_TYPE_URL.into(),
                    value: serde_json::to_vec(&spec)
                        .map_err(|e| Error::internal(format!("encode the pod spec: {e}")))?,
                })),
                snapshotter: DEFAULT_SNAPSHOTTER.into(),
                snapshot_key: id.to_string(),
                // The pod's containers take the same (container_create).
                runtime_options: (!runtime.binary.is_empty()).then(|| {
                    AnyRecord::from(berth_proto::typeurl::pack(
                        &berth_proto::pb::containerd::runc::v1::Options {
                            binary_name: runtime.binary.clone(),
                            ..Default::default()
                        },
                    ))
                }),
                ..Default::default()
            },
        };
        let meta = SandboxMetadata {
            id: id.to_string(),
            name: name.to_string(),
            config: Some(config.clone()),
            created_at: now(),
            etc_dir: dir.display().to_string(),
            shm_path: shm,
            cgroup_parent,
            runtime_handler: runtime.handler.clone(),
            ..Default::default()
        };
        // The record first: it holds the snapshot from collection.
        self.store.create_sandbox(record, meta)?;
        let snapshots = self.snapshots.clone();
        let (key, parent) = (id.to_string(), image.chain_id.clone());
        let mounts = tokio::task::spawn_blocking(move || {
            snapshots.prepare(
                &Ctx::new(NAMESPACE),
                DEFAULT_SNAPSHOTTER,
                &key,
                &parent,
                Labels::new(),
            )
        })
        .await
        .map_err(|e| Error::internal(format!("snapshot task: {e}")))??;
        self.tasks
            .create(
                NAMESPACE,
                CreateTaskRequest {
                    container_id: id.to_string(),
                    rootfs: mounts.into_iter().map(Into::into).collect(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.context("create the pod's infra task"))?;
        self.tasks
            .start(NAMESPACE, id, "")
            .await
            .map_err(|e| e.context("start the pod's infra task"))?;
        let ips = self.task_networks.addresses(NAMESPACE, id)?;
        let netns = match network {
            Some(_) => self
                .networks
                .netns()
                .path(NAMESPACE, id)?
                .display()
                .to_string(),
            None => String::new(),
        };
        self.store.update_sandbox(id, |m| {
            m.netns_path = netns;
            m.ip = ips.first().map(ToString::to_string).unwrap_or_default();
            m.additional_ips = ips.iter().skip(1).map(ToString::to_string).collect();
        })?;
        tracing::info!(%id, pod = %name, "CRI: pod sandbox running");
        Ok(())
    }

    /// Kills and deletes task `id` (its networking goes with it). A task
    /// that is not there is fine.
    pub(crate) async fn end_task(&self, id: &str) -> Result<()> {
        match self.tasks.kill(NAMESPACE, id, "", SIGKILL, true).await {
            Ok(()) => {
                // The init is SIGKILLed: its exit is due at once.
                let wait = self.tasks.wait(NAMESPACE, id, "");
                if tokio::time::timeout(Duration::from_secs(10), wait)
                    .await
                    .is_err()
                {
                    return Err(Error::internal(format!(
                        "task {id} did not exit within 10s of SIGKILL"
                    )));
                }
            }
            // No task, or stopped already (exited, or its shim is gone):
            // whatever is left is deleted below.
            Err(e)
                if e.is_not_found()
                    || matches!(e.kind(), Kind::FailedPrecondition | Kind::Unavailable) => {}
            Err(e) => return Err(e.context(format!("kill task {id}"))),
        }
        match self.tasks.delete(NAMESPACE, id).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.context(format!("delete task {id}"))),
        }
    }

    pub async fn stop_pod_sandbox(
        &self,
        r: cri::StopPodSandboxRequest,
    ) -> Result<cri::StopPodSandboxResponse> {
        let s = match self.store.sandbox(&r.pod_sandbox_id) {
            Ok(s) => s,
            // The CRI asks for idempotence: an unknown pod is stopped.
            Err(e) if e.is_not_found() => return Ok(cri::StopPodSandboxResponse {}),
            Err(e) => return Err(e),
        };
        self.stop_sandbox(&s.meta.id).await?;
        Ok(cri::StopPodSandboxResponse {})
    }

    /// Stops the pod's containers and its infra task (with its network)
    /// and unmounts its shm; the record stays, NOTREADY. Repeatable.
    async fn stop_sandbox(&self, id: &str) -> Result<()> {
        for c in self.store.containers_of(id)? {
            let req = cri::StopContainerRequest {
                container_id: c.meta.id.clone(),
                timeout: 0,
            };
            match self.stop_container(req).await {
                Ok(_) => {}
                Err(e) if e.kind() == Kind::Unimplemented => self.end_task(&c.meta.id).await?,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.context(format!("stop container {}", c.meta.id))),
            }
        }
        self.end_task(id)
            .await
            .map_err(|e| e.context("stop the pod's infra task"))?;
        // Left by a crash between task delete and network teardown.
        self.task_networks.detach_task(NAMESPACE, id).await?;
        self.store.update_sandbox(id, |m| m.stopped = true)?;
        let s = self.store.sandbox(id)?;
        if !s.meta.etc_dir.is_empty() {
            sandbox_files::unmount_shm(std::path::Path::new(&s.meta.etc_dir))?;
        }
        Ok(())
    }

    pub async fn remove_pod_sandbox(
        &self,
        r: cri::RemovePodSandboxRequest,
    ) -> Result<cri::RemovePodSandboxResponse> {
        let s = match self.store.sandbox(&r.pod_sandbox_id) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(cri::RemovePodSandboxResponse {}),
            Err(e) => return Err(e),
        };
        // As containerd: a running pod is stopped first.
        self.stop_sandbox(&s.meta.id).await?;
        for c in self.store.containers_of(&s.meta.id)? {
            let req = cri::RemoveContainerRequest {
                container_id: c.meta.id.clone(),
            };
            match self.remove_container(req).await {
                Ok(_) => {}
                Err(e) if e.kind() == Kind::Unimplemented => {
                    self.remove_snapshot(&c.record.record.snapshot_key)?;
                    self.store.delete(&c.meta.id, &c.meta.name)?;
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.context(format!("remove container {}", c.meta.id))),
            }
        }
        self.discard_sandbox(&s.meta.id).await?;
        self.store.release_name(&s.meta.name, &s.meta.id);
        tracing::info!(id = %s.meta.id, pod = %s.meta.name, "CRI: pod sandbox removed");
        Ok(cri::RemovePodSandboxResponse {})
    }

    fn remove_snapshot(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Ok(());
        }
        match self.snapshots.remove(NAMESPACE, DEFAULT_SNAPSHOTTER, key) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.context(format!("remove snapshot {key}"))),
        }
    }

    /// Removes whatever of pod `id` exists: task, files, snapshot, record
    /// (not its name reservation). Repeatable.
    async fn discard_sandbox(&self, id: &str) -> Result<()> {
        self.end_task(id).await?;
        self.task_networks.detach_task(NAMESPACE, id).await?;
        sandbox_files::tear_down(&self.pods_dir().join(id))?;
        self.remove_snapshot(id)?;
        match self.containers.delete(NAMESPACE, id) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}
