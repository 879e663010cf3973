//! The OCI runtime spec `berthctl run` creates a container with:
//! containerd's defaults, then the image's configuration, then the flags.

use crate::cli::RunArgs;
use crate::error::CtlError;
use crate::stdio::terminal_size;
use anyhow::{Result, bail};
use berth_proto::capabilities::DEFAULT_CAPS;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;

/// `--mount type=bind,src=/a,dst=/b,options=rbind:ro`.
fn parse_mount(m: &str) -> Result<Value> {
    let mut kv: HashMap<&str, &str> = HashMap::new();
    for part in m.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| CtlError(format!("--mount {m:?}: expected key=value pairs")))?;
        kv.insert(k, v);
    }
    let typ = kv.get("type").copied().unwrap_or("bind");
    let src = kv
        .get("src")
        .or(kv.get("source"))
        .copied()
        .unwrap_or_default();
    let dst = kv
        .get("dst")
        .or(kv.get("destination"))
        .or(kv.get("target"))
        .copied()
        .ok_or_else(|| CtlError(format!("--mount {m:?}: dst= is required")))?;
    let mut opts: Vec<String> = kv
        .get("options")
        .map(|o| o.split(':').map(String::from).collect())
        .unwrap_or_default();
    if typ == "bind" && !opts.iter().any(|o| o == "bind" || o == "rbind") {
        opts.push("rbind".into());
    }
    Ok(json!({"destination": dst, "type": typ, "source": src, "options": opts}))
}

