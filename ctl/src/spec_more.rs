//! The parts of `run`'s OCI spec that [`crate::cli::RunMoreArgs`] sets:
//! the process's arguments (`--entrypoint`), its privileges
//! (`--read-only`, `--cap-add/--cap-drop`, `--privileged`,
//! `--security-opt`), and the labels berthd acts on (`--restart`).
//! [`crate::spec`] calls it while building the spec.

use crate::cli::RunArgs;
use crate::error::CtlError;
use anyhow::{Result, bail};
use berth_proto::labels as L;
use serde_json::{Value, json};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The strings of an image config's string list (`Env`, `Cmd`, ...);
/// anything else is none.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

/// The process's arguments, docker's way: the image's entrypoint and then
/// the command given (or the image's); `--entrypoint` replaces the
/// entrypoint and drops the image's command (`""`: no entrypoint).
pub fn args(a: &RunArgs, icfg: &Value) -> Result<Vec<String>> {
    let mut args: Vec<String> = match a.more.entrypoint.as_deref() {
        None => strings(&icfg["Entrypoint"]),
        Some("") => Vec::new(),
        Some(e) => vec![e.to_string()],
    };
    if !a.command().is_empty() {
        args.extend(a.command().iter().cloned());
    } else if a.more.entrypoint.is_none() {
        args.extend(strings(&icfg["Cmd"]));
    }
    if args.is_empty() {
        bail!(CtlError(
            "the image has no command; give one after the image (or --entrypoint)".into()
        ));
    }
    Ok(args)
}

/// The capabilities after docker's rules (its `TweakCapabilities`): ALL in
/// `--cap-add` gives every one but those dropped; ALL in `--cap-drop`
/// leaves only those added; otherwise the defaults minus the dropped, plus
/// the added.
pub fn capabilities(defaults: &[&str], add: &[String], drop: &[String]) -> Vec<String> {
    let has = |l: &[String], c: &str| l.iter().any(|x| x == c);
    let mut caps: Vec<String> = if has(add, "ALL") {
        all_caps().into_iter().filter(|c| !has(drop, c)).collect()
    } else if has(drop, "ALL") {
        add.to_vec()
    } else {
        let mut v: Vec<String> = defaults
            .iter()
            .filter(|c| !has(drop, c))
            .map(|c| c.to_string())
            .collect();
        for c in add {
            if !v.contains(c) {
                v.push(c.clone());
            }
        }
        v
    };
    caps.sort();
    caps.dedup();
    caps
}

/// Every capability this host can give: those in berthctl's own bounding
/// set (as docker takes its daemon's), so that a host (or an outer
/// container) without one does not fail every privileged run.
fn all_caps() -> Vec<String> {
    let known = caps::all();
    let have = caps::read(None, caps::CapSet::Bounding).unwrap_or_else(|_| known.clone());
    let mut v: Vec<String> = known.intersection(&have).map(|c| c.to_string()).collect();
    v.sort();
    v
}

/// Applies the privilege flags to `spec` (built from `defaults`' capabilities).
pub fn apply(a: &RunArgs, defaults: &[&str], spec: &mut Value) -> Result<()> {
    let m = &a.more;
    if m.read_only {
        spec["root"]["readonly"] = json!(true);
    }
    let caps = if m.privileged {
        all_caps()
    } else {
        capabilities(defaults, &m.cap_add, &m.cap_drop)
    };
    spec["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    if m.privileged {
        // As docker: every device, nothing masked, /sys writable.
        spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
        spec["linux"]["devices"] = json!(host_devices(Path::new("/dev")));
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            for mount in mounts.iter_mut().filter(|x| x["type"] == "sysfs") {
                mount["options"] = json!(["nosuid", "noexec", "nodev", "rw"]);
            }
        }
    }
    match m.seccomp() {
        Some(Some(profile)) => spec["linux"]["seccomp"] = profile.clone(),
        Some(None) => {
            if let Some(l) = spec["linux"].as_object_mut() {
                l.remove("seccomp");
            }
        }
        None => {}
    }
    if let Some(nnp) = m.no_new_privileges() {
        spec["process"]["noNewPrivileges"] = json!(nnp);
    }
    Ok(())
}

