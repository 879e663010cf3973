//! The mounts and devices of a CRI container's OCI spec, as containerd's
//! CRI makes them: the pod's name files and /dev/shm, the kubelet's bind
//! mounts with their propagation, and device nodes from the host.

use crate::error::{Error, Result};
use berth_proto::cri::{self, ContainerConfig, MountPropagation};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A bind mount asked for (the kubelet's, or one the sandbox adds).
#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    /// Read-only all the way down: the mounts under the source too (`rro`).
    pub recursive_read_only: bool,
    pub propagation: i32,
}

impl From<&cri::Mount> for Bind {
    fn from(m: &cri::Mount) -> Self {
        Bind {
            container_path: m.container_path.clone(),
            host_path: m.host_path.clone(),
            readonly: m.readonly,
            recursive_read_only: m.recursive_read_only,
            propagation: m.propagation,
        }
    }
}

/// The pod's files a container gets unless the kubelet mounts its own:
/// /etc/hostname (when made), /etc/hosts, /etc/resolv.conf (read-only
/// with a read-only rootfs) and the pod's /dev/shm (the host's with host
/// IPC).
pub fn sandbox_binds(
    etc_dir: &str,
    shm_path: &str,
    host_ipc: bool,
    readonly_rootfs: bool,
) -> Vec<Bind> {
    let mut out = Vec::new();
    if !etc_dir.is_empty() {
        for f in ["hostname", "hosts", "resolv.conf"] {
            let p = Path::new(etc_dir).join(f);
            if p.exists() {
                out.push(Bind {
                    container_path: format!("/etc/{f}"),
                    host_path: p.to_string_lossy().into_owned(),
                    readonly: readonly_rootfs,
                    recursive_read_only: false,
                    propagation: MountPropagation::PropagationPrivate as i32,
                });
            }
        }
    }
    let shm = if host_ipc { "/dev/shm" } else { shm_path };
    if !shm.is_empty() {
        out.push(Bind {
            container_path: "/dev/shm".into(),
            host_path: shm.into(),
            readonly: false,
            recursive_read_only: false,
            propagation: MountPropagation::PropagationPrivate as i32,
        });
    }
    out
}

/// Checks the kubelet's mounts for what berth does not do.
pub fn check(config: &ContainerConfig) -> Result<()> {
    for m in &config.mounts {
        let what = format!("mounts[{}]", m.container_path);
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(Error::invalid(format!(
                "{what}: idmap mounts (uidMappings/gidMappings) are not supported"
            )));
        }
        if m.recursive_read_only && !m.readonly {
            return Err(Error::invalid(format!(
                "{what}: recursive_read_only needs readonly: a recursive read-only mount is read-only"
            )));
        }
        if m.recursive_read_only && m.propagation != MountPropagation::PropagationPrivate as i32 {
            return Err(Error::invalid(format!(
                "{what}: recursive_read_only needs private propagation (mounts arriving later could not be made read-only)"
            )));
        }
        if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) || !m.image_sub_path.is_empty() {
            // Unimplemented (not InvalidArgument): the request is valid, berthd
            // lacks the feature, and the kubelet and critest read the code so.
            return Err(Error::unimplemented(format!(
                "{what}: image volumes are not supported"
            )));
        }
        if !m.container_path.starts_with('/') {
            return Err(Error::invalid(format!(
                "{what}: the container path must be absolute"
            )));
        }
    }
    if !config.cdi_devices.is_empty() {
        return Err(Error::invalid("CDI_devices: CDI is not supported"));
    }
    Ok(())
}

fn clean(p: &str) -> PathBuf {
    Path::new(p).components().collect()
}

