//! Pod start latency over the CRI v1 RuntimeService: the time from
//! RunPodSandbox through CreateContainer to StartContainer returning, for
//! berthd and for containerd's CRI plugin (+ runc) when installed. Both get
//! the same bridge + portmap + loopback conflist, the same images in
//! `k8s.io` and the same pod and container configs. Must run inside the
//! private network namespace ([`crate::netns::private_network`]): the
//! bridge and the pods' addresses are made there.

use crate::netns::CNI_BIN_DIR;
use crate::{Daemon, fixtures, ok, peer, remove_cgroups};
use berth_proto::cri::runtime_service_client::RuntimeServiceClient;
use berth_proto::cri::{self as c};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Pods timed per daemon (after two warm-up ones: the first also makes the
/// bridge and loads the plugins into the page cache).
pub const PODS: usize = 15;
const WARMUP: usize = 2;
const PAUSE_BASE: &str = "localhost/berth-test/pause";
const PAUSE: &str = "localhost/berth-test/pause:pause";
const BUSYBOX: &str = "docker.io/library/busybox:latest";
/// Both daemons' pods go under this cgroup, removed after each daemon.
const CGROUP_PARENT: &str = "/berth-bench-pods";
/// Plugins of the conflist (and loopback, which containerd runs itself).
const PLUGINS: [&str; 4] = ["bridge", "host-local", "portmap", "loopback"];

type Rt = RuntimeServiceClient<Channel>;

/// Medians in milliseconds of one daemon's pod starts.
#[derive(Debug, Clone, Copy)]
pub struct PodFigures {
    pub sandbox_ms: f64,
    pub container_ms: f64,
    pub total_ms: f64,
}

/// A temp directory with the conflist both daemons use (`net.d`) and
/// host-local's reservations (`ipam`, not the host's /var/lib/cni).
pub struct Network {
    dir: tempfile::TempDir,
}

impl Network {
    pub fn new() -> Network {
        let dir = tempfile::tempdir().expect("tempdir");
        let net_d = dir.path().join("net.d");
        std::fs::create_dir_all(&net_d).expect("mkdir net.d");
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "bench-pods",
            "plugins": [
                {
                    "type": "bridge", "bridge": "bench-pods0", "isGateway": true,
                    "ipMasq": true, "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": "10.211.0.0/16"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": dir.path().join("ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "loopback"},
            ],
        });
        std::fs::write(net_d.join("10-bench-pods.conflist"), conflist.to_string())
            .expect("write conflist");
        Network { dir }
    }

    pub fn conf_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("net.d")
    }
}

impl Default for Network {
    fn default() -> Self {
        Network::new()
    }
}

/// Why pods cannot be benchmarked here, or None.
pub fn prerequisites() -> Option<String> {
    PLUGINS
        .iter()
        .find(|p| !Path::new(CNI_BIN_DIR).join(p).exists())
        .map(|p| format!("CNI plugin {CNI_BIN_DIR}/{p} is missing"))
}

/// Removes the pods' cgroups when a daemon's run ends, failed or not.
struct Cgroups;

impl Drop for Cgroups {
    fn drop(&mut self) {
        remove_cgroups(CGROUP_PARENT);
    }
}

