//! CRI runtime handlers (what a Kubernetes RuntimeClass names): a pod run
//! with handler `runc`, configured as `[cri.runtimes.runc]`, has its infra
//! container and its containers run by runc (found in runc's own state),
//! while a pod of the default handler next to it runs on the built-in
//! runtime; Status lists the handlers with their features; a recursive
//! read-only mount is read-only all the way down on both runtimes, and a
//! container's groups are those its status reports; an
//! unconfigured handler is refused and leaves no pod.

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

    // The handlers the runtime offers: both make recursive read-only
    // mounts (mount_setattr is in this kernel, runc 1.1 lists "rro").
    let handlers: Vec<(String, bool)> = rt
        .status(c::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner()
        .runtime_handlers
        .into_iter()
        .map(|h| {
            let rro = h.features.is_some_and(|f| f.recursive_read_only_mounts);
            (h.name, rro)
        })
        .collect();
    assert_eq!(handlers, [("".into(), true), ("runc".into(), true)]);

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
    let stats = pod_stats(&mut rt, &pod.id).await;
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

    // A recursive read-only mount of a directory with a mount under it:
    // read-only below too, under runc and the built-in runtime alike.
    let host = tempfile::tempdir().expect("tempdir");
    let sub = host.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir sub");
    // This test's own mount namespace (body_here): gone with it.
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .expect("mount a tmpfs under the host path");
    for (pod_id, handler) in [(&pod.id, "runc"), (&default_pod, "")] {
        let mut config = pod.config(&format!("rro{handler}"), &["sleep", "3600"]);
        config.mounts = vec![c::Mount {
            container_path: "/data".into(),
            host_path: host.path().to_string_lossy().into_owned(),
            readonly: true,
            recursive_read_only: true,
            ..Default::default()
        }];
        let id = run_in(&mut rt, pod_id, config, &|| pod.d.log()).await;
        let r = exec_sync(&mut rt, &id, &["touch", "/data/sub/f"], 10)
            .await
            .expect("ExecSync");
        assert_ne!(r.exit_code, 0, "{handler:?}: wrote under an rro mount");
        assert!(
            String::from_utf8_lossy(&r.stderr).contains("Read-only file system"),
            "{handler:?}: {r:?}"
        );
    }
    assert!(std::fs::read_dir(&sub).unwrap().next().is_none());

    // Supplemental groups under both policies: the primary gid and the
    // supplemental ones for the first process and an exec'd one, and in the
    // status. (This image's /etc/group lists root nowhere, so Merge adds
    // nothing here; what Strict leaves out is userdb's and spec_tests'
    // unit tests, and critest's SupplementalGroupsPolicy specs.)
    for (pod_id, handler, log_dir) in [
        (&pod.id, "runc", pod.logs.path()),
        (&default_pod, "", logs.path()),
    ] {
        for (policy, want) in [
            (c::SupplementalGroupsPolicy::Merge, vec![0, 1234]),
            (c::SupplementalGroupsPolicy::Strict, vec![0, 1234]),
        ] {
            let name = format!("groups-{}{handler}", policy.as_str_name().to_lowercase());
            let mut config = pod.config(&name, &["sh", "-c", "id -G; exec sleep 3600"]);
            config.linux = Some(c::LinuxContainerConfig {
                security_context: Some(c::LinuxContainerSecurityContext {
                    run_as_user: Some(c::Int64Value { value: 0 }),
                    supplemental_groups: vec![1234],
                    supplemental_groups_policy: policy as i32,
                    ..Default::default()
                }),
                ..Default::default()
            });
            let id = run_in(&mut rt, pod_id, config, &|| pod.d.log()).await;
            let line = want
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(" ");
            let r = exec_sync(&mut rt, &id, &["id", "-G"], 10)
                .await
                .expect("ExecSync");
            assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), line, "{name}");
            let user = status(&mut rt, &id)
                .await
                .user
                .and_then(|u| u.linux)
                .expect("status user");
            assert_eq!(
                (user.uid, user.gid, user.supplemental_groups),
                (0, 0, want),
                "{name}"
            );
            let log = log_dir.join(&name).join("0.log");
            let first = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                first.ends_with(&format!(" stdout F {line}\n")),
                "{name}: {first:?}"
            );
        }
    }

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
