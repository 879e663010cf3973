//! Unit tests of the infra container spec.

use super::*;

fn with_linux(l: cri::LinuxPodSandboxConfig) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        linux: Some(l),
        ..Default::default()
    }
}

fn with_sc(s: cri::LinuxSandboxSecurityContext) -> cri::PodSandboxConfig {
    with_linux(cri::LinuxPodSandboxConfig {
        security_context: Some(s),
        ..Default::default()
    })
}

#[test]
fn cgroups_path_is_cgroupfs_only() {
    let id = "abc";
    let c = |p: &str| {
        cgroups_path(
            &with_linux(cri::LinuxPodSandboxConfig {
                cgroup_parent: p.into(),
                ..Default::default()
            }),
            id,
        )
    };
    assert_eq!(c("").unwrap(), "/k8s.io/abc");
    assert_eq!(
        c("/kubepods/burstable/pod1/").unwrap(),
        "/kubepods/burstable/pod1/abc"
    );
    let e = c("kubepods-burstable-pod1.slice").unwrap_err();
    assert!(e.to_string().contains("systemd slice"), "{e}");
    assert!(c("kubepods").is_err());
}

#[test]
fn ports_without_host_port_are_not_published() {
    let mut c = cri::PodSandboxConfig::default();
    let pm = |proto: cri::Protocol, cp: i32, hp: i32, ip: &str| cri::PortMapping {
        protocol: proto as i32,
        container_port: cp,
        host_port: hp,
        host_ip: ip.into(),
    };
    c.port_mappings = vec![
        pm(cri::Protocol::Tcp, 80, 8080, ""),
        pm(cri::Protocol::Tcp, 81, 0, ""),
        pm(cri::Protocol::Udp, 53, 5353, "127.0.0.1"),
    ];
    let got: Vec<String> = port_mappings(&c)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, ["8080:80/tcp", "127.0.0.1:5353:53/udp"]);
    c.port_mappings = vec![pm(cri::Protocol::Sctp, 80, 80, "")];
    assert!(port_mappings(&c).is_err());
    c.port_mappings = vec![pm(cri::Protocol::Tcp, 80, 80, "::1")];
    assert!(
        port_mappings(&c)
            .unwrap_err()
            .to_string()
            .contains("host_ip")
    );
}

#[test]
fn modes_and_refusals() {
    let ns = |n: cri::NamespaceMode, p: cri::NamespaceMode, i: cri::NamespaceMode| {
        with_sc(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: n as i32,
                pid: p as i32,
                ipc: i as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    use cri::NamespaceMode::{Node, Pod, Target};
    assert_eq!(
        modes(&ns(Node, Pod, Node)).unwrap(),
        Modes {
            host_network: true,
            host_pid: false,
            host_ipc: true
        }
    );
    assert!(modes(&ns(Pod, Target, Pod)).is_err());
    let seccomp = with_sc(cri::LinuxSandboxSecurityContext {
        seccomp: Some(cri::SecurityProfile::default()),
        ..Default::default()
    });
    let img = serde_json::json!({"Entrypoint": ["/pause"]});
    let dir = Path::new("/run/x");
    let input = |c| SpecInput {
        id: "id1",
        config: c,
        image: &img,
        files_dir: dir,
        shm: "/run/x/shm",
        restrict_oom_score_adj: false,
    };
    // RuntimeDefault (type 0): containerd's default profile, as for a
    // container; Unconfined: no filter.
    let spec = build(&input(&seccomp)).unwrap();
    assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    let unconfined = with_sc(cri::LinuxSandboxSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Unconfined as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert!(
        build(&input(&unconfined)).unwrap()["linux"]
            .get("seccomp")
            .is_none()
    );
    let group_only = with_sc(cri::LinuxSandboxSecurityContext {
        run_as_group: Some(cri::Int64Value { value: 5 }),
        ..Default::default()
    });
    assert!(build(&input(&group_only)).is_err());
}

#[test]
fn spec_follows_the_pod_config() {
    let mut c = with_sc(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            pid: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        run_as_user: Some(cri::Int64Value { value: 1000 }),
        run_as_group: Some(cri::Int64Value { value: 2000 }),
        supplemental_groups: vec![3000],
        ..Default::default()
    });
    c.hostname = "h1".into();
    c.linux.as_mut().unwrap().sysctls =
        [("net.ipv4.ip_forward".to_string(), "1".to_string())].into();
    let img = serde_json::json!({"Entrypoint": ["/pause"], "Cmd": ["-v"], "User": "65535:65535"});
    let s = build(&SpecInput {
        id: "id1",
        config: &c,
        image: &img,
        files_dir: Path::new("/run/x"),
        shm: "/run/x/shm",
        restrict_oom_score_adj: false,
    })
    .unwrap();
    assert_eq!(s["process"]["args"], serde_json::json!(["/pause", "-v"]));
    assert_eq!(s["process"]["user"]["uid"], 1000);
    assert_eq!(s["process"]["user"]["gid"], 2000);
    assert_eq!(
        s["process"]["user"]["additionalGids"],
        serde_json::json!([2000, 3000])
    );
    assert_eq!(s["process"]["oomScoreAdj"], -998);
    assert_eq!(s["root"]["readonly"], true);
    assert_eq!(s["hostname"], "h1");
    assert_eq!(s["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
    let types: Vec<&str> = s["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["mount", "network", "uts", "ipc"]);
    let shm = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/dev/shm")
        .unwrap();
    assert_eq!(shm["source"], "/run/x/shm");
    assert_eq!(
        s["annotations"]["io.kubernetes.cri.container-type"],
        "sandbox"
    );
    // The image's user when the pod names none; names are refused.
    let mut plain = c.clone();
    plain.linux = None;
    let s = build(&SpecInput {
        id: "id1",
        config: &plain,
        image: &img,
        files_dir: Path::new("/run/x"),
        shm: "/run/x/shm",
        restrict_oom_score_adj: false,
    })
    .unwrap();
    assert_eq!(s["process"]["user"]["uid"], 65535);
    let named = serde_json::json!({"Entrypoint": ["/pause"], "User": "nobody"});
    assert!(
        build(&SpecInput {
            id: "id1",
            config: &plain,
            image: &named,
            files_dir: Path::new("/run/x"),
            shm: "/run/x/shm",
            restrict_oom_score_adj: false,
        })
        .is_err()
    );
}
