//! Task networking against the fake plugins of `network::tests`. Making a
//! network namespace needs root (unshare + bind mount under a temp dir);
//! without it those cases say SKIPPED.

use super::*;
use crate::network::tests::Env;
use berth_proto::errdefs::Kind;

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn spec() -> Vec<u8> {
    json!({
        "hostname": "",
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    })
    .to_string()
    .into_bytes()
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("SKIPPED: making network namespaces needs root");
    false
}

fn networks(env: &Env) -> TaskNetworks {
    TaskNetworks::new(Arc::new(env.manager()), &env.root.join("state"))
}

#[test]
fn labels_parse_or_name_the_bad_one() {
    assert_eq!(Wanted::from_labels(&labels(&[])).unwrap(), None);
    assert_eq!(
        Wanted::from_labels(&labels(&[(labels::NETWORKS, " , ")])).unwrap(),
        None
    );
    let w = Wanted::from_labels(&labels(&[
        (labels::NETWORKS, "a,b"),
        (labels::PORTS, "8080:80,127.0.0.1:53:53/udp"),
        (labels::DNS, "1.1.1.1"),
        (labels::EXTRA_HOSTS, "db:10.0.0.9"),
        (labels::CNI_ARGS, "IgnoreUnknown=1; K8S_POD_NAME=web"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(w.networks, vec!["a", "b"]);
    assert_eq!(
        w.cni_args,
        [
            ("IgnoreUnknown".to_string(), "1".to_string()),
            ("K8S_POD_NAME".to_string(), "web".to_string())
        ]
    );
    assert_eq!(w.ports.len(), 2);
    assert_eq!(w.dns, vec![Ipv4Addr::new(1, 1, 1, 1)]);
    for (pairs, says) in [
        (vec![(labels::PORTS, "8080:80")], "needs a network"),
        (vec![(labels::NETWORKS, "a,a")], "named twice"),
        (
            vec![(labels::NETWORKS, "a"), (labels::PORTS, "80")],
            "host port is required",
        ),
        (
            vec![(labels::NETWORKS, "a"), (labels::PORTS, "80:80,80:81")],
            "claim the same host port",
        ),
        (
            vec![(labels::NETWORKS, "a"), (labels::DNS, "x")],
            "not an IPv4",
        ),
        (
            vec![(labels::NETWORKS, "a"), (labels::EXTRA_HOSTS, "db")],
            "NAME:IPV4",
        ),
        (
            vec![(labels::NETWORKS, "a"), (labels::CNI_ARGS, "K8S_POD_NAME")],
            "not KEY=VALUE",
        ),
        (vec![(labels::CNI_ARGS, "A=1")], "needs a network"),
    ] {
        let e = Wanted::from_labels(&labels(&pairs)).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument, "{pairs:?}");
        assert!(e.to_string().contains(says), "{pairs:?}: {e}");
        assert!(e.to_string().contains("label berth."), "{pairs:?}: {e}");
    }
}

#[test]
fn port_mappings_round_trip_through_the_cache_form() {
    let ports = vec![
        PortMapping::parse("8080:80").unwrap(),
        PortMapping::parse("127.0.0.1:5353:53/udp").unwrap(),
    ];
    let c = Cached {
        kind: String::new(),
        network_name: "n".into(),
        attachment: Attachment {
            container_id: "x".into(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            args: vec![],
        },
        config: Value::Null,
        runtime_config: json!({"portMappings": port_mappings(&ports)}),
        result: Value::Null,
        owner: None,
    };
    assert_eq!(cached_ports(&c), ports);
}

#[test]
fn the_spec_must_have_a_new_network_namespace() {
    let host = json!({"linux": {"namespaces": [{"type": "pid"}]}});
    let e = check_new_netns(&host, "c").unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition);
    assert!(
        e.to_string()
            .contains("shares the host's network namespace"),
        "{e}"
    );
    let joined = json!({"linux": {"namespaces": [{"type": "network", "path": "/proc/1/ns/net"}]}});
    let e = check_new_netns(&joined, "c").unwrap_err();
    assert!(e.to_string().contains("/proc/1/ns/net"), "{e}");
    let userns = json!({"linux": {"namespaces": [{"type": "user"}, {"type": "network"}]}});
    let e = check_new_netns(&userns, "c").unwrap_err();
    assert!(e.to_string().contains("user namespace"), "{e}");
    let s: Value = serde_json::from_slice(&spec()).unwrap();
    check_new_netns(&s, "c").unwrap();
}

#[test]
fn the_bundle_spec_points_at_the_namespace_and_files_unless_mounted() {
    let mut s: Value = serde_json::from_slice(&spec()).unwrap();
    s["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/etc/hosts", "type": "bind", "source": "/mine"}));
    point_spec_at(
        &mut s,
        "/state/netns/ns/c".as_ref(),
        "/state/etc/ns/c".as_ref(),
    );
    assert_eq!(
        s.pointer("/linux/namespaces/1/path").unwrap(),
        "/state/netns/ns/c"
    );
    assert!(s.pointer("/linux/namespaces/0/path").is_none());
    let mounts = s["mounts"].as_array().unwrap();
    let src = |d: &str| {
        mounts
            .iter()
            .filter(|m| m["destination"] == d)
            .map(|m| m["source"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(src("/etc/hosts"), vec!["/mine"]);
    assert_eq!(src("/etc/resolv.conf"), vec!["/state/etc/ns/c/resolv.conf"]);
    assert_eq!(src("/etc/hostname"), vec!["/state/etc/ns/c/hostname"]);
    let ro = mounts
        .iter()
        .find(|m| m["destination"] == "/etc/hostname")
        .unwrap();
    assert!(ro["options"].as_array().unwrap().contains(&json!("ro")));
}

#[tokio::test]
async fn a_container_without_networks_is_left_alone() {
    let env = Env::new(&["okA"]);
    let n = networks(&env);
    let out = n.attach("ns", "c", &labels(&[]), spec()).await.unwrap();
    assert_eq!(out, spec());
    n.detach_task("ns", "c").await.unwrap();
    assert!(env.calls().is_empty());
    assert!(!env.root.join("state/netns").exists());
}

#[tokio::test]
async fn attach_names_peers_publishes_ports_and_detach_undoes_it() {
    if !root() {
        return;
    }
    let env = Env::new(&["okA", "okB"]);
    let n = networks(&env);
    let l1 = labels(&[(labels::NETWORKS, "net"), (labels::PORTS, "18080:80")]);
    let s1: Value =
        serde_json::from_slice(&n.attach("ns", "c1", &l1, spec()).await.unwrap()).unwrap();
    let ns_path = s1
        .pointer("/linux/namespaces/1/path")
        .unwrap()
        .as_str()
        .unwrap();
    assert!(std::path::Path::new(ns_path).exists());
    let hosts1 = n.etc().dir("ns", "c1").join("hosts");
    let add = env
        .calls()
        .into_iter()
        .find(|c| c.0 == "okB" && c.1 == "ADD")
        .unwrap();
    assert_eq!(add.3["runtimeConfig"]["portMappings"][0]["hostPort"], 18080);
    assert!(add.2.contains("CNI_IFNAME=eth0"), "{}", add.2);

    // The same host port again: refused, nothing of c2 made.
    let l2 = labels(&[
        (labels::NETWORKS, "net"),
        (labels::PORTS, "127.0.0.1:18080:81"),
    ]);
    let e = n.attach("ns", "c2", &l2, spec()).await.unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition);
    assert!(e.to_string().contains("ns/c1"), "{e}");
    assert!(!n.etc().dir("ns", "c2").exists());
    assert!(n.mgr.netns().list("ns").unwrap() == vec!["c1"]);

    // A peer: both hosts files name each other; c1's was rewritten in place.
    let l3 = labels(&[
        (labels::NETWORKS, "net"),
        (labels::EXTRA_HOSTS, "db:10.9.9.9"),
    ]);
    n.attach("ns", "c3", &l3, spec()).await.unwrap();
    let h1 = std::fs::read_to_string(&hosts1).unwrap();
    let h3 = std::fs::read_to_string(n.etc().dir("ns", "c3").join("hosts")).unwrap();
    assert!(h1.contains("\tc3\n") && h1.contains("\tc1\n"), "{h1}");
    assert!(h3.contains("\tc1\n") && h3.contains("10.9.9.9\tdb"), "{h3}");
    // Another namespace never shows up.
    n.attach("other", "c1", &labels(&[(labels::NETWORKS, "net")]), spec())
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&hosts1).unwrap(), h1);

    n.detach_task("ns", "c3").await.unwrap();
    assert!(!std::fs::read_to_string(&hosts1).unwrap().contains("c3"));
    // A restart that finds only ns/c1 alive cleans the rest.
    let live: HashSet<(String, String)> = [("ns".to_string(), "c1".to_string())].into();
    assert_eq!(n.reconcile(&live).await.unwrap(), 1);
    assert!(n.mgr.netns().list("other").unwrap().is_empty());
    n.detach("ns", "c1").await.unwrap();
    n.detach("ns", "c1").await.unwrap();
    assert!(n.mgr.attachments().unwrap().is_empty());
    assert!(n.etc().namespaces().unwrap().is_empty());
    assert!(n.mgr.netns().namespaces().unwrap().is_empty());
    let adds = env.calls().iter().filter(|c| c.1 == "ADD").count();
    let dels = env.calls().iter().filter(|c| c.1 == "DEL").count();
    // Three containers with two plugins each, all deleted again.
    assert_eq!((adds, dels), (6, 6));
}

#[tokio::test]
async fn a_failed_attach_leaves_nothing() {
    if !root() {
        return;
    }
    let env = Env::new(&["okA", "fail"]);
    let n = networks(&env);
    let e = n
        .attach("ns", "c1", &labels(&[(labels::NETWORKS, "net")]), spec())
        .await
        .unwrap_err();
    assert!(e.chain().contains("bad config"), "{}", e.chain());
    assert!(n.mgr.attachments().unwrap().is_empty());
    assert!(n.mgr.netns().namespaces().unwrap().is_empty());
    assert!(n.etc().namespaces().unwrap().is_empty());
    let e = n
        .attach("ns", "c1", &labels(&[(labels::NETWORKS, "nope")]), spec())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound);
    assert!(e.to_string().contains("label berth.networks"), "{e}");
}
