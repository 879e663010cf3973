//! Table tests of the CRI container spec.

use super::*;
use berth_proto::cri::{
    self, Capability, ContainerMetadata, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceOption, PodSandboxMetadata, SecurityProfile,
};

const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nweb:x:1000:1000::/srv:/bin/sh\n";
const GROUP: &str = "root:x:0:\nweb:x:1000:\nwheel:x:10:web\n";

fn pod(privileged: bool) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "p".into(),
            uid: "u1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "podhost".into(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                privileged,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn image_cfg() -> Value {
    json!({"Entrypoint": ["/entry"], "Cmd": ["a", "b"], "Env": ["PATH=/img/bin", "FOO=img"],
           "WorkingDir": "/w", "User": "web", "StopSignal": "SIGQUIT"})
}

fn with_sc(sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        linux: Some(LinuxContainerConfig {
            security_context: Some(sc),
            resources: None,
        }),
        ..Default::default()
    }
}

fn build_with(config: &ContainerConfig, pod: &PodSandboxConfig, img: &Value) -> Result<Value> {
    let sandbox = Sandbox {
        id: "sb1",
        config: pod,
        netns_path: "/var/run/netns/cni-1",
        pid: 42,
        cgroup_parent: "/kubepods/pod-u1",
        ..Default::default()
    };
    let host = Host {
        passwd: Some(PASSWD),
        group: Some(GROUP),
        hostname: "node",
        mountinfo: "1 0 0:1 / / rw shared:1 - x x rw\n",
        ..Default::default()
    };
    build(
        "k8s.io",
        "c1",
        config,
        &sandbox,
        &Image {
            name: "busybox:1",
            config: img,
        },
        &host,
    )
}

