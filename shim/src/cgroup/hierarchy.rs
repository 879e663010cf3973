//! The host's cgroup hierarchy, detected once per use, and the one place
//! that picks the v1 or v2 implementation for a cgroup path.

use super::base::Cgroup;
use super::{v1, v2};
use crate::{Error, Result};
use oci_spec::runtime::LinuxResources;
use std::path::{Path, PathBuf};

/// The host's cgroup hierarchy and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One mount per controller (or group of controllers) under the root.
    V1(PathBuf),
    /// One unified tree.
    V2(PathBuf),
}

/// Where cgroup filesystems are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

impl Hierarchy {
    /// The host's: v2 when the root is a cgroup2 mount (it has
    /// `cgroup.controllers`); a hybrid host, whose cgroup2 mount holds no
    /// controllers, is v1.
    pub fn detect() -> Hierarchy {
        Hierarchy::detect_at(Path::new(ROOT))
    }

    pub fn detect_at(root: &Path) -> Hierarchy {
        if root.join("cgroup.controllers").exists() {
            Hierarchy::V2(root.to_path_buf())
        } else {
            Hierarchy::V1(root.to_path_buf())
        }
    }

    fn root(&self) -> &Path {
        match self {
            Hierarchy::V1(r) | Hierarchy::V2(r) => r,
        }
    }

    /// The v1 hierarchies (directory names, `cpu,cpuacct` style), sorted;
    /// none on v2. Symlinks (`cpu` → `cpu,cpuacct`) and a hybrid host's
    /// cgroup2 mount are left out.
    pub fn controllers(&self) -> Vec<String> {
        let Hierarchy::V1(root) = self else {
            return Vec::new();
        };
        let mut v: Vec<String> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !e.path().join("cgroup.controllers").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    /// The directory of cgroup `path` (in v1 `controller`'s hierarchy).
    pub fn dir(&self, controller: Option<&str>, path: &str) -> PathBuf {
        let mut d = self.root().to_path_buf();
        if let Some(c) = controller {
            d.push(c);
        }
        d.join(path.trim_start_matches('/'))
    }

    /// Opens cgroup `path` (existing or not: for restart and cleanup).
    pub fn open(&self, path: &str) -> Box<dyn Cgroup> {
        match self {
            Hierarchy::V1(root) => Box::new(v1::V1::new(root, path, self.controllers())),
            Hierarchy::V2(root) => Box::new(v2::V2::new(root, path)),
        }
    }

    /// Creates cgroup `path` and applies `res` and the device rules (the
    /// spec's, if any, then runc's defaults); nothing is left behind when
    /// that fails.
    pub fn create(&self, path: &str, res: Option<&LinuxResources>) -> Result<Box<dyn Cgroup>> {
        if path.trim_start_matches('/').is_empty() {
            return Err(Error::invalid("the spec's cgroupsPath is empty"));
        }
        let cg: Box<dyn Cgroup> = match self {
            Hierarchy::V1(root) => Box::new(v1::V1::create(root, path, self.controllers())?),
            Hierarchy::V2(root) => Box::new(v2::V2::create(root, path)?),
        };
        // Device rules apply to every container, the spec's or none: runc
        // appends its defaults to an empty list too (an allow-list then).
        let mut r = res.cloned().unwrap_or_default();
        if r.devices().is_none() {
            r.set_devices(Some(Vec::new()));
        }
        if let Err(e) = cg.apply(&r) {
            if let Err(d) = cg.delete() {
                eprintln!("remove cgroup {path} after a failed create: {}", d.chain());
            }
            return Err(e);
        }
        Ok(cg)
    }
}

/// The cgroup2 path in a `/proc/<pid>/cgroup` file's text: its `0::` line.
pub fn unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The path, in a `/proc/<pid>/cgroup` file's text, of the v1 hierarchy
/// that holds `controller` (`4:cpu,cpuacct:/x` holds `cpu`).
pub fn controller_path<'a>(proc_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, list, path) = (f.next()?, f.next()?, f.next()?);
        list.split(',').any(|c| c == controller).then_some(path)
    })
}

