//! Attacks from inside CRI pods on berthd's node: an ordinary (default
//! security context) container of one pod, on the CNI bridge with portmap,
//! tries to reach what is the host's or another pod's and not its own.
//! Runs itself again inside `unshare --net --mount` (tests/src/netns.rs).

use berth_proto::cri::runtime_service_client::RuntimeServiceClient;
use berth_proto::cri::{self as c};
use berth_tests::netns::*;
use berth_tests::*;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;
use tonic::transport::Channel;

const PAUSE: &str = "localhost/berth-test/pause:pause";
const GATEWAY: &str = "10.212.0.1";

type Rt = RuntimeServiceClient<Channel>;

struct Cgroups;

impl Drop for Cgroups {
    fn drop(&mut self) {
        remove_cgroups("/k8s.io");
    }
}

fn import(d: &Daemon, tar: &str, base: Option<&str>) -> String {
    let tar = fixtures().join(tar);
    let mut args = vec!["images", "import"];
    if let Some(b) = base {
        args.extend(["--base-name", b]);
    }
    args.push(tar.to_str().expect("utf-8"));
    ok("import", d.berthctl("k8s.io", &args))
}

fn pod_config(name: &str, logs: &std::path::Path, host_port: i32) -> c::PodSandboxConfig {
    c::PodSandboxConfig {
        metadata: Some(c::PodSandboxMetadata {
            name: name.into(),
            namespace: "ns1".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.join(name).to_string_lossy().into_owned(),
        port_mappings: vec![c::PortMapping {
            protocol: c::Protocol::Tcp as i32,
            container_port: 80,
            host_port,
            host_ip: String::new(),
        }],
        linux: Some(c::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// Runs pod `name` with one container running `cmd`: (pod id, container id).
async fn pod(
    rt: &mut Rt,
    image: &str,
    logs: &std::path::Path,
    (name, host_port): (&str, i32),
    cmd: &str,
) -> (String, String) {
    let config = pod_config(name, logs, host_port);
    let pod = rt
        .run_pod_sandbox(c::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let ctr = rt
        .create_container(c::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c::ContainerConfig {
                metadata: Some(c::ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: Some(c::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                command: vec!["sh".into(), "-c".into(), cmd.into()],
                log_path: format!("{name}.log"),
                ..Default::default()
            }),
            sandbox_config: Some(config),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    rt.start_container(c::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .expect("StartContainer");
    (pod, ctr)
}

/// `sh -c script` in container `id`: exit code and output.
async fn sh(rt: &mut Rt, id: &str, script: &str) -> (i32, String) {
    let r = rt
        .exec_sync(c::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    (
        r.exit_code,
        format!(
            "{}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        ),
    )
}

/// Runs `script` on the host side inside network namespace `netns`.
fn in_netns(netns: &std::path::Path, script: &str) -> String {
    ok(
        script,
        Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["sh", "-c", script])
            .output()
            .expect("run nsenter"),
    )
}

#[test]
fn attacks_from_inside_a_pod() {
    if !body_in_private_network("attacks_from_inside_a_pod") {
        return;
    }
    let _cg = Cgroups;
    let conf = tempfile::tempdir().expect("tempdir");
    let net_d = conf.path().join("net.d");
    std::fs::create_dir_all(&net_d).expect("mkdir net.d");
    let d = Daemon::start_with_config(&format!(
        "{}[cri]\nsandbox_image = \"{PAUSE}\"\nrestrict_oom_score_adj = true\n",
        network_config(&net_d)
    ));
    let conflist = pod_conflist(
        "pods",
        "cni-attack0",
        "10.212.0.0/24",
        &d.state().join("cni/networks"),
    );
    std::fs::write(net_d.join("10-pods.conflist"), conflist.to_string()).expect("conflist");
    import(
        &d,
        "busybox-pause-oci.tar",
        Some("localhost/berth-test/pause"),
    );
    import(&d, "busybox-docker.tar", None);
    let image = ok("images ls", d.berthctl("k8s.io", &["images", "ls", "-q"]))
        .lines()
        .find(|l| l.contains("busybox") && !l.contains("pause"))
        .expect("busybox")
        .to_string();
    let logs = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let mut c = RuntimeServiceClient::new(d.channel().await);
        let (victim_pod, victim) = pod(
            &mut c,
            &image,
            logs.path(),
            ("victim", 8082),
            "mkdir -p /tmp/w && echo victim > /tmp/w/index.html && exec httpd -f -p 80 -h /tmp/w",
        )
        .await;
        let (attacker_pod, attacker) =
            pod(&mut c, &image, logs.path(), ("attacker", 8083), "exec sleep 3600").await;
        let victim_ip = pod_ip(&mut c, &victim_pod).await;
        let url = c
            .port_forward(c::PortForwardRequest {
                pod_sandbox_id: victim_pod.clone(),
                port: vec![80],
            })
            .await
            .expect("PortForward")
            .into_inner()
            .url;
        let port = url
            .strip_prefix("http://127.0.0.1:")
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("streaming URL {url}"))
            .to_string();
        let get = |host: &str, port: &str| {
            format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} 2>&1")
        };

        // The probe works: pods reach each other (a flat pod network).
        let (_, out) = sh(&mut c, &attacker, &get(&victim_ip, "80")).await;
        assert!(out.contains("victim"), "pod to pod: {out}");
        // (PodSandboxStats counts that traffic on the victim's eth0.)
        let net = c
            .pod_sandbox_stats(c::PodSandboxStatsRequest {
                pod_sandbox_id: victim_pod.clone(),
            })
            .await
            .expect("PodSandboxStats")
            .into_inner()
            .stats
            .and_then(|s| s.linux?.network)
            .expect("the pod's network usage");
        let eth0 = net.default_interface.clone().expect("eth0");
        let get_u = |v: Option<c::UInt64Value>| v.map_or(0, |v| v.value);
        assert_eq!(eth0.name, "eth0");
        assert!(get_u(eth0.rx_bytes) > 0 && get_u(eth0.tx_bytes) > 0, "{net:?}");
        // The streaming server listens on the host's 127.0.0.1 only: the
        // bridge's address refuses.
        let (_, out) = sh(&mut c, &attacker, &get(GATEWAY, &port)).await;
        assert!(out.contains("refused"), "streaming port via the gateway: {out}");

        // A container with CAP_NET_RAW (default, bit 13) can send a packet
        // for 127.0.0.1 to its gateway; routing inside its namespace does
        // the same here. portmap set route_localnet on the bridge, so the
        // host would accept it.
        let (_, caps) = sh(&mut c, &attacker, "grep CapEff /proc/self/status").await;
        let eff = u64::from_str_radix(caps.split_whitespace().nth(1).expect("CapEff"), 16)
            .expect("hex");
        assert_ne!(eff & (1 << 13), 0, "NET_RAW is a default capability: {caps}");
        let bridge = std::fs::read_to_string("/proc/sys/net/ipv4/conf/cni-attack0/route_localnet")
            .expect("bridge sysctl");
        assert_eq!(bridge.trim(), "1", "portmap sets route_localnet");
        let netns = d.state().join("netns/k8s.io").join(&attacker_pod);
        let route = in_netns(
            &netns,
            &format!(
                "sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.eth0.route_localnet=1; \
                 ip route add 127.0.0.1/32 via {GATEWAY} dev eth0 table 100; \
                 ip rule add to 127.0.0.1 lookup 100 pref 10; \
                 ip rule add lookup local pref 100; ip rule del pref 0; \
                 ip route get 127.0.0.1"
            ),
        );
        assert!(route.contains(&format!("via {GATEWAY} dev eth0")), "{route}");
        let (_, out) = sh(&mut c, &attacker, &get("127.0.0.1", &port)).await;
        assert!(!out.contains("HTTP/1."), "the pod reached the host's 127.0.0.1: {out}");
        let dropped = localnet_drops();
        assert!(dropped > 0, "berthd's rule dropped nothing: {dropped}");

        // Without berthd's rule the same packets get through (what the
        // rule is for): berthd's streaming server answers.
        ok(
            "iptables -D",
            Command::new("iptables")
                .args(["-w", "-D", "INPUT", "-j", "BERTH-LOCALNET"])
                .output()
                .expect("run iptables"),
        );
        // (A try can come back empty on this busy box; the attacker retries.)
        let mut tries = Vec::new();
        for _ in 0..3 {
            let (_, out) = sh(&mut c, &attacker, &get("127.0.0.1", &port)).await;
            let through = out.contains("404 page not found");
            tries.push(out);
            if through {
                break;
            }
        }
        assert!(
            tries.last().is_some_and(|o| o.contains("404 page not found")),
            "without the rule: {tries:?}"
        );
        ok(
            "iptables -I",
            Command::new("iptables")
                .args(["-w", "-I", "INPUT", "-j", "BERTH-LOCALNET"])
                .output()
                .expect("run iptables"),
        );

        // The host's own localhost connection to a published port still
        // works with the rule (conntrack's DNAT).
        let local = SocketAddr::from(([127, 0, 0, 1], 8082));
        let body = http_get(local, "/", Duration::from_secs(10)).expect("127.0.0.1:8082");
        assert_eq!(body.trim(), "victim");

        // No process of another pod or of the host is visible.
        let (_, seen) = sh(
            &mut c,
            &attacker,
            "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done",
        )
        .await;
        for other in ["httpd", "berthd", "containerd-shim", "pause"] {
            assert!(!seen.contains(other), "{other} seen from the pod: {seen}");
        }
        assert!(seen.contains("sleep 3600"), "its own process: {seen}");
        let _ = victim;
    });

    // Other host users: the pods' logs (even in a directory they may
    // traverse, as the kubelet's /var/log/pods is) and berthd's CRI state
    // are closed to them.
    let pod_logs = logs.path().join("victim");
    for dir in [logs.path(), pod_logs.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let log = pod_logs.join("victim.log");
    assert!(log.exists(), "{} missing", log.display());
    let cri_state = d.state().join("cri");
    for target in [log.as_path(), cri_state.as_path()] {
        let out = as_nobody(&["cat", &target.display().to_string()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Permission denied"),
            "nobody read {}: {err}",
            target.display()
        );
    }
    let out = as_nobody(&["ls", &cri_state.display().to_string()]);
    assert!(
        !out.status.success(),
        "nobody listed {}",
        cri_state.display()
    );
}

/// Packets berthd's localnet rule dropped (its chain's counter).
fn localnet_drops() -> u64 {
    let out = ok(
        "iptables -L",
        Command::new("iptables")
            .args(["-w", "-L", "BERTH-LOCALNET", "-n", "-v", "-x"])
            .output()
            .expect("run iptables"),
    );
    out.lines()
        .find(|l| l.contains("DROP"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no DROP rule in BERTH-LOCALNET:\n{out}"))
}

async fn pod_ip(rt: &mut Rt, pod: &str) -> String {
    rt.pod_sandbox_status(c::PodSandboxStatusRequest {
        pod_sandbox_id: pod.into(),
        verbose: false,
    })
    .await
    .expect("PodSandboxStatus")
    .into_inner()
    .status
    .and_then(|s| s.network)
    .map(|n| n.ip)
    .expect("a pod IP")
}
