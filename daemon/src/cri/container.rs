//! CRI container RPCs: start, stop, remove, status, list, update and
//! ExecSync (create is in `container_create`, exits in `container_exit`,
//! statistics in `stats`). A container is a record in `k8s.io` with its
//! CRI metadata; its state follows from the metadata: CREATED until
//! started, RUNNING until its exit is recorded, then EXITED.

use super::store::CriContainer;
use super::{CriService, NAMESPACE};
use crate::error::{Error, Result};
use berth_proto::cri;
use berth_proto::pb::berth::cri::v1::ContainerMetadata;
use berth_proto::pb::containerd::v1::types::Status as TaskStatus;
use futures::stream::BoxStream;
use std::collections::HashMap;
use std::time::Duration;

/// Nanoseconds since the epoch, as the CRI counts time.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The CRI state the metadata says.
pub fn state_of(m: &ContainerMetadata) -> cri::ContainerState {
    if m.finished_at != 0 {
        cri::ContainerState::ContainerExited
    } else if m.started {
        cri::ContainerState::ContainerRunning
    } else {
        cri::ContainerState::ContainerCreated
    }
}

/// A signal by name (`SIGTERM`, `TERM`) or number.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| Error::invalid(format!("unknown stop signal {s:?}")))
}

fn image_spec(m: &ContainerMetadata) -> Option<cri::ImageSpec> {
    m.config.as_ref().and_then(|c| c.image.clone())
}

/// The CRI's view of a container.
pub fn to_container(c: &CriContainer) -> cri::Container {
    let m = &c.meta;
    let cfg = m.config.clone().unwrap_or_default();
    cri::Container {
        id: m.id.clone(),
        pod_sandbox_id: m.sandbox_id.clone(),
        metadata: cfg.metadata.clone(),
        image: image_spec(m),
        image_ref: m.image_ref.clone(),
        state: state_of(m) as i32,
        created_at: m.created_at,
        labels: cfg.labels.clone(),
        annotations: cfg.annotations.clone(),
        image_id: m.image_id.clone(),
    }
}

/// A container's full status.
pub fn to_status(c: &CriContainer) -> cri::ContainerStatus {
    let m = &c.meta;
    let cfg = m.config.clone().unwrap_or_default();
    let resources = cfg
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .map(|r| cri::ContainerResources {
            linux: Some(r),
            windows: None,
        });
    cri::ContainerStatus {
        id: m.id.clone(),
        metadata: cfg.metadata.clone(),
        state: state_of(m) as i32,
        created_at: m.created_at,
        started_at: m.started_at,
        finished_at: m.finished_at,
        exit_code: m.exit_code,
        image: image_spec(m),
        image_ref: m.image_ref.clone(),
        reason: m.reason.clone(),
        message: m.message.clone(),
        labels: cfg.labels.clone(),
        annotations: cfg.annotations.clone(),
        mounts: cfg.mounts.clone(),
        log_path: m.log_path.clone(),
        resources,
        image_id: m.image_id.clone(),
        user: user_of(c),
        stop_signal: parse_signal(&m.stop_signal)
            .ok()
            .and_then(|n| nix::sys::signal::Signal::try_from(n).ok())
            .and_then(|s| cri::Signal::from_str_name(s.as_str()))
            .unwrap_or(cri::Signal::RuntimeDefault) as i32,
    }
}

/// The identity of the container's first process as its spec gives it
/// (what containerd reports: uid, gid and the additional gids).
fn user_of(c: &CriContainer) -> Option<cri::ContainerUser> {
    let spec: prost_types::Any = c.record.record.spec.clone()?.into();
    let v: serde_json::Value = serde_json::from_slice(&spec.value).ok()?;
    let u = &v["process"]["user"];
    Some(cri::ContainerUser {
        linux: Some(cri::LinuxContainerUser {
            uid: u["uid"].as_i64()?,
            gid: u["gid"].as_i64()?,
            supplemental_groups: u["additionalGids"]
                .as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_i64).collect())
                .unwrap_or_default(),
        }),
    })
}

