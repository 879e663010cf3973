//! CRI containers end to end: berthd's RuntimeService driven by the
//! generated tonic client, as the kubelet drives it, inside a private
//! network + mount namespace (tests/src/netns.rs). Checked: two containers
//! of a pod sharing its network (one listens with busybox nc, the other
//! connects to 127.0.0.1), ExecSync output, exit code and timeout, the log
//! at the kubelet's path, the OOMKilled reason under an 8 MiB limit, stop
//! with a timeout when SIGTERM is ignored, status and list filters,
//! remove (idempotent, log kept), the event stream, and a berthd SIGKILL
//! with containers running (still RUNNING after the restart, an exit while
//! it was down recorded).
//!
//! The pod is made through berthd's containerd API (a `k8s.io` record
//! labelled as a CRI sandbox with its metadata, its infra task a busybox
//! `sleep`, on the host's network of the private namespace) until
//! RunPodSandbox lands; everything the containers do goes through the CRI.

use berth_proto::cri::runtime_service_client::RuntimeServiceClient;
use berth_proto::cri::{self as c};
use berth_proto::pb::berth::cri::v1::SandboxMetadata;
use berth_proto::services::containers::v1 as capi;
use berth_proto::services::containers::v1::containers_client::ContainersClient;
use berth_tests::netns::*;
use berth_tests::*;
use prost::Message;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

static SERIAL: Mutex<()> = Mutex::new(());

