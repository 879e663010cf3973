//! CRI runtime handlers (what a Kubernetes RuntimeClass names): a pod run
//! with handler `runc`, configured as `[cri.runtimes.runc]`, has its infra
//! container and its containers run by runc (found in runc's own state),
//! while a pod of the default handler next to it runs on the built-in
//! runtime; Status lists the handlers; an unconfigured handler is refused
//! and leaves no pod.

// Shared with cri_containers, which uses the helpers this file does not.
#[allow(dead_code)]
mod cri_support;

use berth_proto::cri::{self as c};
use berth_tests::peer;
use cri_support::*;
use std::path::Path;
use std::process::Command;

#[test]
fn runtime_handlers_pick_the_runtime() {
    if !body_here("runtime_handlers_pick_the_runtime") {
        return;
    }
    block_on(body());
}

/// What runc's state under berthd's `<state>/runc/k8s.io` says of `id`
/// ("absent" when runc does not know it).
fn runc_status(runc: &Path, state: &Path, id: &str) -> String {
    let out = Command::new(runc)
        .arg("--root")
        .arg(state.join("runc/k8s.io"))
        .args(["state", id])
        .output()
        .expect("run runc");
    if !out.status.success() {
        return "absent".into();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runc state json");
    v["status"].as_str().unwrap_or("?").to_string()
}

async fn body() {
    let Some(runc) = peer("runc") else {
        return;
    };
    let extra = format!(
        "[cri.runtimes.runc]\nruntime_binary = \"{}\"\n",
        runc.display()
    );
    let pod = Pod::start_with(&extra, "runc").await;
    let mut rt = pod.rt().await;
    let state = pod.d.state();

    // The handlers the runtime offers.
    let handlers: Vec<String> = rt
        .status(c::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner()
        .runtime_handlers
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(handlers, ["", "runc"]);

    // The pod and its container run under runc.
    let (ctr, _) = pod
        .run_running(&mut rt, pod.config("sleeper", &["sleep", "3600"]))
        .await;
    assert_eq!(runc_status(&runc, &state, &pod.id), "running");
    assert_eq!(runc_status(&runc, &state, &ctr), "running");
    let st = rt
        .pod_sandbox_status(c::PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(st.runtime_handler, "runc");
    // A host-network pod has no network usage of its own.
    let stats = rt
        .pod_sandbox_stats(c::PodSandboxStatsRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .and_then(|s| s.linux)
        .expect("linux stats");
    assert!(stats.network.is_none(), "{:?}", stats.network);

    // A pod of the default handler: the built-in runtime, runc knows
    // nothing of it.
    let logs = tempfile::tempdir().expect("tempdir");
    let default_pod = rt
        .run_pod_sandbox(c::RunPodSandboxRequest {
            config: Some(host_pod_config("plain", logs.path())),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(runc_status(&runc, &state, &default_pod), "absent");
    let listed: Vec<(String, String)> = rt
        .list_pod_sandbox(c::ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .into_iter()
        .map(|p| (p.id, p.runtime_handler))
        .collect();
    assert!(
        listed.contains(&(pod.id.clone(), "runc".into())),
        "{listed:?}"
    );
    assert!(
        listed.contains(&(default_pod.clone(), String::new())),
        "{listed:?}"
    );

    // A handler nobody configured: refused, naming what to add; no pod.
    let e = rt
        .run_pod_sandbox(c::RunPodSandboxRequest {
            config: Some(host_pod_config("kata", logs.path())),
            runtime_handler: "kata".into(),
        })
        .await
        .expect_err("kata is not configured");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("[cri.runtimes.kata]"), "{e:?}");
    let pods = rt
        .list_pod_sandbox(c::ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .len();
    assert_eq!(pods, 2);

    // Stop and remove through runc: nothing of it is left in runc's state.
    for id in [&pod.id, &default_pod] {
        rt.stop_pod_sandbox(c::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("StopPodSandbox");
        rt.remove_pod_sandbox(c::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("RemovePodSandbox");
    }
    assert_eq!(runc_status(&runc, &state, &pod.id), "absent");
    assert_eq!(runc_status(&runc, &state, &ctr), "absent");
}
