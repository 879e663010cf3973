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
//! The pod is made by RunPodSandbox on the host network of the private
//! namespace; everything else goes through the CRI too.

mod cri_support;

use berth_proto::cri::{self as c};
use berth_tests::*;
use cri_support::*;
use std::time::{Duration, Instant};

#[test]
fn containers_of_a_pod() {
    if !body_here("containers_of_a_pod") {
        return;
    }
    block_on(containers_of_a_pod_body());
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
    let (client, s) = pod
        .run_running(
            &mut rt,
            pod.config(
                "client",
                &["sh", "-c", "echo out; echo err >&2; exec sleep 3600"],
            ),
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

    // The log at the kubelet's path, in the CRI format; reopened on ask.
    let log = pod.logs.path().join("client/0.log");
    let start = Instant::now();
    let lines = loop {
        let text = std::fs::read(&log).unwrap_or_default();
        let lines: Vec<(&str, bool, String)> = text
            .split_inclusive(|b| *b == b'\n')
            .map(|l| {
                let p = berth_proto::crilog::parse_line(l).expect("a CRI log line");
                let content = String::from_utf8_lossy(&p.content).into_owned();
                (p.stream.as_str(), p.partial, content)
            })
            .collect();
        if lines.len() >= 2 || start.elapsed() > Duration::from_secs(5) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut lines = lines;
    lines.sort();
    assert_eq!(
        lines,
        [
            ("stderr", false, "err\n".into()),
            ("stdout", false, "out\n".into())
        ]
    );
    std::fs::rename(&log, log.with_extension("old")).expect("rotate");
    rt.reopen_container_log(c::ReopenContainerLogRequest {
        container_id: client.clone(),
    })
    .await
    .expect("ReopenContainerLog");
    assert!(log.exists(), "a new log file after the reopen");

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

    // New resources reach the running task's cgroup and the status.
    rt.update_container_resources(c::UpdateContainerResourcesRequest {
        container_id: client.clone(),
        linux: Some(c::LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("UpdateContainerResources");
    let limit = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/k8s.io/{client}/memory.limit_in_bytes"
    ))
    .expect("the container's memory cgroup");
    assert_eq!(limit.trim(), (96u64 << 20).to_string());
    let s = status(&mut rt, &client).await;
    let res = s.resources.and_then(|r| r.linux).expect("resources");
    assert_eq!(res.memory_limit_in_bytes, 96 << 20);

    // Statistics: the running client's, and the pod's with its containers.
    let st = rt
        .container_stats(c::ContainerStatsRequest {
            container_id: client.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    let mem = st.memory.expect("memory of a running container");
    assert!(
        mem.working_set_bytes.expect("working set").value > 0,
        "{mem:?}"
    );
    assert!(
        st.cpu
            .expect("cpu")
            .usage_core_nano_seconds
            .expect("cpu ns")
            .value
            > 0
    );
    assert!(
        st.writable_layer
            .expect("writable layer")
            .inodes_used
            .is_some()
    );
    // The pod's process count is the pids controller's over its infra
    // task and containers (read around the call: it may change meanwhile).
    let pod_containers = list_ids(
        &mut rt,
        c::ContainerFilter {
            pod_sandbox_id: pod.id.clone(),
            ..Default::default()
        },
    )
    .await;
    let pod_pids = || -> u64 {
        let ids = std::fs::read_dir("/sys/fs/cgroup/pids/k8s.io").expect("k8s.io pids cgroup");
        ids.flatten()
            .filter(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                id == pod.id || pod_containers.contains(&id)
            })
            .filter_map(|e| std::fs::read_to_string(e.path().join("pids.current")).ok())
            .map(|n| n.trim().parse::<u64>().expect("pids.current"))
            .sum()
    };
    let before = pod_pids();
    let ps = pod_stats(&mut rt, &pod.id).await;
    let after = pod_pids();
    assert_eq!(ps.containers.len(), 5);
    let count = ps
        .process
        .expect("pod process usage")
        .process_count
        .expect("count")
        .value;
    assert!(
        count >= 2 && (before.min(after)..=before.max(after)).contains(&count),
        "process count {count}, cgroups {before}..{after}"
    );
    let pod_ws = ps
        .memory
        .expect("pod memory")
        .working_set_bytes
        .expect("ws")
        .value;
    assert!(
        pod_ws >= mem.working_set_bytes.expect("ws").value,
        "{pod_ws}"
    );

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
    block_on(restart_body());
}

async fn restart_body() {
    let mut pod = Pod::start().await;
    let mut rt = pod.rt().await;
    let long = pod
        .run(&mut rt, pod.config("long", &["sleep", "3600"]))
        .await;
    let (short, _) = pod
        .run_running(
            &mut rt,
            pod.config("short", &["sh", "-c", "sleep 2; exit 7"]),
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
    // Only the pod's infra task is left.
    let tasks = ok("tasks ls", pod.d.berthctl("k8s.io", &["tasks", "ls", "-q"]));
    assert_eq!(
        tasks.lines().collect::<Vec<_>>(),
        [pod.id.as_str()],
        "{tasks}"
    );
    // The pod goes too; every shim berthd reconnected to ends with its
    // task (each lingers ~100 ms after Shutdown).
    rt.stop_pod_sandbox(c::StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .expect("StopPodSandbox");
    rt.remove_pod_sandbox(c::RemovePodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .expect("RemovePodSandbox");
    let sock = std::path::PathBuf::from(pod.d.address());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !berth_tests::guard::shims_serving(&sock).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = berth_tests::guard::shims_serving(&sock);
    assert!(
        left.is_empty(),
        "shims outlived their deleted tasks: {left:?}"
    );
}
