//! The manager and exec layer against fake plugins: shell scripts that log
//! their `CNI_*` environment and stdin, one file per call, and answer with
//! a result, an error object, garbage, or not at all.

use super::*;
use crate::config::NetworkConfig;
use berth_proto::errdefs::Kind;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const SCRIPT: &str = r#"#!/bin/sh
log=@LOG@
n=$(ls "$log" | wc -l)
f="$log/$(printf %03d "$n")-@TYPE@-$CNI_COMMAND"
{ env | grep '^CNI_' | sort; echo ---; cat; } > "$f.tmp"
mv "$f.tmp" "$f"
case "@TYPE@:$CNI_COMMAND" in
  *:VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
  fail:ADD) echo '{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"field x"}'; exit 1 ;;
  garbage:*) echo boom >&2; exit 2 ;;
  slow:*) exec sleep 30 ;;
  excl:ADD|excl:DEL)
    # Fails when another plugin call runs at the same time.
    mkdir "@LOG@.busy" 2>/dev/null || { echo '{"cniVersion":"1.0.0","code":11,"msg":"overlapping call"}'; exit 1; }
    sleep 0.2; rmdir "@LOG@.busy"
    if [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion":"1.0.0","ips":[]}'; fi ;;
  *:ADD) echo '{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.'$n'/24"}],"by":"@TYPE@"}' ;;
esac
"#;

pub(super) struct Env {
    _dir: tempfile::TempDir,
    pub(super) root: PathBuf,
    pub(super) cfg: NetworkConfig,
}

impl Env {
    pub(super) fn new(plugins: &[&str]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let bin = root.join("bin");
        for d in ["bin", "log", "net.d", "state"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        for t in ["okA", "okB", "okC", "fail", "garbage", "slow", "excl"] {
            let p = bin.join(t);
            let text = SCRIPT
                .replace("@LOG@", &root.join("log").display().to_string())
                .replace("@TYPE@", t);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let list: Vec<Value> = plugins
            .iter()
            .map(|t| {
                if *t == "okB" {
                    json!({"type": t, "capabilities": {"portMappings": true}})
                } else {
                    json!({"type": t, "own": t})
                }
            })
            .collect();
        let conf = json!({"cniVersion": "1.0.0", "name": "net", "plugins": list});
        std::fs::write(root.join("net.d/10-net.conflist"), conf.to_string()).unwrap();
        let cfg = NetworkConfig {
            cni_bin_dirs: vec![root.join("nowhere"), bin],
            cni_conf_dir: root.join("net.d"),
            default_network: "bridge".into(),
            plugin_timeout_secs: 1,
        };
        Env {
            _dir: dir,
            root,
            cfg,
        }
    }

    pub(super) fn manager(&self) -> NetworkManager {
        NetworkManager::new(&self.cfg, &self.root.join("state"))
    }

    /// Every call so far: (type, command, CNI_* env, stdin).
    pub(super) fn calls(&self) -> Vec<(String, String, String, Value)> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("log"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".tmp"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(self.root.join("log").join(n)).unwrap();
                let (env, stdin) = text.split_once("---\n").unwrap();
                let mut parts = n.splitn(3, '-');
                parts.next();
                (
                    parts.next().unwrap().to_string(),
                    parts.next().unwrap().to_string(),
                    env.to_string(),
                    serde_json::from_str(stdin).unwrap_or(Value::Null),
                )
            })
            .collect()
    }
}

fn att() -> Attachment {
    Attachment {
        container_id: cni_container_id("default", "c1"),
        netns: "/run/berth/netns/default/c1".into(),
        ifname: "eth0".into(),
        args: vec![("K8S_POD_NAME".into(), "p".into())],
    }
}

fn seq(calls: &[(String, String, String, Value)]) -> Vec<String> {
    calls.iter().map(|c| format!("{} {}", c.0, c.1)).collect()
}

