//! CreateContainer and the task of StartContainer: the image resolved and
//! unpacked, the container's rootfs snapshot, its OCI spec (`spec`) from
//! what the host and the image's files say, its record; then the task
//! with the CRI log as stdout/stderr and berthd's stdin FIFO.

use super::container::now_ns;
use super::images::{self, CriImage};
use super::spec::{self, Host, Image, Sandbox};
use super::store::{self, CriContainer};
use super::{CriService, NAMESPACE};
use crate::containers::{AnyRecord, Container, ContainerRecord};
use crate::error::{Error, Result, io_err};
use crate::images::oci::Platform;
use crate::snapshots::DEFAULT_SNAPSHOTTER;
use crate::types::Ctx;
use berth_proto::cri;
use berth_proto::pb::berth::cri::v1::ContainerMetadata;
use berth_proto::services::tasks::v1::CreateTaskRequest;
use std::collections::HashMap;
use std::path::Path;

/// An image of `k8s.io` as a container uses it.
pub struct ResolvedImage {
    /// The record's name (a reference) the container was asked with.
    pub name: String,
    pub image: CriImage,
}

impl CriService {
    /// The image `r` names, as the image service resolves it (a reference,
    /// an id or a unique id prefix); NotFound otherwise.
    pub fn resolve_image(&self, r: &str) -> Result<ResolvedImage> {
        if r.is_empty() {
            return Err(Error::invalid("config.image.image must be set"));
        }
        let image = self
            .cri_images
            .resolve(r)?
            .ok_or_else(|| Error::not_found(format!("image {r:?} not found")))?;
        let name = [Some(r.to_string()), images::normalize(r).ok()]
            .into_iter()
            .flatten()
            .find(|n| image.references.contains(n))
            // Asked by id: the first of its records.
            .or_else(|| image.references.first().cloned())
            .unwrap_or_else(|| image.id.clone());
        Ok(ResolvedImage { name, image })
    }

    pub async fn create_container(
        &self,
        r: cri::CreateContainerRequest,
    ) -> Result<cri::CreateContainerResponse> {
        let config = r
            .config
            .ok_or_else(|| Error::invalid("config must be set"))?;
        let md = config
            .metadata
            .clone()
            .ok_or_else(|| Error::invalid("config.metadata must be set"))?;
        if md.name.is_empty() {
            return Err(Error::invalid("config.metadata.name must be set"));
        }
        let sb = self.store.sandbox(&r.pod_sandbox_id)?;
        if sb.meta.stopped {
            return Err(Error::precondition(format!(
                "sandbox {} is stopped: no container can be created in it",
                sb.meta.id
            )));
        }
        let pod_md = sb
            .meta
            .config
            .as_ref()
            .and_then(|c| c.metadata.clone())
            .unwrap_or_default();
        let id = store::new_id();
        let name = store::container_name(&md, &pod_md);
        self.store.reserve_name(&name, &id)?;
        match self.create_inner(&id, &name, config, &sb).await {
            Ok(c) => {
                self.container_event(&c, cri::ContainerEventType::ContainerCreatedEvent);
                Ok(cri::CreateContainerResponse { container_id: id })
            }
            Err(e) => {
                self.store.release_name(&name, &id);
                Err(e)
            }
        }
    }

