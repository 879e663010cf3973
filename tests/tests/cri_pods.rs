//! CRI pod sandboxes end to end: a real berthd serving the CRI v1
//! RuntimeService on its socket, driven through the generated tonic
//! client, with Debian's CNI plugins. Runs itself again inside
//! `unshare --net --mount` (tests/src/netns.rs) like network_e2e; says
//! SKIPPED without root, the plugins or the tools.
//!
//! What is checked: NetworkReady false until a conflist exists; a pod with
//! a published port and DNS options (its IP, resolv.conf, hosts, hostname
//! seen from inside, the port answered from the host side); a host-network
//! pod; list filters; SIGKILL of berthd with pods running (same state, same
//! IPs, the port still answers); stop (network gone, record kept,
//! idempotent); remove (idempotent; no netns, IP, iptables rule, cgroup,
//! snapshot, record or pod file left). And that the sandbox image berthd
//! pulls (from a local registry through a `hosts.toml` mirror) is pinned,
//! with the records PullImage makes.

use berth_proto::cri;
use berth_proto::cri::runtime_service_client::RuntimeServiceClient;
use berth_tests::netns::*;
use berth_tests::*;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;

const PAUSE: &str = "localhost/berth-test/pause:pause";
const CGROUP_PARENT: &str = "/berth-cri-pods-test";

/// One test at a time: each cleans up the cgroups under the same parents.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn body_here(name: &str) -> bool {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    body_in_private_network(name)
}

struct Cgroups;

impl Drop for Cgroups {
    fn drop(&mut self) {
        remove_cgroups(CGROUP_PARENT);
        remove_cgroups("/k8s.io");
    }
}

fn ctl(d: &Daemon, args: &[&str]) -> String {
    ok(
        &format!("berthctl {}", args.join(" ")),
        berthctl_at_default_net(&d.sock, d.dir.path(), "k8s.io", args)
            .output()
            .expect("run berthctl"),
    )
}

fn pod_config(name: &str, labels: &[(&str, &str)]) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            namespace: "ns1".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: HashMap::from([("note".to_string(), name.to_string())]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: CGROUP_PARENT.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `config` on the host's network (here the private namespace's).
fn host_network(mut config: cri::PodSandboxConfig) -> cri::PodSandboxConfig {
    config.linux.get_or_insert_default().security_context =
        Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
    config
}

async fn run(c: &mut RuntimeServiceClient<Channel>, config: cri::PodSandboxConfig) -> String {
    c.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    })
    .await
    .expect("RunPodSandbox")
    .into_inner()
    .pod_sandbox_id
}

async fn status(c: &mut RuntimeServiceClient<Channel>, id: &str) -> cri::PodSandboxStatus {
    c.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: true,
    })
    .await
    .expect("PodSandboxStatus")
    .into_inner()
    .status
    .expect("status")
}

async fn list(c: &mut RuntimeServiceClient<Channel>, f: cri::PodSandboxFilter) -> Vec<String> {
    let mut ids: Vec<String> = c
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(f) })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    ids.sort();
    ids
}

async fn network_ready(c: &mut RuntimeServiceClient<Channel>) -> cri::RuntimeCondition {
    c.status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner()
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady condition")
}

const READY: i32 = cri::PodSandboxState::SandboxReady as i32;
const NOTREADY: i32 = cri::PodSandboxState::SandboxNotready as i32;

/// The URL of a port-forward to `pod`, retried for a while: berthd starts
/// its streaming server after restoring the pods.
async fn streaming_url(c: &mut RuntimeServiceClient<Channel>, pod: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.to_string(),
                port: vec![80],
            })
            .await;
        match r {
            Ok(r) => return r.into_inner().url,
            Err(e)
                if e.code() == tonic::Code::Unavailable && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("PortForward after restart: {e:?}"),
        }
    }
}

/// Cgroup directories of pod `id` under the test's parent, any hierarchy.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let rel = format!("{}/{id}", CGROUP_PARENT.trim_start_matches('/'));
    let mut out = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = h.path().join(&rel);
        if p.is_dir() {
            out.push(p);
        }
    }
    out
}