fn pod_config(i: usize, logs: &Path) -> c::PodSandboxConfig {
    c::PodSandboxConfig {
        metadata: Some(c::PodSandboxMetadata {
            name: format!("bench{i}"),
            uid: format!("uid-bench{i}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: format!("bench{i}"),
        log_directory: logs.join(format!("pod{i}")).to_string_lossy().into_owned(),
        linux: Some(c::LinuxPodSandboxConfig {
            cgroup_parent: CGROUP_PARENT.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config() -> c::ContainerConfig {
    c::ContainerConfig {
        metadata: Some(c::ContainerMetadata {
            name: "sleep".into(),
            attempt: 0,
        }),
        image: Some(c::ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "sleep/0.log".into(),
        ..Default::default()
    }
}

/// Connects to `sock` once its CRI answers (containerd's plugin refuses
/// calls until it has initialised).
async fn connect(sock: &Path) -> Result<Rt, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match berth_proto::client::connect(&sock.to_string_lossy()).await {
            Ok(ch) => {
                let mut rt = RuntimeServiceClient::new(ch);
                match rt.version(c::VersionRequest::default()).await {
                    Ok(_) => return Ok(rt),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(format!(
                "the CRI at {} never answered: {last}",
                sock.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One pod start: (RunPodSandbox, CreateContainer + StartContainer).
async fn start_pod(rt: &mut Rt, i: usize, logs: &Path) -> Result<(Duration, Duration), String> {
    let config = pod_config(i, logs);
    let t = Instant::now();
    let pod = rt
        .run_pod_sandbox(c::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox: {e}"))?
        .into_inner()
        .pod_sandbox_id;
    let sandbox = t.elapsed();
    let id = rt
        .create_container(c::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config()),
            sandbox_config: Some(config),
        })
        .await
        .map_err(|e| format!("CreateContainer: {e}"))?
        .into_inner()
        .container_id;
    rt.start_container(c::StartContainerRequest { container_id: id })
        .await
        .map_err(|e| format!("StartContainer: {e}"))?;
    let total = t.elapsed();
    Ok((sandbox, total - sandbox))
}

/// Stops and removes every pod and container (untimed, after each pod and
/// after a failure).
async fn remove_all(rt: &mut Rt) -> Result<(), String> {
    let containers = rt
        .list_containers(c::ListContainersRequest { filter: None })
        .await
        .map_err(|e| format!("ListContainers: {e}"))?
        .into_inner()
        .containers;
    for ct in containers {
        rt.stop_container(c::StopContainerRequest {
            container_id: ct.id.clone(),
            timeout: 0,
        })
        .await
        .map_err(|e| format!("StopContainer: {e}"))?;
        rt.remove_container(c::RemoveContainerRequest {
            container_id: ct.id,
        })
        .await
        .map_err(|e| format!("RemoveContainer: {e}"))?;
    }
    let pods = rt
        .list_pod_sandbox(c::ListPodSandboxRequest { filter: None })
        .await
        .map_err(|e| format!("ListPodSandbox: {e}"))?
        .into_inner()
        .items;
    for p in pods {
        rt.stop_pod_sandbox(c::StopPodSandboxRequest {
            pod_sandbox_id: p.id.clone(),
        })
        .await
        .map_err(|e| format!("StopPodSandbox: {e}"))?;
        rt.remove_pod_sandbox(c::RemovePodSandboxRequest {
            pod_sandbox_id: p.id,
        })
        .await
        .map_err(|e| format!("RemovePodSandbox: {e}"))?;
    }
    Ok(())
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

/// Starts `PODS` pods (after the warm-up ones) on the CRI at `sock`, each
/// removed before the next; everything is removed even on failure.
fn measure(sock: &Path) -> Result<PodFigures, String> {
    let logs = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut rt = connect(sock).await?;
        let (mut sandbox, mut container, mut total) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..WARMUP + PODS {
            let started = start_pod(&mut rt, i, logs.path()).await;
            let removed = remove_all(&mut rt).await;
            let (s, c) = started?;
            removed?;
            if i >= WARMUP {
                sandbox.push(s);
                container.push(c);
                total.push(s + c);
            }
        }
        Ok(PodFigures {
            sandbox_ms: median_ms(sandbox),
            container_ms: median_ms(container),
            total_ms: median_ms(total),
        })
    })
}

/// berthd with its built-in runtime.
pub fn berthd(net: &Network) -> PodFigures {
    let _cg = Cgroups;
    // This host's root may lack CAP_SYS_RESOURCE: no OOM score below
    // berthd's (the pause container asks for -998).
    let d = Daemon::start_with_config(&format!(
        "{}[cri]\nsandbox_image = \"{PAUSE}\"\nrestrict_oom_score_adj = true\n",
        crate::netns::network_config(&net.conf_dir())
    ));
    let import = |args: &[&str]| ok("berthctl images import", d.berthctl("k8s.io", args));
    let fx = fixtures();
    import(&[
        "images",
        "import",
        fx.join("busybox-docker.tar").to_str().expect("utf-8"),
    ]);
    import(&[
        "images",
        "import",
        "--base-name",
        PAUSE_BASE,
        fx.join("busybox-pause-oci.tar").to_str().expect("utf-8"),
    ]);
    measure(&d.sock).unwrap_or_else(|e| panic!("berthd pods: {e}\n{}", d.log()))
}

/// containerd's CRI plugin with runc, or why it cannot be measured.
pub fn containerd(net: &Network) -> Result<PodFigures, String> {
    let missing = |p: &str| format!("{p} is not installed");
    let binary = peer("containerd").ok_or_else(|| missing("containerd"))?;
    peer("containerd-shim-runc-v2").ok_or_else(|| missing("containerd-shim-runc-v2"))?;
    peer("runc").ok_or_else(|| missing("runc"))?;
    let ctr = peer("ctr").ok_or_else(|| missing("ctr (to import the images)"))?;
    let _cg = Cgroups;
    let cd = crate::containerd::Containerd::start_cri(
        &binary,
        &format!(
            "[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{PAUSE}\"\n  \
             restrict_oom_score_adj = true\n  netns_mounts_under_state_dir = true\n\
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"{CNI_BIN_DIR}\"\n  \
             conf_dir = \"{}\"\n",
            net.conf_dir().display()
        ),
    );
    // Shims outlive containerd: kill any a failed run leaves (dropped
    // before `cd`, while containerd still runs).
    struct Shims<'a>(&'a crate::containerd::Containerd);
    impl Drop for Shims<'_> {
        fn drop(&mut self) {
            crate::guard::after_daemon(&self.0.sock, self.0.dir.path());
        }
    }
    let _shims = Shims(&cd);
    let import = |args: &[&str]| {
        let out = Command::new(&ctr)
            .arg("--address")
            .arg(&cd.sock)
            .args(["-n", "k8s.io", "images", "import"])
            .args(args)
            .output()
            .expect("run ctr");
        ok("ctr images import", out);
    };
    let fx = fixtures();
    import(&[fx.join("busybox-docker.tar").to_str().expect("utf-8")]);
    import(&[
        "--base-name",
        PAUSE_BASE,
        fx.join("busybox-pause-oci.tar").to_str().expect("utf-8"),
    ]);
    Ok(measure(&cd.sock).unwrap_or_else(|e| panic!("containerd pods: {e}\n{}", cd.log())))
}

/// Runs both and prints the rows (berthd ms, containerd ms, ratio).
pub fn bench() {
    if let Some(why) = prerequisites() {
        println!("\npod start over the CRI: not measured: {why}");
        return;
    }
    assert!(
        crate::netns::in_private_network(),
        "the pod bench makes a bridge: run it inside netns::private_network"
    );
    let net = Network::new();
    let b = berthd(&net);
    let cd = containerd(&net);
    println!();
    println!(
        "pod start over the CRI (median of {PODS}; bridge + portmap + loopback CNI, private netns)"
    );
    println!(
        "{:<34} {:>10} {:>14} {:>8}",
        "phase", "berthd ms", "containerd ms", "ratio"
    );
    let row = |name: &str, b: f64, c: Option<f64>| match c {
        Some(c) => println!("{name:<34} {b:>10.1} {c:>14.1} {:>8.2}", c / b),
        None => println!("{name:<34} {b:>10.1} {:>14} {:>8}", "n/a", "n/a"),
    };
    let c = cd.as_ref().ok();
    row("RunPodSandbox", b.sandbox_ms, c.map(|f| f.sandbox_ms));
    row(
        "CreateContainer + StartContainer",
        b.container_ms,
        c.map(|f| f.container_ms),
    );
    row("pod start (all three)", b.total_ms, c.map(|f| f.total_ms));
    match cd {
        Ok(_) => println!(
            "ratio = containerd / berthd; berthd's built-in runtime, containerd 1.6 with runc"
        ),
        Err(why) => println!("containerd: n/a: {why}"),
    }
}
