//! berth.services.networks.v1 and `berthctl network …` against a real
//! berthd whose `network.cni_conf_dir` is a temp dir. Creating networks
//! only writes conflists: no bridge, netns or address is made, so this
//! runs on the host network (checked at the end).

use berth_proto::client::request;
use berth_proto::pb::berth::services::networks::v1 as api;
use berth_proto::pb::berth::services::networks::v1::networks_client::NetworksClient;
use berth_proto::services::containers::v1 as containers;
use berth_proto::services::containers::v1::containers_client::ContainersClient;
use berth_proto::services::introspection::v1::PluginsRequest;
use berth_proto::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_tests::*;
use serde_json::Value;
use std::path::Path;
use tonic::Code;

fn conflists(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn fails(what: &str, out: std::process::Output) -> String {
    assert!(!out.status.success(), "{what} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Creates a container in `ns` whose label says it uses `networks`.
async fn container_using(ch: &tonic::transport::Channel, ns: &str, id: &str, networks: &str) {
    ContainersClient::new(ch.clone())
        .create(request(
            ns,
            containers::CreateContainerRequest {
                container: Some(containers::Container {
                    id: id.into(),
                    labels: [("berth.networks".to_string(), networks.to_string())].into(),
                    runtime: Some(containers::container::Runtime {
                        name: "io.containerd.runc.v2".into(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                        value: b"{}".to_vec(),
                    }),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("create container");
}

#[tokio::test]
async fn networks_service_and_berthctl() {
    let ifaces_before = host_ifaces();
    let conf = tempfile::tempdir().expect("tempdir");
    let conf_dir = conf.path().join("net.d");
    let d = Daemon::start_with_config(&format!(
        "[network]\ncni_conf_dir = \"{}\"\n",
        conf_dir.display()
    ));
    let ch = d.channel().await;
    let mut cl = NetworksClient::new(ch.clone());

    // Introspection lists the service as containerd lists its grpc plugins.
    let plugins = IntrospectionClient::new(ch.clone())
        .plugins(PluginsRequest {
            filters: vec!["type==io.containerd.grpc.v1,id==networks".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .plugins;
    assert_eq!(plugins.len(), 1, "{plugins:?}");

    // ls shows the default network from the start (written on first use).
    let ls = ok("ls", d.berthctl("default", &["network", "ls"]));
    let header = ls.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("SUBNET"),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.starts_with("bridge ") && l.contains("10.88.0.0/16")),
        "{ls}"
    );
    assert_eq!(conflists(&conf_dir), ["bridge.conflist"]);

    // create, with and without explicit addressing.
    assert_eq!(
        ok(
            "create n1",
            d.berthctl(
                "default",
                &[
                    "network",
                    "create",
                    "--subnet",
                    "10.42.0.0/24",
                    "--gateway",
                    "10.42.0.254",
                    "--internal",
                    "n1"
                ]
            )
        )
        .trim(),
        "n1"
    );
    ok(
        "create n2",
        d.berthctl("default", &["network", "create", "n2"]),
    );
    assert_eq!(
        conflists(&conf_dir),
        ["bridge.conflist", "n1.conflist", "n2.conflist"]
    );

    // ls --format json; the namespace does not matter (host-wide).
    let ls: Value = serde_json::from_str(&ok(
        "ls json",
        d.berthctl("other-ns", &["network", "ls", "--format", "json"]),
    ))
    .unwrap();
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bridge", "n1", "n2"]);
    let n2 = &ls[2];
    assert_eq!(n2["subnets"], serde_json::json!(["10.89.0.0/24"]));
    assert_eq!(n2["gateway"], "10.89.0.1");
    assert_eq!(n2["internal"], false);

    // inspect
    let ins: Value = serde_json::from_str(&ok(
        "inspect",
        d.berthctl("default", &["network", "inspect", "n1", "bridge"]),
    ))
    .unwrap();
    let n1 = &ins[0];
    assert_eq!(n1["Name"], "n1");
    assert_eq!(n1["Driver"], "bridge");
    assert_eq!(n1["Internal"], true);
    assert_eq!(n1["Default"], false);
    assert_eq!(
        n1["IPAM"]["Config"],
        serde_json::json!([{"Subnet": "10.42.0.0/24", "Gateway": "10.42.0.254"}])
    );
    assert_eq!(
        n1["Plugins"],
        serde_json::json!(["bridge", "portmap", "firewall"])
    );
    assert!(
        n1["Created"].as_str().is_some_and(|c| c.contains('T')),
        "{n1}"
    );
    assert_eq!(n1["Config"]["plugins"][0]["ipMasq"], false);
    assert_eq!(ins[1]["Name"], "bridge");
    assert_eq!(ins[1]["Default"], true);
    let err = fails(
        "inspect missing",
        d.berthctl("default", &["network", "inspect", "nope"]),
    );
    assert!(err.contains("\"nope\" not found"), "{err}");

    // Duplicate name and overlapping subnet: AlreadyExists, clear message.
    let e = cl
        .create(request(
            "default",
            api::CreateNetworkRequest {
                name: "n1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(
        e.message().contains("network \"n1\" already exists"),
        "{e:?}"
    );
    let e = cl
        .create(request(
            "default",
            api::CreateNetworkRequest {
                name: "n3".into(),
                subnet: "10.42.0.128/25".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(
        e.message()
            .contains("overlaps network \"n1\"'s subnet 10.42.0.0/24"),
        "{e:?}"
    );
    let e = cl
        .create(request(
            "default",
            api::CreateNetworkRequest {
                name: "n4".into(),
                subnet: "10.88.7.0/24".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("\"bridge\""), "{e:?}");
    let err = fails(
        "create dup",
        d.berthctl("default", &["network", "create", "n2"]),
    );
    assert!(
        err.contains("already exists") && err.contains("n2"),
        "{err}"
    );
    // A bad gateway is the caller's error.
    let e = cl
        .create(request(
            "default",
            api::CreateNetworkRequest {
                name: "n5".into(),
                subnet: "10.43.0.0/24".into(),
                gateway: "10.44.0.1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // The default network cannot be removed.
    let e = cl
        .delete(request(
            "default",
            api::DeleteNetworkRequest {
                name: "bridge".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("default network"), "{e:?}");
    let err = fails(
        "rm bridge",
        d.berthctl("default", &["network", "rm", "bridge"]),
    );
    assert!(err.contains("default network"), "{err}");

    // In use: a container in another namespace records n1 in its label.
    create_network(&mut cl, "n6").await;
    container_using(&ch, "ns2", "c1", "n6, n1").await;
    let e = cl
        .delete(request(
            "default",
            api::DeleteNetworkRequest { name: "n1".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("in use by container(s) ns2/c1"),
        "{e:?}"
    );

    // rm tries every name: n2 goes, n1 stays and fails the command.
    let out = d.berthctl("default", &["network", "rm", "n2", "n1"]);
    let err = fails("rm n2 n1", out.clone());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "n2");
    assert!(err.contains("remove n1") && err.contains("in use"), "{err}");
    assert_eq!(
        conflists(&conf_dir),
        ["bridge.conflist", "n1.conflist", "n6.conflist"]
    );
    let err = fails(
        "rm missing",
        d.berthctl("default", &["network", "rm", "n2"]),
    );
    assert!(err.contains("not found"), "{err}");

    // prune: without -f it asks; "n" keeps everything.
    create_network(&mut cl, "n7").await;
    let mut p = d
        .berthctl_command("default", &["network", "prune"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    p.stdin.take().unwrap().write_all(b"n\n").unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Are you sure"));
    assert_eq!(conflists(&conf_dir).len(), 4);
    // -f removes n7 only: n1 and n6 are in use, bridge is the default.
    let pruned = ok("prune", d.berthctl("default", &["network", "prune", "-f"]));
    assert_eq!(pruned.trim(), "Deleted Networks:\nn7", "{pruned}");
    assert_eq!(
        conflists(&conf_dir),
        ["bridge.conflist", "n1.conflist", "n6.conflist"]
    );
    // Once the container is gone, both go.
    ContainersClient::new(ch.clone())
        .delete(request(
            "ns2",
            containers::DeleteContainerRequest { id: "c1".into() },
        ))
        .await
        .unwrap();
    let pruned = ok("prune", d.berthctl("default", &["network", "prune", "-f"]));
    assert_eq!(pruned.trim(), "Deleted Networks:\nn1\nn6", "{pruned}");
    assert_eq!(conflists(&conf_dir), ["bridge.conflist"]);

    // Nothing was made on the host: no bridge of any network, no netns.
    let ours: Vec<String> = ["bridge", "n1", "n2", "n6", "n7"]
        .iter()
        .map(|n| bridge_name(n))
        .collect();
    let new: Vec<String> = host_ifaces()
        .into_iter()
        .filter(|i| !ifaces_before.contains(i) && ours.contains(i))
        .collect();
    assert!(new.is_empty(), "bridges appeared: {new:?}");
    let netns = d.state().join("netns");
    assert!(
        std::fs::read_dir(&netns).map_or(true, |mut e| e.next().is_none()),
        "{} not empty",
        netns.display()
    );
}

fn host_ifaces() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// As the daemon names bridges (network::conflist::bridge_name).
fn bridge_name(network: &str) -> String {
    if network == "bridge" {
        return "berth0".into();
    }
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(network.as_bytes()));
    format!("br-{}", &h[..12])
}

async fn create_network(cl: &mut NetworksClient<tonic::transport::Channel>, name: &str) {
    cl.create(request(
        "default",
        api::CreateNetworkRequest {
            name: name.into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
}