    async fn create_inner(
        &self,
        id: &str,
        name: &str,
        config: cri::ContainerConfig,
        sb: &store::Sandbox,
    ) -> Result<CriContainer> {
        if let Some(m) = config.mounts.iter().find(|m| m.recursive_read_only)
            && !self
                .features
                .get(&sb.meta.runtime_handler)
                .is_some_and(|f| f.recursive_read_only_mounts)
        {
            return Err(Error::invalid(format!(
                "mounts[{}]: recursive read-only mounts are not supported by the runtime of handler {:?} (they need mount_setattr, Linux 5.12, and a runtime listing \"rro\" in its features, as runc 1.1 does)",
                m.container_path, sb.meta.runtime_handler
            )));
        }
        let pid = self.sandbox_pid(&sb.meta.id).await?;
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let img = self.resolve_image(&image_name)?;
        // Until the record holds the snapshot, a lease keeps the collector
        // off it (and off the layers being unpacked), as containerd's CRI.
        let (lease, _) = self
            .images
            .leases
            .create(NAMESPACE, "", Default::default())?;
        let ctx = Ctx {
            ns: NAMESPACE.into(),
            lease: Some(lease.clone()),
        };
        let made = self
            .create_leased(id, name, config, sb, pid, &img, &ctx)
            .await;
        if let Err(e) = self.images.leases.delete(NAMESPACE, &lease, false).await {
            tracing::warn!(
                container = id,
                "CRI: delete the create lease: {}",
                e.chain()
            );
        }
        made
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_leased(
        &self,
        id: &str,
        name: &str,
        config: cri::ContainerConfig,
        sb: &store::Sandbox,
        pid: u32,
        img: &ResolvedImage,
        ctx: &Ctx,
    ) -> Result<CriContainer> {
        let unpacker = self.images.unpacker.clone();
        let (c2, target) = (ctx.clone(), img.image.target.clone());
        let chain = tokio::task::spawn_blocking(move || {
            unpacker.unpack(&c2, &target, DEFAULT_SNAPSHOTTER, &Platform::host())
        })
        .await
        .map_err(|e| Error::internal(format!("unpack task: {e}")))??;
        self.snapshots
            .prepare(ctx, DEFAULT_SNAPSHOTTER, id, &chain, Default::default())?;
        let made = self
            .create_record(id, name, config, sb, pid, img, &chain, ctx)
            .await;
        if made.is_err() {
            let _ = self.snapshots.remove(NAMESPACE, DEFAULT_SNAPSHOTTER, id);
        }
        made
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_record(
        &self,
        id: &str,
        name: &str,
        config: cri::ContainerConfig,
        sb: &store::Sandbox,
        pid: u32,
        img: &ResolvedImage,
        chain: &str,
        ctx: &Ctx,
    ) -> Result<CriContainer> {
        // The image's user database, read through a temporary read-only
        // view of the image (as berthctl run does), removed right after.
        let view = format!("{id}-users");
        let mounts =
            self.snapshots
                .view(ctx, DEFAULT_SNAPSHOTTER, &view, chain, Default::default())?;
        let tmp = self.state.join("tmpmounts");
        let users = tokio::task::spawn_blocking(move || -> Result<_> {
            std::fs::create_dir_all(&tmp).map_err(|e| io_err("create tmpmounts", e))?;
            let m = berth_snapshotter::mount::TempMount::new(&mounts, Some(&tmp)).map_err(|e| {
                Error::with_source(
                    berth_proto::errdefs::Kind::Internal,
                    "mount the image to read its users",
                    e,
                )
            })?;
            let root = m.path().to_path_buf();
            let read = |f: &str| {
                berth_proto::userdb::read_in_root(&root, f)
                    .map_err(|e| io_err(format!("read the image's /{f}"), e))
            };
            Ok((read("etc/passwd")?, read("etc/group")?))
        })
        .await
        .map_err(|e| Error::internal(format!("read users task: {e}")));
        if let Err(e) = self.snapshots.remove(NAMESPACE, DEFAULT_SNAPSHOTTER, &view) {
            tracing::warn!(container = id, "CRI: remove the users view: {}", e.chain());
        }
        let (passwd, group) = users??;
        let pod_config = sb.meta.config.clone().unwrap_or_default();
        let nsopts = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let target_pid = if nsopts.pid == cri::NamespaceMode::Target as i32 {
            let t = self.store.container(&nsopts.target_id)?;
            Some(self.tasks.get(NAMESPACE, &t.meta.id, "").await?.pid)
        } else {
            None
        };
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let host = Host {
            passwd: passwd.as_deref(),
            group: group.as_deref(),
            target_pid,
            hostname: &hostname,
            mountinfo: &mountinfo,
            cgroup2: cgroup2_unified(),
            swap_controller: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
                .exists(),
            hugetlb_controller: Path::new("/sys/fs/cgroup/hugetlb").is_dir(),
            restrict_oom_score_adj: self.config.restrict_oom_score_adj,
        };
        let sandbox = Sandbox {
            id: &sb.meta.id,
            config: &pod_config,
            netns_path: &sb.meta.netns_path,
            pid,
            etc_dir: &sb.meta.etc_dir,
            shm_path: &sb.meta.shm_path,
            cgroup_parent: &sb.meta.cgroup_parent,
        };
        let image = Image {
            name: &img.name,
            config: &img.image.config["config"],
        };
        let oci = spec::build(NAMESPACE, id, &config, &sandbox, &image, &host)?;
        let log_path = if config.log_path.is_empty() {
            String::new()
        } else {
            Path::new(&pod_config.log_directory)
                .join(&config.log_path)
                .to_string_lossy()
                .into_owned()
        };
        let stdin_fifo = if config.stdin {
            self.container_dir(id)
                .join("stdin")
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        };
        let mut labels: HashMap<String, String> = img.image.config["config"]["Labels"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        labels.extend(config.labels.clone());
        // As containerd labels CRI records, so `ctr -n k8s.io c ls` tells
        // whose container it is.
        let pod_md = pod_config.metadata.clone().unwrap_or_default();
        for (k, v) in [
            (store::POD_NAME_LABEL, pod_md.name),
            (store::POD_NAMESPACE_LABEL, pod_md.namespace),
            (store::POD_UID_LABEL, pod_md.uid),
            (
                store::CONTAINER_NAME_LABEL,
                config
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
            ),
        ] {
            labels.entry(k.to_string()).or_insert(v);
        }
        let meta = ContainerMetadata {
            id: id.into(),
            name: name.into(),
            sandbox_id: sb.meta.id.clone(),
            image_ref: img.image.image_ref(),
            image_id: img.image.id.clone(),
            log_path,
            created_at: now_ns(),
            stdin_fifo,
            stop_signal: spec::stop_signal(&config, &img.image.config["config"]),
            config: Some(config),
            ..Default::default()
        };
        let record = Container {
            id: id.into(),
            record: ContainerRecord {
                labels: labels.into_iter().collect(),
                image: img.name.clone(),
                runtime: sb.record.record.runtime.clone(),
                runtime_options: sb.record.record.runtime_options.clone(),
                spec: Some(AnyRecord::from(prost_types::Any {
                    type_url: berth_proto::typeurl::OCI_SPEC_URL.into(),
                    value: serde_json::to_vec(&oci)
                        .map_err(|e| Error::internal(format!("spec: {e}")))?,
                })),
                snapshotter: DEFAULT_SNAPSHOTTER.into(),
                snapshot_key: id.into(),
                sandbox: sb.meta.id.clone(),
                ..Default::default()
            },
        };
        self.store.create_container(record, meta)
    }

    /// Creates and starts the task of a created container.
    pub(crate) async fn start_task(&self, c: &CriContainer) -> Result<()> {
        let cfg = c.meta.config.clone().unwrap_or_default();
        let id = &c.meta.id;
        let (stdout, stderr) = self.log_stdio(&c.meta, cfg.tty)?;
        let stdin = if c.meta.stdin_fifo.is_empty() {
            String::new()
        } else {
            self.open_stdin(id, &c.meta.stdin_fifo)?;
            c.meta.stdin_fifo.clone()
        };
        let rec = &c.record.record;
        let rootfs = self
            .snapshots
            .mounts(NAMESPACE, &rec.snapshotter, &rec.snapshot_key)?
            .into_iter()
            .map(Into::into)
            .collect();
        self.tasks
            .create(
                NAMESPACE,
                CreateTaskRequest {
                    container_id: id.clone(),
                    rootfs,
                    stdin,
                    stdout,
                    stderr,
                    terminal: cfg.tty,
                    ..Default::default()
                },
            )
            .await?;
        if let Err(e) = self.tasks.start(NAMESPACE, id, "").await {
            let _ = self
                .tasks
                .kill(NAMESPACE, id, "", libc::SIGKILL as u32, true)
                .await;
            let _ = self.tasks.delete(NAMESPACE, id).await;
            return Err(e);
        }
        Ok(())
    }

    /// The stdout/stderr URIs writing the container's output log in the
    /// CRI format, long lines cut at `max_container_log_line_size`; a file
    /// of berthd's own (no `log_path`) is rotated by size, as no kubelet
    /// rotates it.
    fn log_stdio(&self, m: &ContainerMetadata, terminal: bool) -> Result<(String, String)> {
        let max = usize::try_from(self.config.max_container_log_line_size).unwrap_or(0);
        let rotate = m
            .log_path
            .is_empty()
            .then_some((super::container::OUTPUT_MAX_SIZE, 2));
        crate::logs::LogStore::cri_stdio(&self.output_log(m), terminal, max, rotate)
    }

    /// Makes the stdin FIFO and holds its write end, so the container's
    /// stdin stays open between attaches.
    fn open_stdin(&self, id: &str, fifo: &str) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = self.container_dir(id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_err(format!("create {}", dir.display()), e))?;
        match nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(Error::internal(format!("mkfifo {fifo}: {e}"))),
        }
        self.hold_stdin(id, fifo)
    }

    /// Opens the stdin FIFO and holds its write end (also at restart, for
    /// a container still running).
    pub(crate) fn hold_stdin(&self, id: &str, fifo: &str) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // Read-write: opening does not wait for the shim's reader.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(fifo)
            .map_err(|e| io_err(format!("open {fifo}"), e))?;
        self.cstate
            .stdin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), f.into());
        Ok(())
    }

    /// Applies new resources: to the running task, and to the stored spec
    /// (so a restart or a later start keeps them).
    pub(crate) async fn update_resources(
        &self,
        c: &CriContainer,
        r: &cri::LinuxContainerResources,
        annotations: HashMap<String, String>,
    ) -> Result<()> {
        let any: prost_types::Any = c
            .record
            .record
            .spec
            .clone()
            .ok_or_else(|| Error::precondition("container has no spec"))?
            .into();
        let mut oci: serde_json::Value = serde_json::from_slice(&any.value)
            .map_err(|e| Error::internal(format!("container spec: {e}")))?;
        let host = Host {
            cgroup2: cgroup2_unified(),
            swap_controller: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
                .exists(),
            hugetlb_controller: Path::new("/sys/fs/cgroup/hugetlb").is_dir(),
            restrict_oom_score_adj: self.config.restrict_oom_score_adj,
            ..Default::default()
        };
        spec::apply_resources(&mut oci, r, &host)?;
        if super::container::state_of(&c.meta) == cri::ContainerState::ContainerRunning {
            let res = oci["linux"]["resources"].clone();
            self.tasks
                .update(
                    NAMESPACE,
                    &c.meta.id,
                    Some(prost_types::Any {
                        type_url:
                            "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                                .into(),
                        value: serde_json::to_vec(&res)
                            .map_err(|e| Error::internal(format!("resources: {e}")))?,
                    }),
                    annotations,
                )
                .await?;
        }
        let mut rec = c.record.clone();
        rec.record.spec = Some(AnyRecord::from(prost_types::Any {
            type_url: any.type_url,
            value: serde_json::to_vec(&oci).map_err(|e| Error::internal(format!("spec: {e}")))?,
        }));
        self.containers
            .update(NAMESPACE, rec, &["spec".to_string()])?;
        let res = r.clone();
        self.store.update_container(&c.meta.id, move |m| {
            if let Some(cfg) = m.config.as_mut() {
                cfg.linux.get_or_insert_with(Default::default).resources = Some(res);
            }
        })?;
        Ok(())
    }
}

/// Whether /sys/fs/cgroup is the cgroup2 hierarchy (not this hybrid
/// host's v1).
pub fn cgroup2_unified() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}