impl Hierarchy {
    /// The cgroup `pid` is in, as a path [`Hierarchy::open`] takes: its
    /// memory hierarchy's on v1 (where OOM kills are counted), its unified
    /// one on v2. This finds a container's cgroup whatever named it (a
    /// cgroupfs path, a systemd slice, a runtime's default). A process that
    /// is gone is NotFound.
    pub fn cgroup_of(&self, pid: u32) -> Result<String> {
        let f = format!("/proc/{pid}/cgroup");
        let text = std::fs::read_to_string(&f).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(format!("process {pid} is gone")),
            _ => Error::io(format!("read {f}"), e),
        })?;
        let path = match self {
            Hierarchy::V1(_) => controller_path(&text, "memory"),
            Hierarchy::V2(_) => unified_path(&text),
        };
        path.map(str::to_string)
            .ok_or_else(|| Error::internal(format!("{f} names no cgroup of this hierarchy")))
    }
}

/// The directory, under the cgroup2 mount `root`, of the cgroup `pid` is
/// in: how containerd's runc shim finds a container's v2 cgroup. A process
/// that is gone is NotFound.
pub fn unified_dir(root: &Path, pid: u32) -> Result<PathBuf> {
    let path = Hierarchy::V2(root.to_path_buf()).cgroup_of(pid)?;
    Ok(root.join(path.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::base::tests::tree;

    #[test]
    fn detects_v2_only_with_root_controllers() {
        let root = tree("detect");
        std::fs::create_dir_all(root.join("memory")).unwrap();
        std::fs::create_dir_all(root.join("unified")).unwrap();
        std::fs::write(root.join("unified/cgroup.controllers"), "").unwrap();
        std::os::unix::fs::symlink("memory", root.join("mem")).unwrap();
        let h = Hierarchy::detect_at(&root);
        assert_eq!(h, Hierarchy::V1(root.clone()));
        // The hybrid host's cgroup2 mount and symlinks are no controllers.
        assert_eq!(h.controllers(), vec!["memory".to_string()]);
        assert_eq!(
            h.dir(Some("memory"), "/default/c1"),
            root.join("memory/default/c1")
        );
        std::fs::write(root.join("cgroup.controllers"), "cpu memory").unwrap();
        let h = Hierarchy::detect_at(&root);
        assert_eq!(h, Hierarchy::V2(root.clone()));
        assert!(h.controllers().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn unified_path_is_the_0_line() {
        let hybrid = "12:memory:/default/c1\n1:name=systemd:/default/c1\n0::/default/c1\n";
        assert_eq!(unified_path(hybrid), Some("/default/c1"));
        assert_eq!(unified_path("0::/\n"), Some("/"));
        assert_eq!(unified_path("4:cpu,cpuacct:/x\n"), None, "v1 only");
        // Our own cgroup, read from the kernel (any host but a v1-only
        // one has a 0:: line), lands under the root.
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        if let Some(p) = unified_path(&own) {
            let me = unified_dir(Path::new("/r"), std::process::id()).unwrap();
            assert_eq!(me, Path::new("/r").join(p.trim_start_matches('/')));
        }
        let gone = unified_dir(Path::new("/r"), u32::MAX).unwrap_err();
        assert_eq!(gone.kind(), berth_proto::errdefs::Kind::NotFound);
    }

    #[test]
    fn controller_path_finds_the_hierarchy_holding_it() {
        let hybrid = "4:cpu,cpuacct:/a\n12:memory:/default/c1\n1:name=systemd:/s\n0::/u\n";
        assert_eq!(controller_path(hybrid, "memory"), Some("/default/c1"));
        assert_eq!(controller_path(hybrid, "cpuacct"), Some("/a"));
        assert_eq!(controller_path(hybrid, "pids"), None);
        // `name=systemd` is no controller named `systemd`.
        assert_eq!(controller_path(hybrid, "systemd"), None);
        let me = std::process::id();
        let h = Hierarchy::detect();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let want = match h {
            Hierarchy::V1(_) => controller_path(&own, "memory"),
            Hierarchy::V2(_) => unified_path(&own),
        };
        if let Some(w) = want {
            assert_eq!(h.cgroup_of(me).unwrap(), w);
        }
        let gone = h.cgroup_of(u32::MAX).unwrap_err();
        assert_eq!(gone.kind(), berth_proto::errdefs::Kind::NotFound);
    }

    #[test]
    fn empty_path_is_refused() {
        let h = Hierarchy::V2(PathBuf::from("/nonexistent"));
        let e = h.create("/", None).err().unwrap();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::InvalidArgument);
    }
}
