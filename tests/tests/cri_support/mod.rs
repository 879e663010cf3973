//! The pod the CRI container tests run in, and small RuntimeService
//! helpers (shared by the test files that use them).

use berth_proto::cri::runtime_service_client::RuntimeServiceClient;
use berth_proto::cri::{self as c};
use berth_tests::netns::*;
use berth_tests::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn body_here(name: &str) -> bool {
    if in_private_network() {
        return true;
    }
    if !require_root("containers mount overlay snapshots and join namespaces") {
        return false;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    run_test_in_private_network(name);
    false
}

pub type Rt = RuntimeServiceClient<Channel>;

/// A berthd with busybox in `k8s.io` and a pod; the pod's cgroups and the
/// containers' are removed when dropped (after the daemon).
pub struct Pod {
    pub d: Daemon,
    pub id: String,
    pub image: String,
    pub logs: tempfile::TempDir,
    _cgroups: Cgroups,
}

struct Cgroups;

impl Drop for Cgroups {
    fn drop(&mut self) {
        remove_cgroups("/k8s.io");
    }
}

const PAUSE: &str = "localhost/berth-test/pause:pause";

impl Pod {
    /// A berthd with busybox and the test pause image in `k8s.io`, and a
    /// pod on the (private) host network made by RunPodSandbox.
    pub async fn start() -> Pod {
        Pod::start_with("", "").await
    }

    /// [`Pod::start`] with `config` added to berthd's `[cri]` section and
    /// the pod run with runtime handler `handler`.
    pub async fn start_with(config: &str, handler: &str) -> Pod {
        // This host's root lacks CAP_SYS_RESOURCE: no OOM score below
        // berthd's (containerd's option for such hosts).
        let d = Daemon::start_with_config(&format!(
            "[cri]\nsandbox_image = \"{PAUSE}\"\nrestrict_oom_score_adj = true\n{config}"
        ));
        let tar = fixtures().join("busybox-docker.tar");
        ok(
            "import",
            d.berthctl(
                "k8s.io",
                &["images", "import", tar.to_str().expect("utf-8")],
            ),
        );
        let image = ok("images ls", d.berthctl("k8s.io", &["images", "ls", "-q"]))
            .lines()
            .next()
            .expect("an image")
            .to_string();
        let pause = fixtures().join("busybox-pause-oci.tar");
        ok(
            "import pause",
            d.berthctl(
                "k8s.io",
                &[
                    "images",
                    "import",
                    "--base-name",
                    "localhost/berth-test/pause",
                    pause.to_str().expect("utf-8"),
                ],
            ),
        );
        let logs = tempfile::tempdir().expect("tempdir");
        let config = host_pod_config("pod", logs.path());
        let id = RuntimeServiceClient::new(d.channel().await)
            .run_pod_sandbox(c::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: handler.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", d.log()))
            .into_inner()
            .pod_sandbox_id;
        Pod {
            d,
            id,
            image,
            logs,
            _cgroups: Cgroups,
        }
    }

    pub async fn rt(&self) -> Rt {
        RuntimeServiceClient::new(self.d.channel().await)
    }

    pub fn config(&self, name: &str, cmd: &[&str]) -> c::ContainerConfig {
        c::ContainerConfig {
            metadata: Some(c::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(c::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            labels: [("name".to_string(), name.to_string())].into(),
            log_path: format!("{name}/0.log"),
            ..Default::default()
        }
    }

    pub async fn run(&self, rt: &mut Rt, config: c::ContainerConfig) -> String {
        run_in(rt, &self.id, config, &|| self.d.log()).await
    }

    /// [`Self::run`], then waits (10 s at most) until the container is
    /// seen running: its id and that status.
    pub async fn run_running(
        &self,
        rt: &mut Rt,
        config: c::ContainerConfig,
    ) -> (String, c::ContainerStatus) {
        let id = self.run(rt, config).await;
        let s = wait_state(
            rt,
            &id,
            c::ContainerState::ContainerRunning,
            Duration::from_secs(10),
        )
        .await;
        (id, s)
    }
}

/// A pod named `name` on the host network, logging under `logs`.
pub fn host_pod_config(name: &str, logs: &std::path::Path) -> c::PodSandboxConfig {
    c::PodSandboxConfig {
        metadata: Some(c::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "podhost".into(),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(c::LinuxPodSandboxConfig {
            security_context: Some(c::LinuxSandboxSecurityContext {
                namespace_options: Some(c::NamespaceOption {
                    network: c::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs the async test body `body` in a runtime of its own (the body runs in
/// the re-executed process, see [`body_here`]).
pub fn block_on<F: std::future::Future<Output = ()>>(body: F) {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(body)
}

pub async fn status(rt: &mut Rt, id: &str) -> c::ContainerStatus {
    rt.container_status(c::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("ContainerStatus")
    .into_inner()
    .status
    .expect("status")
}

pub async fn wait_state(
    rt: &mut Rt,
    id: &str,
    want: c::ContainerState,
    limit: Duration,
) -> c::ContainerStatus {
    let start = Instant::now();
    loop {
        let s = status(rt, id).await;
        if s.state == want as i32 {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "{id} never reached {want:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn exec_sync(
    rt: &mut Rt,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<c::ExecSyncResponse, tonic::Status> {
    rt.exec_sync(c::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

pub async fn list_ids(rt: &mut Rt, f: c::ContainerFilter) -> Vec<String> {
    let mut ids: Vec<String> = rt
        .list_containers(c::ListContainersRequest { filter: Some(f) })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort();
    ids
}

/// Creates and starts a container in pod `pod_id` (any pod of the
/// daemon); a failure panics with `log()` (the daemon's log).
pub async fn run_in(
    rt: &mut Rt,
    pod_id: &str,
    config: c::ContainerConfig,
    log: &dyn Fn() -> String,
) -> String {
    let name = config.metadata.as_ref().map(|m| m.name.clone());
    let id = rt
        .create_container(c::CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer {name:?}: {e}\n{}", log()))
        .into_inner()
        .container_id;
    rt.start_container(c::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer {name:?}: {e}\n{}", log()));
    id
}

/// PodSandboxStats' Linux part for pod `id`.
pub async fn pod_stats(rt: &mut Rt, id: &str) -> c::LinuxPodSandboxStats {
    rt.pod_sandbox_stats(c::PodSandboxStatsRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("PodSandboxStats")
    .into_inner()
    .stats
    .and_then(|s| s.linux)
    .expect("linux stats")
}