/// The OCI spec for `args` of the run: containerd's defaults, the image's
/// configuration, then the flags.
pub fn build_spec(ns: &str, id: &str, a: &RunArgs, image_cfg: &Value) -> Result<Value> {
    let icfg = &image_cfg["config"];
    let args = crate::spec_more::args(a, icfg)?;
    let mut env: Vec<String> = crate::spec_more::strings(&icfg["Env"]);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    // --env-file first: -e overrides it, as in docker.
    for e in a.more.env_files.iter().flat_map(|f| &f.0).chain(&a.env) {
        // `-e KEY` passes the caller's value; when the caller has none it
        // unsets KEY (the image's too), as docker's daemon does.
        let e = match e.split_once('=') {
            Some(_) => e.clone(),
            None => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => {
                    env.retain(|x| x.split('=').next() != Some(e.as_str()));
                    continue;
                }
            },
        };
        let key = e.split('=').next().unwrap_or_default().to_string();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(e);
    }
    if a.tty {
        env.push("TERM=xterm".into());
    }
    let cwd = a
        .cwd
        .clone()
        .or_else(|| {
            icfg["WorkingDir"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| "/".into());
    // Root until `-u` (or the image's user) is resolved in the image's
    // /etc/passwd and /etc/group: see crate::userdb.
    let (uid, gid) = (0, 0);
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    let mut mounts = berth_proto::spec_defaults::mounts();
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if a.host_network() {
        // As ctr's --net-host: the host's name files, read-only.
        for f in ["/etc/hosts", "/etc/resolv.conf"] {
            if Path::new(f).exists() {
                mounts.push(json!({"destination": f, "type": "bind", "source": f, "options": ["rbind", "ro"]}));
            }
        }
    } else {
        namespaces.push(json!({"type": "network"}));
    }
    for m in &a.mounts {
        mounts.push(parse_mount(m)?);
    }
    let mut resources = json!({
        "devices": berth_proto::spec_defaults::device_rules(),
    });
    if let Some(m) = a.memory_limit {
        resources["memory"] = json!({"limit": m});
    }
    if let Some(c) = a.cpus {
        let period: u64 = 100_000;
        let quota = (c * period as f64).round();
        // Bounds checked so the cast below neither saturates nor wraps.
        if !(quota >= 1.0 && quota < i64::MAX as f64) {
            bail!("--cpus {c} is out of range");
        }
        // In 1..i64::MAX and integral: checked above.
        #[allow(clippy::cast_possible_truncation)]
        let quota = quota as i64;
        resources["cpu"] = json!({"quota": quota, "period": period});
    }
    // -1 is docker's "no limit": nothing is set.
    if let Some(p) = a.pids_limit.filter(|p| *p > 0) {
        resources["pids"] = json!({"limit": p});
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": a.tty,
            "user": {"uid": uid, "gid": gid, "additionalGids": [gid]},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs"},
        "hostname": a.hostname.clone().unwrap_or_else(|| id.chars().take(63).collect()),
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": format!("/{ns}/{id}"),
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    });
    // On the host's network the host's name, unless one is asked for
    // (the UTS namespace is still the container's own).
    if a.host_network() && a.hostname.is_none() {
        spec["hostname"] = Value::Null;
    }
    if a.tty
        && let Some((w, h)) = terminal_size()
    {
        spec["process"]["consoleSize"] = json!({"height": h, "width": w});
    }
    crate::spec_more::apply(a, DEFAULT_CAPS, &mut spec)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn spec(args: &[&str]) -> Value {
        let mut v = vec!["berthctl", "run"];
        v.extend_from_slice(args);
        let Command::Run(a) = Cli::try_parse_from(v).unwrap().command else {
            panic!("not run");
        };
        let cfg = json!({"config": {"Env": ["A=image", "B=image"], "Cmd": ["sh"]}});
        build_spec("ns", "web", &a, &cfg).unwrap()
    }

    #[test]
    fn flags_reach_the_spec() {
        let s = spec(&[
            "-e",
            "A=flag",
            "-w",
            "/srv",
            "-m",
            "64m",
            "--pids-limit",
            "9",
            "bb",
            "ls",
            "-l",
        ]);
        assert_eq!(s["process"]["args"], json!(["ls", "-l"]));
        assert_eq!(s["process"]["cwd"], "/srv");
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 9);
        assert_eq!(s["linux"]["cgroupsPath"], "/ns/web");
        assert_eq!(s["hostname"], "web");
        let env = s["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("A=flag")) && !env.contains(&json!("A=image")));
        assert!(env.contains(&json!("B=image")));
        // No command given: the image's.
        assert_eq!(spec(&["bb"])["process"]["args"], json!(["sh"]));
        // -1 is no limit at all.
        assert!(spec(&["--pids-limit", "-1", "bb"])["linux"]["resources"]["pids"].is_null());
    }

    fn network_ns(s: &Value) -> Option<&Value> {
        s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "network")
    }

    fn mounted(s: &Value, dst: &str) -> Option<Value> {
        s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == dst)
            .cloned()
    }

    #[test]
    fn networks_keep_a_new_network_namespace() {
        // berthd gives it a path (the netns it sets up) in the bundle only.
        for args in [
            &["bb"][..],
            &["--net", "none", "bb"][..],
            &["--net", "a", "--net", "b", "-p", "80:80", "bb"][..],
        ] {
            let s = spec(args);
            assert_eq!(
                network_ns(&s),
                Some(&json!({"type": "network"})),
                "{args:?}"
            );
            assert!(mounted(&s, "/etc/hosts").is_none(), "{args:?}");
            assert_eq!(s["hostname"], "web", "{args:?}");
        }
        assert_eq!(spec(&["--hostname", "box", "bb"])["hostname"], "box");
    }

    #[test]
    fn host_network_shares_the_hosts_namespace_and_name_files() {
        for args in [&["--net", "host", "bb"][..], &["--net-host", "bb"][..]] {
            let s = spec(args);
            assert_eq!(network_ns(&s), None, "{args:?}");
            for f in ["/etc/hosts", "/etc/resolv.conf"] {
                if Path::new(f).exists() {
                    assert_eq!(
                        mounted(&s, f),
                        Some(json!({"destination": f, "type": "bind", "source": f,
                                    "options": ["rbind", "ro"]})),
                        "{args:?}"
                    );
                }
            }
            // Other namespaces stay the container's own.
            assert_eq!(s["linux"]["namespaces"].as_array().unwrap().len(), 4);
            assert!(s["hostname"].is_null(), "{args:?}");
        }
        assert_eq!(
            spec(&["--net", "host", "--hostname", "h1", "bb"])["hostname"],
            "h1"
        );
    }

    #[test]
    fn env_key_alone_takes_the_callers_value() {
        // PATH is set for any test process; the name below is not.
        let path = std::env::var("PATH").unwrap();
        let s = spec(&[
            "-e",
            "PATH",
            "-e",
            "BERTH_TEST_SURELY_UNSET_8F3A",
            "-e",
            "B",
            "bb",
        ]);
        let env = s["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!(format!("PATH={path}"))), "{env:?}");
        assert!(
            !env.iter()
                .any(|e| e.as_str().unwrap().starts_with("BERTH_TEST_SURELY_UNSET")),
            "{env:?}"
        );
        // Unset for the caller: the image's value goes too, as in docker.
        if std::env::var("B").is_err() {
            assert!(
                !env.iter().any(|e| e.as_str().unwrap().starts_with("B=")),
                "{env:?}"
            );
        }
    }
}
