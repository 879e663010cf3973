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

/// The process's arguments, docker's way: the image's entrypoint and then
/// the command given (or the image's); `--entrypoint` replaces the
/// entrypoint and drops the image's command (`""`: no entrypoint).
pub fn args(a: &RunArgs, icfg: &Value) -> Result<Vec<String>> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
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

/// The labels of `--restart`.
pub fn labels(a: &RunArgs) -> Vec<(&'static str, String)> {
    a.more
        .restart
        .iter()
        .map(|p| (L::RESTART, p.to_string()))
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