#[test]
fn pods_end_to_end() {
    if !body_here("pods_end_to_end") {
        return;
    }
    let _cg = Cgroups;
    let conf = tempfile::tempdir().expect("tempdir");
    let mut d = Daemon::start_with_config(&format!(
        // This host's root lacks CAP_SYS_RESOURCE, so OOM scores below
        // berthd's cannot be set (as containerd's option for such hosts).
        "{}[cri]\nsandbox_image = \"{PAUSE}\"\nrestrict_oom_score_adj = true\n",
        network_config(&conf.path().join("net.d"))
    ));
    let pause = fixtures().join("busybox-pause-oci.tar");
    let out = ctl(
        &d,
        &[
            "images",
            "import",
            "--base-name",
            "localhost/berth-test/pause",
            pause.to_str().expect("utf-8"),
        ],
    );
    assert!(out.contains(PAUSE), "{out}");
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let mut c = RuntimeServiceClient::new(d.channel().await);
        let v = c
            .version(cri::VersionRequest::default())
            .await
            .expect("Version")
            .into_inner();
        assert_eq!((v.runtime_name.as_str(), v.runtime_api_version.as_str()), ("berth", "v1"));
        let cfg = c
            .runtime_config(cri::RuntimeConfigRequest {})
            .await
            .expect("RuntimeConfig")
            .into_inner();
        assert_eq!(
            cfg.linux.expect("linux").cgroup_driver,
            cri::CgroupDriver::Cgroupfs as i32
        );

        // No conflist yet: not network-ready, and a pod cannot run.
        let nr = network_ready(&mut c).await;
        assert!(!nr.status && nr.reason == "NetworkPluginNotReady", "{nr:?}");
        assert!(nr.message.contains("cni plugin not initialized"), "{nr:?}");
        let e = c
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod_config("early", &[])),
                runtime_handler: String::new(),
            })
            .await
            .expect_err("no network yet");
        assert!(e.message().contains("cni plugin not initialized"), "{e:?}");
        assert!(list(&mut c, Default::default()).await.is_empty());
        let baseline = LeakCounts::now(&d.state());
        assert!(baseline.none(), "{baseline}");

        // A conflist as a cluster's network plugin installs one.
        let net_d = conf.path().join("net.d");
        std::fs::create_dir_all(&net_d).expect("mkdir net.d");
        let conflist = pod_conflist(
            "pods",
            "cni-pods0",
            "10.210.0.0/24",
            &d.state().join("cni/networks"),
        );
        std::fs::write(net_d.join("10-pods.conflist"), conflist.to_string()).expect("conflist");
        let nr = network_ready(&mut c).await;
        assert!(nr.status, "{nr:?}");

        // A pod publishing 8081 -> 80 (and a port without host port: none),
        // with DNS options.
        let mut web_cfg = pod_config("web", &[("app", "web"), ("tier", "front")]);
        web_cfg.dns_config = Some(cri::DnsConfig {
            servers: vec!["10.210.0.53".into()],
            searches: vec!["ns1.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        });
        web_cfg.port_mappings = vec![
            cri::PortMapping {
                protocol: cri::Protocol::Tcp as i32,
                container_port: 80,
                host_port: 8081,
                host_ip: String::new(),
            },
            cri::PortMapping {
                protocol: cri::Protocol::Tcp as i32,
                container_port: 81,
                host_port: 0,
                host_ip: String::new(),
            },
        ];
        let web = run(&mut c, web_cfg.clone()).await;
        // The same name again is refused while the pod exists.
        let e = c
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(web_cfg),
                runtime_handler: String::new(),
            })
            .await
            .expect_err("name reserved");
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        let st = status(&mut c, &web).await;
        assert_eq!(st.state, READY);
        let web_ip: Ipv4Addr = st.network.as_ref().expect("network").ip.parse().expect("ip");
        assert_eq!(web_ip.octets()[..3], [10, 210, 0], "{web_ip}");
        assert_eq!(st.labels["app"], "web");
        assert_eq!(st.annotations["note"], "web");
        assert_eq!(st.metadata.as_ref().expect("metadata").name, "web");
        assert!(st.created_at > 0);
        let inside = |args: &[&str]| {
            let mut v = vec!["tasks", "exec", web.as_str()];
            v.extend_from_slice(args);
            ctl(&d, &v)
        };
        assert_eq!(
            inside(&["cat", "/etc/resolv.conf"]),
            "search ns1.svc.cluster.local\nnameserver 10.210.0.53\noptions ndots:5\n"
        );
        assert_eq!(inside(&["hostname"]).trim(), "web-host");
        assert_eq!(inside(&["cat", "/etc/hostname"]).trim(), "web-host");
        assert!(inside(&["cat", "/etc/hosts"]).contains("localhost"));
        let addr = inside(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
        assert!(addr.contains(&format!("inet {web_ip}/")), "{addr}");
        assert!(!cgroup_dirs(&web).is_empty(), "no cgroup under {CGROUP_PARENT}");
        // The plugins got the pod's CNI_ARGS (kept with the cached result).
        let cached: String = std::fs::read_dir(d.state().join("cni/results/pods"))
            .expect("results cache")
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        for want in ["K8S_POD_NAME", "\"web\"", "K8S_POD_INFRA_CONTAINER_ID", &web] {
            assert!(cached.contains(want), "{want} not in {cached}");
        }
        inside(&[
            "--detach",
            "sh",
            "-c",
            "mkdir -p /dev/www && echo hello-pod > /dev/www/index.html && exec httpd -f -p 80 -h /dev/www",
        ]);
        let published = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 210, 0, 1)), 8081);
        let body = http_get(published, "/", Duration::from_secs(10)).expect("published port");
        assert_eq!(body.trim(), "hello-pod");

        // A second networked pod and a host-network one.
        let db = run(&mut c, pod_config("db", &[("app", "db")])).await;
        let hostpod = run(&mut c, host_network(pod_config("hostpod", &[("app", "web")]))).await;
        let st = status(&mut c, &hostpod).await;
        assert_eq!(st.state, READY);
        assert_eq!(st.network.expect("network").ip, "");
        let ns = st.linux.expect("linux").namespaces.expect("ns").options.expect("opts");
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
        let db_ip = status(&mut c, &db).await.network.expect("network").ip;
        assert!(db_ip.starts_with("10.210.0."), "{db_ip}");

        // Listing and its filters.
        let mut all = vec![web.clone(), db.clone(), hostpod.clone()];
        all.sort();
        assert_eq!(list(&mut c, Default::default()).await, all);
        let by_label = cri::PodSandboxFilter {
            label_selector: HashMap::from([("app".to_string(), "web".to_string())]),
            ..Default::default()
        };
        let mut want = vec![web.clone(), hostpod.clone()];
        want.sort();
        assert_eq!(list(&mut c, by_label).await, want);
        let by_prefix = cri::PodSandboxFilter {
            id: web[..12].to_string(),
            ..Default::default()
        };
        assert_eq!(list(&mut c, by_prefix).await, std::slice::from_ref(&web));
        let notready = cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue { state: NOTREADY }),
            ..Default::default()
        };
        assert!(list(&mut c, notready.clone()).await.is_empty());
        // The infra containers are containerd containers in k8s.io.
        let ls = ctl(&d, &["containers", "ls", "-q"]);
        for id in &all {
            assert!(ls.lines().any(|l| l == id), "{id} not in {ls}");
        }
        if let Some(ctr) = ["/usr/bin/ctr", "/usr/local/bin/ctr"]
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
        {
            let out = d.ctr(ctr, "k8s.io", &["containers", "ls", "-q"]);
            let text = String::from_utf8_lossy(&out.stdout);
            for id in &all {
                assert!(text.lines().any(|l| l == id), "ctr: {id} not in {text}");
            }
        }

        // berthd crashes with the pods running: nothing is lost.
        drop(c);
        d.crash_and_restart();
        let mut c = RuntimeServiceClient::new(d.channel().await);
        assert_eq!(list(&mut c, Default::default()).await, all);
        let st = status(&mut c, &web).await;
        assert_eq!(st.state, READY);
        assert_eq!(st.network.expect("network").ip, web_ip.to_string());
        assert_eq!(status(&mut c, &db).await.network.expect("network").ip, db_ip);
        assert_eq!(status(&mut c, &hostpod).await.state, READY);
        let body = http_get(published, "/", Duration::from_secs(10)).expect("port after restart");
        assert_eq!(body.trim(), "hello-pod");
        // The restarted berthd serves streaming again (on 127.0.0.1, now
        // that the namespace has the pods' bridge address too); it starts
        // after the pods are restored, so it may take a moment.
        let url = streaming_url(&mut c, &web).await;
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");

        // berthd down while db's infra process dies: after the restart db
        // is NOTREADY and its network is gone; the others are untouched.
        let info = c
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: db.clone(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner()
            .info;
        let info: serde_json::Value = serde_json::from_str(&info["info"]).expect("info json");
        let db_pid = i32::try_from(info["pid"].as_i64().expect("pid")).expect("pid fits");
        assert!(db_pid > 0, "{info}");
        let db_netns = d.state().join("netns/k8s.io").join(&db);
        assert!(db_netns.exists());
        drop(c);
        d.kill9();
        // SAFETY: signalling the pod's infra process by its pid.
        assert_eq!(unsafe { libc::kill(db_pid, libc::SIGKILL) }, 0);
        d.restart();
        let mut c = RuntimeServiceClient::new(d.channel().await);
        assert_eq!(status(&mut c, &db).await.state, NOTREADY);
        assert!(!db_netns.exists(), "db's netns left after restart");
        assert_eq!(status(&mut c, &web).await.state, READY);
        let body = http_get(published, "/", Duration::from_secs(10)).expect("port after restart");
        assert_eq!(body.trim(), "hello-pod");

        // Stop: the network goes, the record stays; again is fine, and so
        // is an id that was never there.
        let netns = d.state().join("netns/k8s.io").join(&web);
        assert!(netns.exists());
        for _ in 0..2 {
            c.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: web.clone(),
            })
            .await
            .expect("StopPodSandbox");
        }
        let st = status(&mut c, &web).await;
        assert_eq!(st.state, NOTREADY);
        assert_eq!(st.network.expect("network").ip, "");
        assert!(!netns.exists());
        let mut want = vec![web.clone(), db.clone()];
        want.sort();
        assert_eq!(list(&mut c, notready).await, want);
        assert!(http_get(published, "/", Duration::from_secs(1)).is_err());
        assert!(cgroup_dirs(&web).is_empty(), "{:?}", cgroup_dirs(&web));
        c.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: "0123456789abcdef-never-was".into(),
        })
        .await
        .expect("stop of an unknown pod");

        // Remove (db and hostpod still running: stopped first), twice.
        for id in [&web, &db, &hostpod] {
            for _ in 0..2 {
                c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .expect("RemovePodSandbox");
            }
            let e = c
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: false,
                })
                .await
                .expect_err("removed");
            assert_eq!(e.code(), tonic::Code::NotFound);
        }
        assert!(list(&mut c, Default::default()).await.is_empty());
        assert_eq!(ctl(&d, &["containers", "ls", "-q"]).trim(), "");
        assert_eq!(ctl(&d, &["tasks", "ls", "-q"]).trim(), "");
        let snaps = ctl(&d, &["snapshots", "ls"]);
        for id in &all {
            assert!(!snaps.contains(id.as_str()), "snapshot of {id} left: {snaps}");
            assert!(cgroup_dirs(id).is_empty(), "cgroup of {id} left");
        }
        let leaks = LeakCounts::now(&d.state());
        eprintln!("leak counts: {leaks}");
        assert!(leaks.none(), "{leaks}");
        assert_eq!(files_under(&d.state().join("cri")), 0);
        assert_eq!(mounts_under(&d.state().join("cri")), 0);
        // The name is free again.
        let again = run(&mut c, pod_config("web", &[])).await;
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: again,
        })
        .await
        .expect("remove");
    });
    d.stop();
}