#[test]
fn argv_follows_containerd() {
    let img = image_cfg();
    type Case<'a> = (&'a [&'a str], &'a [&'a str], Value, &'a [&'a str]);
    let cases: &[Case] = &[
        (&[], &[], img.clone(), &["/entry", "a", "b"]),
        (&[], &["x"], img.clone(), &["/entry", "x"]),
        (&["/cmd"], &[], img.clone(), &["/cmd"]),
        (&["/cmd"], &["y"], img.clone(), &["/cmd", "y"]),
        (
            &[],
            &[],
            json!({"Entrypoint": [""], "Cmd": ["sh"]}),
            &["sh"],
        ),
    ];
    for (cmd, args, img, want) in cases {
        let c = ContainerConfig {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(process_args(&c, img).unwrap(), *want, "{cmd:?} {args:?}");
    }
    let e = process_args(&ContainerConfig::default(), &json!({})).unwrap_err();
    assert!(e.to_string().contains("no command"), "{e}");
}

#[test]
fn env_cwd_user_and_defaults() {
    let mut c = with_sc(LinuxContainerSecurityContext::default());
    c.envs = vec![KeyValue {
        key: "FOO".into(),
        value: b"mine".to_vec(),
    }];
    c.tty = true;
    let s = build_with(&c, &pod(false), &image_cfg()).unwrap();
    assert_eq!(
        s["process"]["env"],
        json!([
            "PATH=/img/bin",
            "TERM=xterm",
            "HOSTNAME=podhost",
            "FOO=mine"
        ])
    );
    assert_eq!(s["process"]["terminal"], true);
    assert_eq!(s["process"]["cwd"], "/w");
    assert_eq!(
        s["process"]["user"],
        json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 1000]})
    );
    // SupplementalGroupsPolicy Strict: not the image's membership in 10.
    let strict = with_sc(LinuxContainerSecurityContext {
        supplemental_groups: vec![1234],
        supplemental_groups_policy: cri::SupplementalGroupsPolicy::Strict as i32,
        ..Default::default()
    });
    let st = build_with(&strict, &pod(false), &image_cfg()).unwrap();
    assert_eq!(st["process"]["user"]["additionalGids"], json!([1000, 1234]));
    assert_eq!(s["process"]["noNewPrivileges"], false);
    assert_eq!(s["linux"]["cgroupsPath"], "/kubepods/pod-u1/c1");
    assert_eq!(s["linux"]["maskedPaths"], json!([]));
    assert!(s["linux"]["seccomp"].is_null());
    assert!(s["process"]["rlimits"].is_null());
    assert_eq!(
        s["process"]["capabilities"]["bounding"],
        json!(berth_proto::capabilities::DEFAULT_CAPS)
    );
    let dests: Vec<&str> = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert!(!dests.contains(&"/run") && dests.contains(&"/sys/fs/cgroup"));
    assert_eq!(s["annotations"]["io.kubernetes.cri.sandbox-id"], "sb1");
    assert_eq!(
        s["annotations"]["io.kubernetes.cri.container-type"],
        "container"
    );
    assert_eq!(stop_signal(&c, &image_cfg()), "SIGQUIT");
    c.stop_signal = cri::Signal::Sigusr1 as i32;
    assert_eq!(stop_signal(&c, &image_cfg()), "SIGUSR1");
    assert_eq!(stop_signal(&c, &json!({})), "SIGUSR1");
    assert_eq!(
        stop_signal(&ContainerConfig::default(), &json!({})),
        "SIGTERM"
    );
}

#[test]
fn namespaces_join_the_pod() {
    let ns = |mode: NamespaceMode| {
        with_sc(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: mode as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let s = build_with(&ns(NamespaceMode::Pod), &pod(false), &image_cfg()).unwrap();
    assert_eq!(
        s["linux"]["namespaces"],
        json!([{"type": "mount"}, {"type": "network", "path": "/var/run/netns/cni-1"},
               {"type": "ipc", "path": "/proc/42/ns/ipc"}, {"type": "uts", "path": "/proc/42/ns/uts"},
               {"type": "pid", "path": "/proc/42/ns/pid"}])
    );
    let s = build_with(&ns(NamespaceMode::Container), &pod(false), &image_cfg()).unwrap();
    assert_eq!(s["linux"]["namespaces"][4], json!({"type": "pid"}));
    let e = build_with(&ns(NamespaceMode::Target), &pod(false), &image_cfg()).unwrap_err();
    assert!(e.to_string().contains("target"), "{e}");
}

#[test]
fn security_context_table() {
    type Check = fn(&Value);
    let cases: Vec<(&str, LinuxContainerSecurityContext, Check)> = vec![
        (
            "run_as_user overrides the image",
            LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 0 }),
                supplemental_groups: vec![77],
                ..Default::default()
            },
            |s| {
                assert_eq!(
                    s["process"]["user"],
                    json!({"uid": 0, "gid": 0, "additionalGids": [0, 77]})
                )
            },
        ),
        (
            "run_as_username with group",
            LinuxContainerSecurityContext {
                run_as_username: "web".into(),
                run_as_group: Some(Int64Value { value: 5 }),
                ..Default::default()
            },
            |s| assert_eq!(s["process"]["user"]["gid"], 5),
        ),
        (
            "readonly rootfs, no_new_privs, masked paths",
            LinuxContainerSecurityContext {
                readonly_rootfs: true,
                no_new_privs: true,
                masked_paths: vec!["/proc/kcore".into()],
                readonly_paths: vec!["/proc/sys".into()],
                ..Default::default()
            },
            |s| {
                assert_eq!(s["root"]["readonly"], true);
                assert_eq!(s["process"]["noNewPrivileges"], true);
                assert_eq!(s["linux"]["maskedPaths"], json!(["/proc/kcore"]));
                assert_eq!(s["linux"]["readonlyPaths"], json!(["/proc/sys"]));
            },
        ),
        (
            "capabilities and RuntimeDefault seccomp",
            LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: vec!["SYS_ADMIN".into()],
                    drop_capabilities: vec!["ALL".into()],
                    add_ambient_capabilities: vec![],
                }),
                seccomp: Some(SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            },
            |s| {
                assert_eq!(
                    s["process"]["capabilities"]["effective"],
                    json!(["CAP_SYS_ADMIN"])
                );
                assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
                let names = s["linux"]["seccomp"]["syscalls"].to_string();
                assert!(names.contains("\"mount\""), "CAP_SYS_ADMIN allows mount");
            },
        ),
    ];
    for (what, sc, check) in cases {
        let s = build_with(&with_sc(sc), &pod(false), &image_cfg())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        check(&s);
    }
}

#[test]
fn privileged_needs_a_privileged_pod() {
    let sc = LinuxContainerSecurityContext {
        privileged: true,
        masked_paths: vec!["/proc/kcore".into()],
        seccomp: Some(SecurityProfile::default()),
        ..Default::default()
    };
    let e = build_with(&with_sc(sc.clone()), &pod(false), &image_cfg()).unwrap_err();
    assert!(e.to_string().contains("privileged"), "{e}");
    let s = build_with(&with_sc(sc), &pod(true), &image_cfg()).unwrap();
    assert_eq!(s["linux"]["maskedPaths"], json!([]));
    assert!(s["linux"]["seccomp"].is_null());
    assert_eq!(
        s["linux"]["resources"]["devices"],
        json!([{"allow": true, "access": "rwm"}])
    );
    assert!(
        s["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .contains(&json!("CAP_SYS_MODULE"))
    );
    let sys = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["type"] == "sysfs")
        .unwrap();
    assert!(!sys["options"].as_array().unwrap().contains(&json!("ro")));
}