/// The label in which containerd's clients (ctr, nerdctl) keep the image's
/// STOPSIGNAL for `stop`.
pub const STOP_SIGNAL: &str = "io.containerd.image.config.stop-signal";

/// The labels of `--restart`, and the image's stop signal.
pub fn labels(a: &RunArgs, image_cfg: &Value) -> Vec<(&'static str, String)> {
    let stop = image_cfg["config"]["StopSignal"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(|s| (STOP_SIGNAL, s.to_string()));
    a.more
        .restart
        .iter()
        .map(|p| (L::RESTART, p.to_string()))
        .chain(stop)
        .collect()
}

/// The host's devices under `dir` as `linux.devices` entries (as
/// containerd's privileged containers get them), skipping what the
/// container mounts itself (pts, shm, mqueue) and the console.
fn host_devices(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = md.file_type();
        if ft.is_dir() {
            let name = e.file_name();
            if !matches!(
                name.to_str(),
                Some("pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev")
            ) {
                out.extend(host_devices(&path));
            }
            continue;
        }
        let kind = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            continue;
        };
        if path == Path::new("/dev/console") {
            continue;
        }
        let rdev = md.rdev();
        out.push(json!({
            "path": path, "type": kind,
            "major": nix::sys::stat::major(rdev), "minor": nix::sys::stat::minor(rdev),
            "fileMode": md.mode() & 0o7777, "uid": md.uid(), "gid": md.gid(),
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn capabilities_follow_dockers_rules() {
        let d = ["CAP_CHOWN", "CAP_KILL"];
        assert_eq!(capabilities(&d, &[], &[]), s(&["CAP_CHOWN", "CAP_KILL"]));
        assert_eq!(
            capabilities(&d, &s(&["CAP_NET_ADMIN"]), &s(&["CAP_CHOWN"])),
            s(&["CAP_KILL", "CAP_NET_ADMIN"])
        );
        assert_eq!(
            capabilities(&d, &s(&["CAP_KILL"]), &s(&["ALL"])),
            s(&["CAP_KILL"])
        );
        let all = capabilities(&d, &s(&["ALL"]), &s(&["CAP_SYS_ADMIN"]));
        assert!(all.len() > 30 && !all.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(all.contains(&"CAP_NET_ADMIN".to_string()));
    }

    fn spec(args: &[&str], image: Value) -> Result<Value> {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let mut v = vec!["berthctl", "run"];
        v.extend_from_slice(args);
        let Command::Run(a) = Cli::try_parse_from(v).unwrap().command else {
            panic!("not run");
        };
        crate::spec::build_spec("ns", "c1", &a, &json!({ "config": image }))
    }

    #[test]
    fn entrypoint_replaces_the_images_and_its_command() {
        let img = json!({"Entrypoint": ["/init"], "Cmd": ["serve"]});
        let args = |a: &[&str]| spec(a, img.clone()).map(|s| s["process"]["args"].clone());
        assert_eq!(args(&["bb"]).unwrap(), json!(["/init", "serve"]));
        assert_eq!(args(&["bb", "x"]).unwrap(), json!(["/init", "x"]));
        assert_eq!(args(&["--entrypoint", "sh", "bb"]).unwrap(), json!(["sh"]));
        assert_eq!(
            args(&["--entrypoint", "sh", "bb", "-c", "id"]).unwrap(),
            json!(["sh", "-c", "id"])
        );
        assert_eq!(
            args(&["--entrypoint", "", "bb", "ls"]).unwrap(),
            json!(["ls"])
        );
        let e = args(&["--entrypoint", "", "bb"]).unwrap_err().to_string();
        assert!(e.contains("no command"), "{e}");
    }

    #[test]
    fn privilege_flags_reach_the_spec() {
        let s = spec(&["bb"], json!({"Cmd": ["sh"]})).unwrap();
        assert!(s["root"]["readonly"].is_null());
        assert!(s["linux"]["seccomp"].is_null());
        assert_eq!(s["linux"]["maskedPaths"].as_array().map(Vec::len), Some(10));
        let caps = &s["process"]["capabilities"]["bounding"];
        assert!(
            caps.as_array().unwrap().contains(&json!("CAP_CHOWN")),
            "{caps}"
        );
        let s = spec(
            &[
                "--read-only",
                "--cap-drop",
                "CHOWN",
                "--cap-add",
                "sys_time",
                "bb",
            ],
            json!({"Cmd": ["sh"]}),
        )
        .unwrap();
        assert_eq!(s["root"]["readonly"], true);
        let caps = s["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap()
            .clone();
        assert!(!caps.contains(&json!("CAP_CHOWN")) && caps.contains(&json!("CAP_SYS_TIME")));
        let s = spec(
            &["--privileged", "--cap-drop", "ALL", "bb"],
            json!({"Cmd": ["sh"]}),
        )
        .unwrap();
        assert!(
            s["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len()
                > 30
        );
        assert_eq!(s["linux"]["maskedPaths"], json!([]));
        assert_eq!(s["linux"]["readonlyPaths"], json!([]));
        assert_eq!(
            s["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        let sys = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["type"] == "sysfs")
            .unwrap();
        assert!(
            sys["options"].as_array().unwrap().contains(&json!("rw")),
            "{sys}"
        );
        let s = spec(
            &["--security-opt", "no-new-privileges=false", "bb"],
            json!({"Cmd": ["sh"]}),
        )
        .unwrap();
        assert_eq!(s["process"]["noNewPrivileges"], false);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        std::fs::write(&p, r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#).unwrap();
        let opt = format!("seccomp={}", p.display());
        let s = spec(&["--security-opt", &opt, "bb"], json!({"Cmd": ["sh"]})).unwrap();
        assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    }

    #[test]
    fn labels_carry_the_restart_policy_and_stop_signal() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let Command::Run(a) = Cli::try_parse_from(["berthctl", "run", "--restart", "always", "bb"])
            .unwrap()
            .command
        else {
            panic!("not run");
        };
        let cfg = json!({"config": {"StopSignal": "SIGQUIT"}});
        assert_eq!(
            labels(&a, &cfg),
            [
                (L::RESTART, "always".to_string()),
                (STOP_SIGNAL, "SIGQUIT".to_string())
            ]
        );
        assert!(
            labels(
                &RunArgs {
                    more: Default::default(),
                    ..a
                },
                &json!({})
            )
            .is_empty()
        );
    }

    #[test]
    fn env_files_come_before_e() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("env");
        std::fs::write(&p, "A=file\nB=file\n").unwrap();
        let s = spec(
            &["--env-file", p.to_str().unwrap(), "-e", "B=flag", "bb"],
            json!({"Env": ["A=image"], "Cmd": ["sh"]}),
        )
        .unwrap();
        let env = s["process"]["env"].as_array().unwrap();
        assert!(
            env.contains(&json!("A=file")) && env.contains(&json!("B=flag")),
            "{env:?}"
        );
        assert!(
            !env.contains(&json!("A=image")) && !env.contains(&json!("B=file")),
            "{env:?}"
        );
    }

    #[test]
    fn host_devices_are_listed_without_the_containers_own() {
        let devs = host_devices(Path::new("/dev"));
        let null = devs.iter().find(|d| d["path"] == "/dev/null").unwrap();
        assert_eq!(
            (
                null["type"].as_str(),
                null["major"].as_u64(),
                null["minor"].as_u64()
            ),
            (Some("c"), Some(1), Some(3))
        );
        assert!(devs.iter().all(|d| {
            let p = d["path"].as_str().unwrap();
            !p.starts_with("/dev/pts/") && p != "/dev/console"
        }));
    }
}