/// The spec's mounts: the defaults (plus the read-only cgroup mount) less
/// those the binds cover, then the binds, shallowest first (as
/// containerd's `WithMounts`). Sets `linux.rootfsPropagation` for rshared
/// and rslave mounts. Makes missing host paths (0755), as the kubelet
/// expects of hostPath directories.
pub fn apply(spec: &mut Value, user: &[Bind], extra: &[Bind], mountinfo: &str) -> Result<()> {
    let mut binds: Vec<Bind> = user.to_vec();
    for e in extra {
        if !user
            .iter()
            .any(|u| clean(&u.container_path) == clean(&e.container_path))
        {
            binds.push(e.clone());
        }
    }
    binds.sort_by_key(|b| clean(&b.container_path).components().count());
    let mut defaults: Vec<Value> = spec["mounts"].as_array().cloned().unwrap_or_default();
    defaults.push(
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    );
    let covered: Vec<PathBuf> = binds.iter().map(|b| clean(&b.container_path)).collect();
    let dev_covered = covered.iter().any(|c| c == Path::new("/dev"));
    let mut mounts: Vec<Value> = defaults
        .into_iter()
        .filter(|m| {
            let d = clean(m["destination"].as_str().unwrap_or_default());
            !covered.contains(&d)
                && (!dev_covered || !d.starts_with("/dev") || d == Path::new("/dev"))
        })
        .collect();
    let mut rootfs_propagation: Option<&str> = None;
    for b in &binds {
        let src = Path::new(&b.host_path);
        if !src.exists() {
            std::fs::create_dir_all(src).map_err(|e| {
                crate::error::io_err(
                    format!("mounts[{}]: make host path {src:?}", b.container_path),
                    e,
                )
            })?;
        }
        let src = std::fs::canonicalize(src).map_err(|e| {
            crate::error::io_err(format!("mounts[{}]: resolve {src:?}", b.container_path), e)
        })?;
        let mut options = vec!["rbind"];
        match MountPropagation::try_from(b.propagation) {
            Ok(MountPropagation::PropagationPrivate) => options.push("rprivate"),
            Ok(MountPropagation::PropagationBidirectional) => {
                let (shared, _) = propagation_of(mountinfo, &src);
                if !shared {
                    return Err(Error::invalid(format!(
                        "mounts[{}]: {} is not on a shared mount (bidirectional propagation needs one)",
                        b.container_path,
                        src.display()
                    )));
                }
                options.push("rshared");
                rootfs_propagation = Some("rshared");
            }
            Ok(MountPropagation::PropagationHostToContainer) => {
                let (shared, slave) = propagation_of(mountinfo, &src);
                if !shared && !slave {
                    return Err(Error::invalid(format!(
                        "mounts[{}]: {} is not on a shared or slave mount (host-to-container propagation needs one)",
                        b.container_path,
                        src.display()
                    )));
                }
                options.push("rslave");
                if rootfs_propagation != Some("rshared") {
                    rootfs_propagation = Some("rslave");
                }
            }
            Err(_) => {
                return Err(Error::invalid(format!(
                    "mounts[{}]: unknown propagation {}",
                    b.container_path, b.propagation
                )));
            }
        }
        options.push(if b.readonly { "ro" } else { "rw" });
        if b.recursive_read_only {
            options.push("rro");
        }
        mounts.push(json!({"destination": b.container_path, "type": "bind",
            "source": src, "options": options}));
    }
    spec["mounts"] = Value::Array(mounts);
    if let Some(p) = rootfs_propagation {
        spec["linux"]["rootfsPropagation"] = json!(p);
    }
    Ok(())
}

/// Whether the mount holding `path` is shared, and whether it is a slave,
/// from /proc/self/mountinfo's optional fields.
pub fn propagation_of(mountinfo: &str, path: &Path) -> (bool, bool) {
    let mut best: Option<(usize, bool, bool)> = None;
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < 7 || sep < 6 {
            continue;
        }
        let mp = unescape(f[4]);
        if !path.starts_with(&mp) {
            continue;
        }
        let depth = Path::new(&mp).components().count();
        let opt = &f[6..sep];
        let shared = opt.iter().any(|o| o.starts_with("shared:"));
        let slave = opt.iter().any(|o| o.starts_with("master:"));
        // Later lines at the same depth are mounted over earlier ones.
        if best.is_none_or(|(d, _, _)| depth >= d) {
            best = Some((depth, shared, slave));
        }
    }
    best.map(|(_, s, m)| (s, m)).unwrap_or((false, false))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(n) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
        {
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One device node for the spec: its `linux.devices` entry and its cgroup
/// rule.
fn device(host: &Path, container: &str, access: &str) -> Result<Option<(Value, Value)>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(host)
        .map_err(|e| crate::error::io_err(format!("device {}", host.display()), e))?;
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Ok(None);
    };
    let rdev = md.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    Ok(Some((
        json!({"path": container, "type": typ, "major": major, "minor": minor,
               "fileMode": md.mode() & 0o777, "uid": md.uid(), "gid": md.gid()}),
        json!({"allow": true, "type": typ, "major": major, "minor": minor, "access": access}),
    )))
}