/// Whether `c` passes the ListContainers filter.
pub fn matches(c: &CriContainer, f: &cri::ContainerFilter) -> bool {
    let m = &c.meta;
    if !f.id.is_empty() && !m.id.starts_with(&f.id) {
        return false;
    }
    if !f.pod_sandbox_id.is_empty() && !m.sandbox_id.starts_with(&f.pod_sandbox_id) {
        return false;
    }
    if let Some(s) = &f.state
        && s.state != state_of(m) as i32
    {
        return false;
    }
    let labels = m
        .config
        .as_ref()
        .map(|c| c.labels.clone())
        .unwrap_or_default();
    f.label_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// berthd's own output file of a container without a `log_path` is
/// rotated at this size, one older file kept (the kubelet's default
/// `containerLogMaxSize`, 10 MiB).
pub const OUTPUT_MAX_SIZE: u64 = 10 << 20;

impl CriService {
    /// The event of `kind` for container `c` (with its status now).
    pub(crate) fn container_event(&self, c: &CriContainer, kind: cri::ContainerEventType) {
        self.cstate.emit(cri::ContainerEventResponse {
            container_id: c.meta.id.clone(),
            container_event_type: kind as i32,
            created_at: now_ns(),
            pod_sandbox_status: None,
            containers_statuses: vec![to_status(c)],
        });
    }

    /// The running infra process of pod `id`.
    pub(crate) async fn sandbox_pid(&self, id: &str) -> Result<u32> {
        let p = self.tasks.get(NAMESPACE, id, "").await.map_err(|e| {
            Error::precondition(format!("sandbox {id} is not running: {}", e.message()))
        })?;
        if p.status != TaskStatus::Running as i32 || p.pid == 0 {
            return Err(Error::precondition(format!(
                "sandbox {id} is not running (its infra process has stopped)"
            )));
        }
        Ok(p.pid)
    }

    pub async fn start_container(
        &self,
        r: cri::StartContainerRequest,
    ) -> Result<cri::StartContainerResponse> {
        let c = self.store.container(&r.container_id)?;
        let st = state_of(&c.meta);
        if st != cri::ContainerState::ContainerCreated {
            return Err(Error::precondition(format!(
                "container {} is in {} state, not CREATED",
                c.meta.id,
                st.as_str_name()
            )));
        }
        let sb = self.store.sandbox(&c.meta.sandbox_id)?;
        if sb.meta.stopped {
            return Err(Error::precondition(format!(
                "sandbox {} is stopped",
                sb.meta.id
            )));
        }
        self.sandbox_pid(&sb.meta.id).await?;
        let id = c.meta.id.clone();
        // Taken before the start: the exit monitor may record a quick exit
        // before this call records the start.
        let started_at = now_ns();
        if let Err(e) = self.start_task(&c).await {
            // As containerd: a container that failed to start is EXITED
            // with the reason, not left CREATED.
            let msg = e.chain();
            if let Ok(c) = self.store.update_container(&id, |m| {
                m.started = true;
                m.finished_at = now_ns();
                m.exit_code = 128;
                m.reason = "StartError".into();
                m.message = msg;
            }) {
                self.container_event(&c, cri::ContainerEventType::ContainerStoppedEvent);
            }
            self.cstate.close_stdin(&id);
            return Err(e);
        }
        let c = self.store.update_container(&id, |m| {
            m.started = true;
            m.started_at = match m.finished_at {
                0 => started_at,
                f => started_at.min(f),
            };
        })?;
        self.container_event(&c, cri::ContainerEventType::ContainerStartedEvent);
        Ok(cri::StartContainerResponse {})
    }

    pub async fn stop_container(
        &self,
        r: cri::StopContainerRequest,
    ) -> Result<cri::StopContainerResponse> {
        let c = match self.store.container(&r.container_id) {
            Ok(c) => c,
            // Idempotent, as the kubelet expects of a stop.
            Err(e) if e.is_not_found() => return Ok(cri::StopContainerResponse {}),
            Err(e) => return Err(e),
        };
        self.stop(
            &c,
            Duration::from_secs(u64::try_from(r.timeout).unwrap_or(0)),
        )
        .await?;
        Ok(cri::StopContainerResponse {})
    }

    /// Stops a running container: its stop signal, then after `timeout`
    /// SIGKILL; returns once its exit is recorded. Nothing to do for a
    /// container that is not running.
    pub(crate) async fn stop(&self, c: &CriContainer, timeout: Duration) -> Result<()> {
        if state_of(&c.meta) != cri::ContainerState::ContainerRunning {
            return Ok(());
        }
        let id = c.meta.id.clone();
        if !timeout.is_zero() {
            let sig = parse_signal(&c.meta.stop_signal).unwrap_or(libc::SIGTERM);
            match self.tasks.kill(NAMESPACE, &id, "", sig as u32, false).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) if e.kind() == berth_proto::errdefs::Kind::FailedPrecondition => {}
                Err(e) => return Err(e),
            }
            if self.wait_exit(&id, Some(timeout)).await? {
                return Ok(());
            }
        }
        match self
            .tasks
            .kill(NAMESPACE, &id, "", libc::SIGKILL as u32, false)
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) if e.kind() == berth_proto::errdefs::Kind::FailedPrecondition => {}
            Err(e) => return Err(e),
        }
        self.wait_exit(&id, None).await?;
        Ok(())
    }

    /// Waits for the init of container `id` to exit (up to `limit`) and
    /// records the exit; false on timeout.
    async fn wait_exit(&self, id: &str, limit: Option<Duration>) -> Result<bool> {
        let wait = self.tasks.wait(NAMESPACE, id, "");
        let res = match limit {
            Some(l) => match tokio::time::timeout(l, wait).await {
                Ok(r) => r,
                Err(_) => return Ok(false),
            },
            None => wait.await,
        };
        match res {
            Ok(w) => {
                let at = w
                    .exited_at
                    .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                    .unwrap_or_else(now_ns);
                self.record_exit(id, w.exit_status, at).await;
                Ok(true)
            }
            // The exit monitor recorded it and deleted the task.
            Err(e) if e.is_not_found() => {
                if self.store.container(id)?.meta.finished_at == 0 {
                    self.record_exit(id, 255, now_ns()).await;
                }
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn remove_container(
        &self,
        r: cri::RemoveContainerRequest,
    ) -> Result<cri::RemoveContainerResponse> {
        let c = match self.store.container(&r.container_id) {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Ok(cri::RemoveContainerResponse {}),
            Err(e) => return Err(e),
        };
        // As containerd: a running container is killed first.
        self.stop(&c, Duration::ZERO).await?;
        let id = c.meta.id.clone();
        match self.tasks.delete(NAMESPACE, &id).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.cstate.close_stdin(&id);
        let rec = &c.record.record;
        if !rec.snapshot_key.is_empty() {
            match self
                .snapshots
                .remove(NAMESPACE, &rec.snapshotter, &rec.snapshot_key)
            {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        // The kubelet's log file stays (containerd keeps it too); berthd's
        // own output file of a container without one goes.
        for dir in [self.container_dir(&id), self.output_dir(&id)] {
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(crate::error::io_err(format!("remove {}", dir.display()), e));
            }
        }
        self.store.delete(&id, &c.meta.name)?;
        self.container_event(&c, cri::ContainerEventType::ContainerDeletedEvent);
        Ok(cri::RemoveContainerResponse {})
    }

    /// berthd's own files of a container (the stdin FIFO).
    pub(crate) fn container_dir(&self, id: &str) -> std::path::PathBuf {
        self.state.join("cri").join("containers").join(id)
    }

    fn output_dir(&self, id: &str) -> std::path::PathBuf {
        self.output_root.join(id)
    }

    /// Where the container's output goes (see [`OUTPUT_MAX_SIZE`]): the kubelet's log path, or
    /// (none given, as critest does) a file of berthd's own, which Attach
    /// reads and RemoveContainer deletes — the shim writes output only to
    /// files. On the root's disk, not the state's tmpfs, below the
    /// owner-only `output_root`.
    pub(crate) fn output_log(&self, m: &ContainerMetadata) -> std::path::PathBuf {
        if !m.log_path.is_empty() {
            return m.log_path.clone().into();
        }
        self.output_dir(&m.id).join("output.log")
    }

    pub async fn list_containers(
        &self,
        r: cri::ListContainersRequest,
    ) -> Result<cri::ListContainersResponse> {
        let f = r.filter.unwrap_or_default();
        let containers = self
            .store
            .cri_containers()?
            .iter()
            .filter(|c| matches(c, &f))
            .map(to_container)
            .collect();
        Ok(cri::ListContainersResponse { containers })
    }

    pub async fn container_status(
        &self,
        r: cri::ContainerStatusRequest,
    ) -> Result<cri::ContainerStatusResponse> {
        let c = self.store.container(&r.container_id)?;
        let mut info = HashMap::new();
        if r.verbose {
            let pid = match self.tasks.get(NAMESPACE, &c.meta.id, "").await {
                Ok(p) => p.pid,
                Err(_) => 0,
            };
            let spec: serde_json::Value = c
                .record
                .record
                .spec
                .clone()
                .map(prost_types::Any::from)
                .and_then(|a| serde_json::from_slice(&a.value).ok())
                .unwrap_or_default();
            let v = serde_json::json!({
                "sandboxID": c.meta.sandbox_id,
                "pid": pid,
                "removing": false,
                "snapshotKey": c.record.record.snapshot_key,
                "snapshotter": c.record.record.snapshotter,
                "runtimeType": c.record.record.runtime,
                "config": serde_json::json!({"logPath": c.meta.log_path}),
                "runtimeSpec": spec,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(to_status(&c)),
            info,
        })
    }

    pub async fn update_container_resources(
        &self,
        r: cri::UpdateContainerResourcesRequest,
    ) -> Result<cri::UpdateContainerResourcesResponse> {
        let c = self.store.container(&r.container_id)?;
        let st = state_of(&c.meta);
        if st == cri::ContainerState::ContainerExited {
            return Err(Error::precondition(format!(
                "container {} is not running or created",
                c.meta.id
            )));
        }
        let Some(res) = r.linux else {
            return Ok(cri::UpdateContainerResourcesResponse {});
        };
        self.update_resources(&c, &res, r.annotations).await?;
        Ok(cri::UpdateContainerResourcesResponse {})
    }

    pub async fn reopen_container_log(
        &self,
        r: cri::ReopenContainerLogRequest,
    ) -> Result<cri::ReopenContainerLogResponse> {
        let c = self.store.container(&r.container_id)?;
        if state_of(&c.meta) != cri::ContainerState::ContainerRunning {
            return Err(Error::precondition(format!(
                "container {} is not running",
                c.meta.id
            )));
        }
        self.tasks.reopen_log(NAMESPACE, &c.meta.id).await?;
        Ok(cri::ReopenContainerLogResponse {})
    }

    pub async fn exec_sync(&self, r: cri::ExecSyncRequest) -> Result<cri::ExecSyncResponse> {
        let c = self.store.container(&r.container_id)?;
        if state_of(&c.meta) != cri::ContainerState::ContainerRunning {
            return Err(Error::precondition(format!(
                "container {} is in {} state, not RUNNING",
                c.meta.id,
                state_of(&c.meta).as_str_name()
            )));
        }
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let err = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let capped = |b: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>| {
            Box::new(super::exec::Capped {
                buf: b.clone(),
                limit: super::exec::MAX_SYNC_OUTPUT,
            }) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>
        };
        let code = super::exec::exec(
            &self.tasks,
            &self.containers,
            &self.state.join("cri").join("exec"),
            super::exec::Request {
                ns: NAMESPACE.into(),
                container_id: c.meta.id.clone(),
                cmd: r.cmd,
                tty: false,
                resize: None,
                timeout: (r.timeout > 0)
                    .then(|| Duration::from_secs(u64::try_from(r.timeout).unwrap_or(0))),
                cancel: None,
            },
            super::exec::Io {
                stdin: None,
                stdout: Some(capped(&out)),
                stderr: Some(capped(&err)),
            },
        )
        .await?;
        let take = |b: std::sync::Arc<std::sync::Mutex<Vec<u8>>>| {
            std::mem::take(&mut *b.lock().unwrap_or_else(|e| e.into_inner()))
        };
        Ok(cri::ExecSyncResponse {
            stdout: take(out),
            stderr: take(err),
            exit_code: code,
        })
    }

    /// The container lifecycle events stream of `GetContainerEvents`.
    pub async fn container_events(
        &self,
        _r: cri::GetEventsRequest,
    ) -> Result<BoxStream<'static, Result<cri::ContainerEventResponse>>> {
        Ok(self.cstate.subscribe())
    }
}

#[cfg(test)]
#[path = "container_tests.rs"]
mod tests;