fn body_here(name: &str) -> bool {
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

type Rt = RuntimeServiceClient<Channel>;

/// A berthd with busybox in `k8s.io` and a pod; the pod's cgroups and the
/// containers' are removed when dropped (after the daemon).
struct Pod {
    d: Daemon,
    id: String,
    image: String,
    logs: tempfile::TempDir,
    _cgroups: Cgroups,
}

struct Cgroups;

impl Drop for Cgroups {
    fn drop(&mut self) {
        remove_cgroups("/k8s.io");
    }
}

const POD_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

impl Pod {
    async fn start() -> Pod {
        // The private namespace's loopback, which the pod's host network is.
        ok(
            "lo up",
            std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .output()
                .expect("run ip"),
        );
        let d = Daemon::start();
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
        let logs = tempfile::tempdir().expect("tempdir");
        // The infra task: a sleeping busybox on the (private) host network.
        ok(
            "run infra",
            d.berthctl(
                "k8s.io",
                &[
                    "run", "-d", "--net", "host", "--name", POD_ID, &image, "sleep", "3600",
                ],
            ),
        );
        let meta = SandboxMetadata {
            id: POD_ID.into(),
            name: "pod_default_uid1_0".into(),
            config: Some(c::PodSandboxConfig {
                metadata: Some(c::PodSandboxMetadata {
                    name: "pod".into(),
                    uid: "uid1".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                hostname: "podhost".into(),
                log_directory: logs.path().to_string_lossy().into_owned(),
                ..Default::default()
            }),
            created_at: 1,
            ..Default::default()
        };
        let mut cc = ContainersClient::new(d.channel().await);
        cc.update(berth_proto::client::request(
            "k8s.io",
            capi::UpdateContainerRequest {
                container: Some(capi::Container {
                    id: POD_ID.into(),
                    labels: [("io.cri-containerd.kind".to_string(), "sandbox".to_string())].into(),
                    extensions: [(
                        "berth.cri".to_string(),
                        prost_types::Any {
                            type_url: "berth.cri.v1.SandboxMetadata".into(),
                            value: meta.encode_to_vec(),
                        },
                    )]
                    .into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![
                        "labels.io.cri-containerd.kind".into(),
                        "extensions.berth.cri".into(),
                    ],
                }),
            },
        ))
        .await
        .expect("make the record a CRI sandbox");
        Pod {
            d,
            id: POD_ID.into(),
            image,
            logs,
            _cgroups: Cgroups,
        }
    }

    async fn rt(&self) -> Rt {
        RuntimeServiceClient::new(self.d.channel().await)
    }

    fn config(&self, name: &str, cmd: &[&str]) -> c::ContainerConfig {
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

    async fn create(&self, rt: &mut Rt, config: c::ContainerConfig) -> String {
        rt.create_container(c::CreateContainerRequest {
            pod_sandbox_id: self.id.clone(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.d.log()))
        .into_inner()
        .container_id
    }

    async fn run(&self, rt: &mut Rt, config: c::ContainerConfig) -> String {
        let id = self.create(rt, config).await;
        rt.start_container(c::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", self.d.log()));
        id
    }
}

async fn status(rt: &mut Rt, id: &str) -> c::ContainerStatus {
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

async fn wait_state(
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

async fn exec_sync(
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

async fn list_ids(rt: &mut Rt, f: c::ContainerFilter) -> Vec<String> {
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

#[test]
fn containers_of_a_pod() {
    if !body_here("containers_of_a_pod") {
        return;
    }
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(containers_of_a_pod_body());
}

async fn containers_of_a_pod_body() {
    let pod = Pod::start().await;
    let mut rt = pod.rt().await;
    let mut events = rt
        .get_container_events(c::GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();

    // Two containers sharing the pod's network.
    let server = pod
        .run(
            &mut rt,
            pod.config(
                "server",
                &["sh", "-c", "echo hello | nc -l -p 8080; sleep 3600"],
            ),
        )
        .await;
    let client = pod
        .run(
            &mut rt,
            pod.config(
                "client",
                &["sh", "-c", "echo out; echo err >&2; exec sleep 3600"],
            ),
        )
        .await;
    let s = wait_state(
        &mut rt,
        &client,
        c::ContainerState::ContainerRunning,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        s.started_at > 0 && s.created_at > 0 && s.finished_at == 0,
        "{s:?}"
    );
    assert_eq!(
        s.log_path,
        pod.logs.path().join("client/0.log").to_string_lossy()
    );
    let mut got = String::new();
    let mut last = None;
    for _ in 0..50 {
        match exec_sync(&mut rt, &client, &["nc", "127.0.0.1", "8080"], 5).await {
            Ok(r) if !r.stdout.is_empty() => {
                got = String::from_utf8_lossy(&r.stdout).into_owned();
                break;
            }
            r => {
                last = Some(r);
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
    assert_eq!(
        got,
        "hello\n",
        "the client reached the server over 127.0.0.1 ({last:?}; server: {:?})",
        std::fs::read_to_string(pod.logs.path().join("server/0.log"))
    );

    // ExecSync: output, exit code, timeout.
    let r = exec_sync(
        &mut rt,
        &client,
        &["sh", "-c", "echo a; echo b >&2; exit 3"],
        0,
    )
    .await
    .expect("ExecSync");
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"a\n"[..], &b"b\n"[..], 3)
    );
    let t = Instant::now();
    let e = exec_sync(&mut rt, &client, &["sleep", "30"], 1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // The same user, env and cwd as the container's process.
    let r = exec_sync(
        &mut rt,
        &client,
        &["sh", "-c", "echo $HOSTNAME $(id -u)"],
        0,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "podhost 0\n");

    // The log at the kubelet's path.
    let log = pod.logs.path().join("client/0.log");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("out") && text.contains("err") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "log {}: {text:?}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // OOM: 8 MiB and a 64 MiB buffer.
    let mut hog = pod.config(
        "hog",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
    );
    hog.linux = Some(c::LinuxContainerConfig {
        resources: Some(c::LinuxContainerResources {
            memory_limit_in_bytes: 8 << 20,
            ..Default::default()
        }),
        security_context: None,
    });
    let hog = pod.run(&mut rt, hog).await;
    let s = wait_state(
        &mut rt,
        &hog,
        c::ContainerState::ContainerExited,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        (s.reason.as_str(), s.exit_code),
        ("OOMKilled", 137),
        "{s:?}"
    );

    // A container that exits by itself.
    let done = pod
        .run(&mut rt, pod.config("done", &["sh", "-c", "exit 0"]))
        .await;
    let s = wait_state(
        &mut rt,
        &done,
        c::ContainerState::ContainerExited,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!((s.reason.as_str(), s.exit_code), ("Completed", 0), "{s:?}");
    assert!(s.finished_at >= s.started_at, "{s:?}");

    // Stop with a timeout: SIGTERM ignored, killed after 2 s.
    let stubborn = pod
        .run(
            &mut rt,
            pod.config(
                "stubborn",
                &["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
            ),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    rt.stop_container(c::StopContainerRequest {
        container_id: stubborn.clone(),
        timeout: 2,
    })
    .await
    .expect("StopContainer");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let s = status(&mut rt, &stubborn).await;
    assert_eq!(
        (s.state, s.exit_code, s.reason.as_str()),
        (c::ContainerState::ContainerExited as i32, 137, "Error")
    );
    // Idempotent.
    rt.stop_container(c::StopContainerRequest {
        container_id: stubborn.clone(),
        timeout: 2,
    })
    .await
    .expect("second StopContainer");

    // Filters.
    let all = list_ids(&mut rt, Default::default()).await;
    assert_eq!(all.len(), 5, "{all:?}");
    let running = list_ids(
        &mut rt,
        c::ContainerFilter {
            state: Some(c::ContainerStateValue {
                state: c::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        },
    )
    .await;
    let mut want = vec![server.clone(), client.clone()];
    want.sort();
    assert_eq!(running, want);
    let by_label = list_ids(
        &mut rt,
        c::ContainerFilter {
            label_selector: [("name".to_string(), "hog".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_label, std::slice::from_ref(&hog));
    let by_prefix = list_ids(
        &mut rt,
        c::ContainerFilter {
            id: client[..12].to_string(),
            pod_sandbox_id: pod.id[..6].to_string(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_prefix, std::slice::from_ref(&client));

    // Remove: the record and rootfs go, the log stays; twice is fine.
    let hog_log = pod.logs.path().join("hog/0.log");
    for _ in 0..2 {
        rt.remove_container(c::RemoveContainerRequest {
            container_id: hog.clone(),
        })
        .await
        .expect("RemoveContainer");
    }
    let e = rt
        .container_status(c::ContainerStatusRequest {
            container_id: hog.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(hog_log.exists(), "the log is the kubelet's to remove");
    let snaps = ok("snapshots", pod.d.berthctl("k8s.io", &["snapshots", "ls"]));
    assert!(!snaps.contains(&hog), "{snaps}");
    // A running container is killed by remove.
    rt.remove_container(c::RemoveContainerRequest {
        container_id: server.clone(),
    })
    .await
    .expect("RemoveContainer of a running one");

    // The events of the hog, in order.
    let mut seen = Vec::new();
    while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_millis(500), events.message())
        .await
        .map(|r| r.transpose())
    {
        if e.container_id == hog {
            seen.push(e.container_event_type);
        }
    }
    use c::ContainerEventType as T;
    assert_eq!(
        seen,
        [
            T::ContainerCreatedEvent,
            T::ContainerStartedEvent,
            T::ContainerStoppedEvent,
            T::ContainerDeletedEvent
        ]
        .map(|t| t as i32)
    );
}

#[test]
fn containers_survive_a_berthd_crash() {
    if !body_here("containers_survive_a_berthd_crash") {
        return;
    }
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(restart_body());
}

async fn restart_body() {
    let mut pod = Pod::start().await;
    let mut rt = pod.rt().await;
    let long = pod
        .run(&mut rt, pod.config("long", &["sleep", "3600"]))
        .await;
    let short = pod
        .run(
            &mut rt,
            pod.config("short", &["sh", "-c", "sleep 2; exit 7"]),
        )
        .await;
    wait_state(
        &mut rt,
        &short,
        c::ContainerState::ContainerRunning,
        Duration::from_secs(5),
    )
    .await;
    pod.d.kill9();
    // `short` exits while berthd is down.
    tokio::time::sleep(Duration::from_secs(4)).await;
    pod.d.restart();
    let mut rt = pod.rt().await;
    let s = status(&mut rt, &long).await;
    assert_eq!(s.state, c::ContainerState::ContainerRunning as i32, "{s:?}");
    let r = exec_sync(&mut rt, &long, &["echo", "alive"], 5)
        .await
        .expect("exec after restart");
    assert_eq!(r.stdout, b"alive\n");
    let s = wait_state(
        &mut rt,
        &short,
        c::ContainerState::ContainerExited,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"), "{s:?}");
    // And the long one still stops and goes.
    rt.stop_container(c::StopContainerRequest {
        container_id: long.clone(),
        timeout: 5,
    })
    .await
    .expect("StopContainer");
    let s = status(&mut rt, &long).await;
    assert_eq!(s.state, c::ContainerState::ContainerExited as i32);
    for id in [&long, &short] {
        rt.remove_container(c::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .expect("RemoveContainer");
    }
    assert!(list_ids(&mut rt, Default::default()).await.is_empty());
}