/// The kubelet's devices (a directory adds every device under it), as
/// containerd's `WithDevices`.
pub fn add_devices(spec: &mut Value, config: &ContainerConfig) -> Result<()> {
    for d in &config.devices {
        let host = std::fs::canonicalize(&d.host_path)
            .map_err(|e| crate::error::io_err(format!("devices: {}", d.host_path), e))?;
        let cpath = if d.container_path.is_empty() {
            d.host_path.clone()
        } else {
            d.container_path.clone()
        };
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !perms.chars().all(|c| "rwm".contains(c)) {
            return Err(Error::invalid(format!(
                "devices[{}]: invalid permissions {perms:?}",
                d.host_path
            )));
        }
        let mut found = Vec::new();
        if host.is_dir() {
            for e in walk(&host) {
                let rel = e.strip_prefix(&host).unwrap_or(&e);
                let c = Path::new(&cpath).join(rel).to_string_lossy().into_owned();
                if let Some(x) = device(&e, &c, perms)? {
                    found.push(x);
                }
            }
        } else {
            match device(&host, &cpath, perms)? {
                Some(x) => found.push(x),
                None => {
                    return Err(Error::invalid(format!(
                        "devices[{}]: not a device node",
                        d.host_path
                    )));
                }
            }
        }
        push_devices(spec, found);
    }
    Ok(())
}

fn push_devices(spec: &mut Value, found: Vec<(Value, Value)>) {
    for (node, rule) in found {
        if !spec["linux"]["devices"].is_array() {
            spec["linux"]["devices"] = json!([]);
        }
        if let Some(a) = spec["linux"]["devices"].as_array_mut() {
            a.push(node);
        }
        if let Some(a) = spec["linux"]["resources"]["devices"].as_array_mut() {
            a.push(rule);
        }
    }
}

/// Every file under `dir` (no symlinks followed).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            out.extend(walk(&e.path()));
        } else if !ft.is_symlink() {
            out.push(e.path());
        }
    }
    out
}