#[tokio::test]
async fn add_chains_prev_result_and_caches_it() {
    let env = Env::new(&["okA", "okB", "okC"]);
    let m = env.manager();
    let mut rc = serde_json::Map::new();
    rc.insert("portMappings".into(), json!([{"hostPort": 8080}]));
    let res = m.add("net", &att(), &rc).await.unwrap();
    assert_eq!(res["by"], "okC");
    let calls = env.calls();
    assert_eq!(seq(&calls), ["okA ADD", "okB ADD", "okC ADD"]);
    let a = att();
    for (_, _, e, stdin) in &calls {
        assert!(e.contains("CNI_COMMAND=ADD\n"), "{e}");
        assert!(e.contains(&format!("CNI_CONTAINERID={}\n", a.container_id)));
        assert!(e.contains("CNI_NETNS=/run/berth/netns/default/c1\n"));
        assert!(e.contains("CNI_IFNAME=eth0\n") && e.contains("CNI_ARGS=K8S_POD_NAME=p\n"));
        assert!(e.contains("/nowhere:") && e.contains("CNI_PATH="), "{e}");
        assert_eq!(stdin["name"], "net");
        assert_eq!(stdin["cniVersion"], "1.0.0");
    }
    assert!(calls[0].3.get("prevResult").is_none());
    assert_eq!(calls[1].3["prevResult"]["by"], "okA");
    assert_eq!(calls[2].3["prevResult"]["by"], "okB");
    // runtimeConfig goes only to the plugin declaring the capability.
    assert_eq!(
        calls[1].3["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(calls[0].3.get("runtimeConfig").is_none());
    assert_eq!(calls[0].3["own"], "okA");
    let cached = env
        .root
        .join("state/cni/results/net")
        .join(format!("{}-eth0", a.container_id));
    let mode = std::fs::metadata(&cached).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(m.result("net", &a).unwrap().unwrap()["by"], "okC");
    assert_eq!(
        cni::view(&res).addresses(),
        vec!["10.1.0.2".parse::<std::net::IpAddr>().unwrap()]
    );
    // A second ADD of the same attachment is refused, not re-run.
    let err = m.add("net", &a, &rc).await.unwrap_err();
    assert_eq!(err.kind(), Kind::AlreadyExists, "{err}");
    assert_eq!(env.calls().len(), 3);
}

#[tokio::test]
async fn del_runs_in_reverse_with_the_cached_result_after_a_restart() {
    let env = Env::new(&["okA", "okB", "okC"]);
    let mut rc = serde_json::Map::new();
    rc.insert("portMappings".into(), json!([{"hostPort": 80}]));
    env.manager().add("net", &att(), &rc).await.unwrap();
    // A new manager (berthd restarted) and the network's file gone: DEL
    // still has the configuration and result ADD used.
    std::fs::remove_file(env.root.join("net.d/10-net.conflist")).unwrap();
    let m = env.manager();
    m.check("net", &att()).await.unwrap();
    m.del("net", &att()).await.unwrap();
    let calls = env.calls();
    assert_eq!(
        seq(&calls[3..]),
        [
            "okA CHECK",
            "okB CHECK",
            "okC CHECK",
            "okC DEL",
            "okB DEL",
            "okA DEL"
        ]
    );
    for c in &calls[3..] {
        assert_eq!(c.3["prevResult"]["by"], "okC", "{c:?}");
        assert!(c.2.contains(&format!("CNI_COMMAND={}\n", c.1)));
    }
    assert_eq!(
        calls[7].3["runtimeConfig"]["portMappings"][0]["hostPort"],
        80
    );
    assert!(m.result("net", &att()).unwrap().is_none());
    assert!(!env.root.join("state/cni/results/net").exists());
    // Deleting again is a no-op: nothing is cached.
    m.del("net", &att()).await.unwrap();
    assert_eq!(env.calls().len(), 9);
    let err = m.check("net", &att()).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn a_plugin_error_is_reported_clearly_and_undone() {
    let env = Env::new(&["okA", "fail", "okC"]);
    let m = env.manager();
    let err = m.add("net", &att(), &Default::default()).await.unwrap_err();
    let text = err.chain();
    for want in [
        "attach to network \"net\"",
        "CNI plugin fail ADD failed",
        "code 7 (invalid network config)",
        "bad config",
        "details: field x",
    ] {
        assert!(text.contains(want), "{want:?} missing in {text}");
    }
    assert_eq!(err.kind(), Kind::InvalidArgument);
    // The rollback deletes every plugin of the list, in reverse, without a
    // prevResult (ADD never finished); nothing stays cached.
    assert_eq!(
        seq(&env.calls()),
        ["okA ADD", "fail ADD", "okC DEL", "fail DEL", "okA DEL"]
    );
    assert!(env.calls()[2].3.get("prevResult").is_none());
    assert!(m.result("net", &att()).unwrap().is_none());
    assert!(!env.root.join("state/cni/results/net").exists());
}

/// Plugins set up shared host state (portmap's chains) without locking:
/// concurrent ADDs and DELs must not overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugin_chains_never_overlap() {
    let env = Env::new(&["excl"]);
    let m = std::sync::Arc::new(env.manager());
    let atts: Vec<Attachment> = (0..4)
        .map(|i| Attachment {
            container_id: cni_container_id("default", &format!("c{i}")),
            ..att()
        })
        .collect();
    let run = |del: bool| {
        let tasks: Vec<_> = atts
            .iter()
            .cloned()
            .map(|a| {
                let m = m.clone();
                tokio::spawn(async move {
                    if del {
                        m.del("net", &a).await.map(|_| ())
                    } else {
                        m.add("net", &a, &Default::default()).await.map(|_| ())
                    }
                })
            })
            .collect();
        futures::future::join_all(tasks)
    };
    for r in run(false).await {
        r.unwrap().unwrap();
    }
    for r in run(true).await {
        r.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_failed_del_keeps_the_cache_for_a_retry() {
    let env = Env::new(&["okA", "garbage"]);
    let m = env.manager();
    // garbage fails ADD too (exit 2, stderr only), and its DEL in the
    // rollback: the entry stays so a later DEL can retry.
    let err = m.add("net", &att(), &Default::default()).await.unwrap_err();
    let text = err.chain();
    assert!(
        text.contains("without a CNI error object: boom") && text.contains("undoing it failed"),
        "{text}"
    );
    assert!(env.root.join("state/cni/results/net").exists());
    let err = m.del("net", &att()).await.unwrap_err();
    assert!(
        err.chain().contains("garbage DEL failed"),
        "{}",
        err.chain()
    );
    // okA's DEL ran although garbage's failed first.
    assert_eq!(
        seq(&env.calls()),
        [
            "okA ADD",
            "garbage ADD",
            "garbage DEL",
            "okA DEL",
            "garbage DEL",
            "okA DEL"
        ]
    );
}

#[tokio::test]
async fn a_missing_plugin_is_named_with_where_it_was_looked_for() {
    let env = Env::new(&["okA", "nosuch"]);
    let err = env
        .manager()
        .add("net", &att(), &Default::default())
        .await
        .unwrap_err();
    let text = err.chain();
    assert!(err.is_not_found(), "{text}");
    assert!(
        text.contains("\"nosuch\" not found") && text.contains("nowhere") && text.contains("/bin"),
        "{text}"
    );
    let exec = env.manager().exec().clone();
    assert!(exec.find("../okA").is_err() && exec.find("okA").is_ok());
}

#[tokio::test]
async fn version_and_timeout() {
    let env = Env::new(&["slow"]);
    let m = env.manager();
    let v = m.exec().version("okA").await.unwrap();
    assert_eq!(v.cni_version, "1.0.0");
    assert_eq!(v.supported_versions, ["0.4.0", "1.0.0"]);
    let calls = env.calls();
    assert!(
        calls[0].2.contains("CNI_COMMAND=VERSION\n"),
        "{:?}",
        calls[0]
    );
    assert!(!calls[0].2.contains("CNI_CONTAINERID"));
    assert_eq!(calls[0].3["cniVersion"], "1.0.0");
    let t = std::time::Instant::now();
    let err = m.add("net", &att(), &Default::default()).await.unwrap_err();
    assert_eq!(err.kind(), Kind::DeadlineExceeded, "{}", err.chain());
    assert!(
        err.chain().contains("did not finish within 1s"),
        "{}",
        err.chain()
    );
    // ADD and its rollback DEL each give up after 1s, not 30.
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}

fn conf_env() -> (tempfile::TempDir, NetworkConfig, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NetworkConfig {
        cni_bin_dirs: vec![dir.path().join("bin")],
        cni_conf_dir: dir.path().join("net.d"),
        ..Default::default()
    };
    let state = dir.path().join("state");
    (dir, cfg, state)
}

#[tokio::test]
async fn networks_default_user_duplicates_and_overlaps() {
    let (_d, cfg, state) = conf_env();
    let m = NetworkManager::new(&cfg, &state);
    assert!(m.list().unwrap().is_empty());
    let def = m.network("bridge").await.unwrap();
    assert_eq!(def.path, cfg.cni_conf_dir.join("bridge.conflist"));
    let p = &def.plugins;
    let types: Vec<&str> = p.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["bridge", "portmap", "firewall"]);
    assert_eq!(p[2]["ingressPolicy"], "same-bridge");
    assert_eq!(p[0]["bridge"], "berth0");
    assert_eq!(p[0]["ipMasq"], true);
    assert_eq!(p[0]["ipam"]["type"], "host-local");
    assert_eq!(p[0]["ipam"]["ranges"][0][0]["subnet"], "10.88.0.0/16");
    assert_eq!(p[0]["ipam"]["ranges"][0][0]["gateway"], "10.88.0.1");
    assert_eq!(p[0]["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(p[0]["ipam"]["dataDir"], json!(state.join("cni/networks")));
    assert_eq!(p[1]["capabilities"]["portMappings"], true);
    // Written once: a second use reads the file.
    assert_eq!(m.ensure_default().await.unwrap(), def);

    let spec = |name: &str, subnet: Option<&str>| NetworkSpec {
        name: name.into(),
        subnet: subnet.map(Into::into),
        ..Default::default()
    };
    let a = m.create(&spec("a", None)).await.unwrap();
    assert_eq!(a.subnets()[0].to_string(), "10.89.0.0/24");
    let b = m
        .create(&NetworkSpec {
            internal: true,
            gateway: Some("10.89.1.254".into()),
            ..spec("b", None)
        })
        .await
        .unwrap();
    let bp = &b.plugins[0];
    assert_eq!(bp["ipam"]["ranges"][0][0]["subnet"], "10.89.1.0/24");
    assert_eq!(bp["ipam"]["ranges"][0][0]["gateway"], "10.89.1.254");
    assert_eq!(bp["ipMasq"], false);
    assert!(bp["ipam"].get("routes").is_none());
    assert!(bp["bridge"].as_str().unwrap().starts_with("br-"));
    assert!(bp["bridge"].as_str().unwrap().len() <= 15);
    assert_ne!(bp["bridge"], a.plugins[0]["bridge"]);

    let err = m
        .create(&spec("a", Some("10.90.0.0/24")))
        .await
        .unwrap_err();
    assert!(err.is_already_exists() && err.to_string().contains("already exists"));
    let err = m
        .create(&spec("c", Some("10.88.7.0/24")))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("10.88.7.0/24 overlaps network \"bridge\"'s subnet 10.88.0.0/16"),
        "{err}"
    );
    for (name, want) in [
        ("bridge", "default network"),
        ("host", "reserved"),
        ("../x", "invalid"),
    ] {
        let err = m.create(&spec(name, None)).await.unwrap_err();
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    let err = m
        .create(&NetworkSpec {
            gateway: Some("10.91.0.0".into()),
            ..spec("d", Some("10.91.0.0/24"))
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a host address"), "{err}");

    let names: Vec<String> = m.list().unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["a", "b", "bridge"]);
    m.remove("a").await.unwrap();
    assert!(m.remove("a").await.unwrap_err().is_not_found());
    assert!(m.remove("bridge").await.is_err());
    // The freed subnet is handed out again.
    let e = m.create(&spec("e", None)).await.unwrap();
    assert_eq!(e.subnets()[0].to_string(), "10.89.0.0/24");
    let state_mode = std::fs::metadata(state.join("cni"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(state_mode & 0o777, 0o700);
}

#[test]
fn conflists_are_read_in_name_order_and_checked() {
    let (_d, cfg, _state) = conf_env();
    let dir: &Path = &cfg.cni_conf_dir;
    std::fs::create_dir_all(dir).unwrap();
    let one = |name: &str, t: &str| {
        json!({"cniVersion": "1.0.0", "name": name, "plugins": [{"type": t}]}).to_string()
    };
    std::fs::write(dir.join("20-x.conflist"), one("x", "second")).unwrap();
    std::fs::write(dir.join("10-x.conflist"), one("x", "first")).unwrap();
    std::fs::write(dir.join("x.conf"), "not read").unwrap();
    let all = conflist::load_all(dir).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].plugins[0]["type"], "first");
    std::fs::write(dir.join("30-bad.conflist"), r#"{"name":"y","plugins":[]}"#).unwrap();
    let err = conflist::load_all(dir).unwrap_err();
    assert!(err.to_string().contains("no \"cniVersion\""), "{err}");
}

#[test]
fn container_ids_are_unique_across_namespaces() {
    let a = cni_container_id("a-b", "c");
    assert_ne!(a, cni_container_id("a", "b-c"));
    assert_eq!(a.len(), 64);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn netns_paths_cannot_escape_their_folder() {
    let d = NetnsDir::new(Path::new("/run/berth"));
    assert_eq!(
        d.path("default", "c1").unwrap(),
        PathBuf::from("/run/berth/netns/default/c1")
    );
    for (ns, id) in [
        ("..", "c"),
        ("a/b", "c"),
        ("default", ""),
        ("default", "../x"),
    ] {
        let err = d.path(ns, id).unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument, "{ns}/{id}");
    }
    // Listing a namespace that has none is empty, not an error.
    assert!(d.list("nothing-here").unwrap().is_empty());
}