#[test]
fn resources_table() {
    let r = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 8 << 20,
        oom_score_adj: 500,
        cpuset_cpus: "0".into(),
        cpuset_mems: "0".into(),
        ..Default::default()
    };
    let mut c = with_sc(LinuxContainerSecurityContext::default());
    c.linux.as_mut().unwrap().resources = Some(r.clone());
    let s = build_with(&c, &pod(false), &image_cfg()).unwrap();
    let res = &s["linux"]["resources"];
    assert_eq!(
        res["cpu"],
        json!({"period": 100_000, "quota": 50_000, "shares": 512, "cpus": "0", "mems": "0"})
    );
    assert_eq!(res["memory"]["limit"], 8 << 20);
    assert_eq!(s["process"]["oomScoreAdj"], 500);
    // Swap equals the limit where the host has the swap controller.
    let mut spec = json!({"linux": {"resources": {}}, "process": {}});
    let host = Host {
        swap_controller: true,
        ..Default::default()
    };
    apply_resources(&mut spec, &r, &host).unwrap();
    assert_eq!(spec["linux"]["resources"]["memory"]["swap"], 8 << 20);
    let huge = LinuxContainerResources {
        hugepage_limits: vec![cri::HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        ..Default::default()
    };
    assert!(apply_resources(&mut spec, &huge, &Host::default()).is_err());
    let hosth = Host {
        hugetlb_controller: true,
        ..Default::default()
    };
    apply_resources(&mut spec, &huge, &hosth).unwrap();
    assert_eq!(
        spec["linux"]["resources"]["hugepageLimits"][0]["pageSize"],
        "2MB"
    );
    let unified = LinuxContainerResources {
        unified: [("memory.high".to_string(), "1M".to_string())].into(),
        ..Default::default()
    };
    let e = apply_resources(&mut spec, &unified, &Host::default()).unwrap_err();
    assert!(e.to_string().contains("unified"), "{e}");
}

#[test]
fn refused_fields_are_named() {
    let mut c = with_sc(LinuxContainerSecurityContext::default());
    c.cdi_devices = vec![cri::CdiDevice { name: "x".into() }];
    let e = build_with(&c, &pod(false), &image_cfg()).unwrap_err();
    assert!(e.to_string().contains("CDI"), "{e}");
    // A recursive read-only mount must be read-only and private (as
    // containerd's CRI checks); then its bind gets runc's `rro`.
    let rro = |readonly, propagation: cri::MountPropagation| {
        let mut c = with_sc(LinuxContainerSecurityContext::default());
        c.mounts = vec![cri::Mount {
            container_path: "/x".into(),
            host_path: "/tmp".into(),
            readonly,
            recursive_read_only: true,
            propagation: propagation as i32,
            ..Default::default()
        }];
        build_with(&c, &pod(false), &image_cfg())
    };
    let e = rro(false, cri::MountPropagation::PropagationPrivate).unwrap_err();
    assert!(
        e.to_string().contains("recursive_read_only needs readonly"),
        "{e}"
    );
    let e = rro(true, cri::MountPropagation::PropagationHostToContainer).unwrap_err();
    assert!(e.to_string().contains("needs private propagation"), "{e}");
    let spec = rro(true, cri::MountPropagation::PropagationPrivate).unwrap();
    let x = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/x")
        .expect("the bind");
    assert_eq!(x["options"], json!(["rbind", "rprivate", "ro", "rro"]));
    let c = with_sc(LinuxContainerSecurityContext {
        selinux_options: Some(cri::SeLinuxOption {
            r#type: "spc_t".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = build_with(&c, &pod(false), &image_cfg()).unwrap_err();
    assert!(e.to_string().contains("selinux_options"), "{e}");
    let mut p = pod(false);
    p.linux.as_mut().unwrap().cgroup_parent = "kubepods.slice".into();
    let sandbox = Sandbox {
        id: "s",
        config: &p,
        pid: 1,
        cgroup_parent: "kubepods.slice",
        ..Default::default()
    };
    let img = image_cfg();
    let e = build(
        "k8s.io",
        "c",
        &ContainerConfig::default(),
        &sandbox,
        &Image {
            name: "i",
            config: &img,
        },
        &Host::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("systemd"), "{e}");
}