/// Privileged: every host device (as containerd's `WithHostDevices`, less
/// the directories the runtime mounts itself) and every device allowed.
pub fn host_devices(spec: &mut Value) -> Result<()> {
    let skip = [
        "/dev/pts",
        "/dev/shm",
        "/dev/fd",
        "/dev/mqueue",
        "/dev/console",
    ];
    let mut found = Vec::new();
    for p in walk(Path::new("/dev")) {
        if skip.iter().any(|s| p.starts_with(s)) {
            continue;
        }
        // A device that vanished while walking is no error.
        if let Ok(Some(x)) = device(&p, &p.to_string_lossy(), "rwm") {
            found.push(x.0);
        }
    }
    spec["linux"]["devices"] = Value::Array(found);
    spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        30 22 0:5 / /mnt/sh rw shared:9 - tmpfs t rw\n\
        31 22 0:6 / /mnt/sl rw master:9 - tmpfs t rw\n\
        32 22 0:7 / /mnt/pr rw - tmpfs t rw\n\
        33 22 0:8 / /mnt/with\\040space rw shared:3 - tmpfs t rw\n";

    #[test]
    fn propagation_comes_from_the_nearest_mount() {
        assert_eq!(propagation_of(MI, Path::new("/mnt/sh/x")), (true, false));
        assert_eq!(propagation_of(MI, Path::new("/mnt/sl")), (false, true));
        assert_eq!(propagation_of(MI, Path::new("/mnt/pr/a/b")), (false, false));
        assert_eq!(propagation_of(MI, Path::new("/srv")), (true, false));
        assert_eq!(
            propagation_of(MI, Path::new("/mnt/with space/d")),
            (true, false)
        );
    }

    fn bind(c: &str, h: &Path, ro: bool, p: MountPropagation) -> Bind {
        Bind {
            container_path: c.into(),
            host_path: h.to_string_lossy().into_owned(),
            readonly: ro,
            recursive_read_only: false,
            propagation: p as i32,
        }
    }

    #[test]
    fn binds_replace_defaults_and_order_by_depth() {
        let d = tempfile::tempdir().unwrap();
        let mut spec = json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
        ], "linux": {}});
        let a = d.path().join("a");
        let user = vec![
            bind(
                "/data/deep",
                &a.join("deep"),
                true,
                MountPropagation::PropagationPrivate,
            ),
            bind("/data", &a, false, MountPropagation::PropagationPrivate),
        ];
        let extra = vec![
            bind(
                "/dev/shm",
                d.path(),
                false,
                MountPropagation::PropagationPrivate,
            ),
            bind(
                "/data",
                d.path(),
                false,
                MountPropagation::PropagationPrivate,
            ),
        ];
        let mi = format!(
            "1 0 0:1 / / rw - x x rw\n2 1 0:2 / {} rw shared:4 - x x rw\n",
            d.path().display()
        );
        apply(&mut spec, &user, &extra, &mi).unwrap();
        let m = spec["mounts"].as_array().unwrap();
        let dests: Vec<&str> = m
            .iter()
            .map(|x| x["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/sys/fs/cgroup",
                "/data",
                "/data/deep",
                "/dev/shm"
            ]
        );
        // Missing host paths are made; ro/rw and propagation spelled.
        assert!(a.join("deep").is_dir());
        assert_eq!(m[4]["options"], json!(["rbind", "rprivate", "ro"]));
        assert_eq!(m[3]["source"], json!(a));
        assert!(spec["linux"]["rootfsPropagation"].is_null());
        let shared = vec![bind(
            "/s",
            d.path(),
            false,
            MountPropagation::PropagationBidirectional,
        )];
        apply(&mut spec, &shared, &[], &mi).unwrap();
        assert_eq!(spec["linux"]["rootfsPropagation"], "rshared");
        let private_mi = "1 0 0:1 / / rw - x x rw\n";
        let e = apply(&mut spec, &shared, &[], private_mi).unwrap_err();
        assert!(e.to_string().contains("not on a shared mount"), "{e}");
        let slave = vec![bind(
            "/s",
            d.path(),
            false,
            MountPropagation::PropagationHostToContainer,
        )];
        apply(&mut spec, &slave, &[], &mi).unwrap();
        assert_eq!(spec["linux"]["rootfsPropagation"], "rslave");
    }

    #[test]
    fn devices_from_the_host() {
        let mut spec =
            json!({"linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}}});
        let config = ContainerConfig {
            devices: vec![cri::Device {
                container_path: "/dev/mynull".into(),
                host_path: "/dev/null".into(),
                permissions: "rw".into(),
            }],
            ..Default::default()
        };
        add_devices(&mut spec, &config).unwrap();
        assert_eq!(spec["linux"]["devices"][0]["path"], "/dev/mynull");
        assert_eq!(spec["linux"]["devices"][0]["major"], 1);
        assert_eq!(spec["linux"]["devices"][0]["minor"], 3);
        assert_eq!(spec["linux"]["resources"]["devices"][1]["access"], "rw");
        let bad = ContainerConfig {
            devices: vec![cri::Device {
                container_path: "/x".into(),
                host_path: "/etc/hostname".into(),
                permissions: "rw".into(),
            }],
            ..Default::default()
        };
        assert!(add_devices(&mut spec, &bad).is_err());
    }
}