/// The sandbox image berthd pulls for RunPodSandbox is a CRI image like
/// one pulled with PullImage: its id and repo digest records, managed,
/// and pinned (so the kubelet never collects it).
#[test]
fn a_pulled_sandbox_image_is_pinned() {
    if !body_here("a_pulled_sandbox_image_is_pinned") {
        return;
    }
    let Some(reg_bin) = peer("docker-registry") else {
        return;
    };
    let _cg = Cgroups;
    // The registry listens on the private namespace's loopback (up).
    let reg = berth_tests::registry::Registry::start(&reg_bin);
    let hosts = tempfile::tempdir().expect("tempdir");
    let dir = hosts.path().join("registry.k8s.io");
    std::fs::create_dir_all(&dir).expect("hosts dir");
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"https://registry.k8s.io\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.host()
        ),
    )
    .expect("hosts.toml");
    let sandbox = "registry.k8s.io/berth-test/pause:1";
    let mut d = Daemon::start_with_config(&format!(
        "[registry]\nconfig_path = \"{}\"\nretries = 0\n[cri]\nsandbox_image = \"{sandbox}\"\nrestrict_oom_score_adj = true\n",
        hosts.path().display()
    ));
    // The pause image reaches the registry from another namespace.
    let pause = fixtures().join("busybox-pause-oci.tar");
    let remote = format!("{}/berth-test/pause:1", reg.host());
    for args in [
        &[
            "images",
            "import",
            "--base-name",
            "localhost/berth-test/pause",
            pause.to_str().expect("utf-8"),
        ][..],
        &["images", "tag", PAUSE, &remote],
        &["images", "push", &remote],
    ] {
        ok(&args.join(" "), d.berthctl("default", args));
    }
    assert_eq!(ctl(&d, &["images", "ls", "-q"]).trim(), "");
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let mut c = RuntimeServiceClient::new(d.channel().await);
        let pod = run(&mut c, host_network(pod_config("pinned", &[]))).await;
        assert_eq!(status(&mut c, &pod).await.state, READY);

        let img = cri::image_service_client::ImageServiceClient::new(d.channel().await)
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: sandbox.into(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .expect("ImageStatus")
            .into_inner()
            .image
            .expect("the sandbox image is a CRI image");
        assert!(img.pinned, "{img:?}");
        assert_eq!(img.repo_tags, [sandbox.to_string()], "{img:?}");
        assert_eq!(img.repo_digests.len(), 1, "{img:?}");
        let mut names: Vec<String> = ctl(&d, &["images", "ls", "-q"])
            .lines()
            .map(String::from)
            .collect();
        names.sort();
        let mut want = vec![
            img.id.clone(),
            img.repo_digests[0].clone(),
            sandbox.to_string(),
        ];
        want.sort();
        assert_eq!(names, want);

        c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .expect("RemovePodSandbox");
    });
    d.stop();
}
