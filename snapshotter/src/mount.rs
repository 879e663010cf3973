//! Mounts as snapshotters describe them, and performing them.

use crate::{Error, Result};
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// A filesystem mount: `mount -t <kind> -o <options> <source> <target>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Filesystem type (`bind`, `overlay`, …).
    pub kind: String,
    pub source: String,
    /// Sub-path under the mount point (unused by our snapshotters).
    pub target: String,
    pub options: Vec<String>,
}

impl From<Mount> for berth_proto::types::Mount {
    fn from(m: Mount) -> Self {
        Self {
            r#type: m.kind,
            source: m.source,
            target: m.target,
            options: m.options,
        }
    }
}

impl From<berth_proto::types::Mount> for Mount {
    fn from(m: berth_proto::types::Mount) -> Self {
        Self {
            kind: m.r#type,
            source: m.source,
            target: m.target,
            options: m.options,
        }
    }
}

/// Splits options into mount flags and the filesystem data string.
fn parse_options(options: &[String]) -> (MsFlags, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            _ => {
                data.push(o.clone());
                continue;
            }
        };
        flags |= set;
        flags &= !clear;
    }
    (flags, data)
}

/// Largest mount data the kernel takes in one page, with containerd's margin.
fn data_limit() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (if page > 0 { page as usize } else { 4096 }) - 512
}

/// Mounts every mount onto `target`, in order.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            // Leave nothing half-mounted.
            for _ in 0..i {
                let _ = unmount(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let (flags, data) = parse_options(&m.options);
    let what = || format!("mount {} {} on {}", m.kind, m.source, target.display());
    let bind = m.kind == "bind" || flags.contains(MsFlags::MS_BIND);
    if bind {
        let f = flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
        nix::mount::mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            f | MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::sys(what(), e))?;
        // Bind mounts ignore other flags until remounted.
        let rest = flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !rest.is_empty() {
            nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None::<&str>,
            )
            .map_err(|e| Error::sys(format!("{} (remount)", what()), e))?;
        }
        return Ok(());
    }
    let mut data_s = data.join(",");
    if data_s.len() <= data_limit() {
        return nix::mount::mount(
            Some(m.source.as_str()),
            target,
            Some(m.kind.as_str()),
            flags,
            Some(data_s.as_str()),
        )
        .map_err(|e| Error::sys(what(), e));
    }
    // Too long for one page (deep overlay chains): mount from the lower
    // directories' common parent with relative paths, in a thread with its
    // own working directory so the rest of the process is unaffected.
    let (dir, compact) = compact_lowerdir(&data)
        .ok_or_else(|| Error::invalid(format!("{}: mount options exceed one page", what())))?;
    data_s = compact.join(",");
    if data_s.len() > data_limit() {
        return Err(Error::invalid(format!(
            "{}: mount options are {} bytes even with relative paths (limit {})",
            what(),
            data_s.len(),
            data_limit()
        )));
    }
    let source = m.source.clone();
    let kind = m.kind.clone();
    let target = target.to_path_buf();
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                .map_err(|e| Error::sys("unshare working directory", e))?;
            nix::unistd::chdir(&dir)
                .map_err(|e| Error::sys(format!("chdir {}", dir.display()), e))?;
            nix::mount::mount(
                Some(source.as_str()),
                &target,
                Some(kind.as_str()),
                flags,
                Some(data_s.as_str()),
            )
            .map_err(|e| {
                Error::sys(
                    format!("mount {kind} on {} (relative lowerdir)", target.display()),
                    e,
                )
            })
        })
        .join()
        .unwrap_or_else(|_| Err(Error::internal("mount thread panicked")))
    })
}

/// Rewrites `lowerdir=` relative to the lower directories' common parent.
fn compact_lowerdir(data: &[String]) -> Option<(PathBuf, Vec<String>)> {
    let idx = data.iter().position(|o| o.starts_with("lowerdir="))?;
    let lowers: Vec<&str> = data[idx]["lowerdir=".len()..].split(':').collect();
    let mut common: PathBuf = Path::new(lowers[0]).parent()?.to_path_buf();
    while !lowers.iter().all(|l| Path::new(l).starts_with(&common)) {
        common = common.parent()?.to_path_buf();
    }
    let rel: Vec<String> = lowers
        .iter()
        .map(|l| {
            Path::new(l)
                .strip_prefix(&common)
                .map(|p| p.display().to_string())
        })
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    let mut out = data.to_vec();
    out[idx] = format!("lowerdir={}", rel.join(":"));
    Some((common, out))
}

/// Unmounts `target` (retrying briefly while busy, then detaching).
pub fn unmount(target: &Path) -> Result<()> {
    for _ in 0..50 {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::Error::EBUSY) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(nix::Error::EINVAL) => return Ok(()), // not mounted
            Err(e) => return Err(Error::sys(format!("unmount {}", target.display()), e)),
        }
    }
    nix::mount::umount2(target, MntFlags::MNT_DETACH)
        .map_err(|e| Error::sys(format!("unmount (detach) {}", target.display()), e))
}

/// Mounts on a fresh temporary directory; unmounted and removed on drop,
/// even when the caller fails.
pub struct TempMount {
    dir: Option<tempfile::TempDir>,
}

impl TempMount {
    /// Mounts `mounts` on a new directory under `base` (or the system temp dir).
    pub fn new(mounts: &[Mount], base: Option<&Path>) -> Result<TempMount> {
        let mut b = tempfile::Builder::new();
        let dir = match base {
            Some(p) => {
                std::fs::create_dir_all(p)
                    .map_err(|e| Error::io(format!("create {}", p.display()), e))?;
                b.prefix("mnt-").tempdir_in(p)
            }
            None => b.prefix("berth-mnt-").tempdir(),
        }
        .map_err(|e| Error::io("create mount point", e))?;
        mount_all(mounts, dir.path())?;
        Ok(TempMount { dir: Some(dir) })
    }

    /// Where the mounts are.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/"), |d| d.path())
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            if let Err(e) = unmount(d.path()) {
                tracing::warn!("{e}");
                // Never delete through a mount that is still there.
                let _ = d.keep();
                return;
            }
            let _ = std::fs::remove_dir(d.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_and_compaction() {
        let (f, d) = parse_options(&["ro".into(), "rbind".into(), "lowerdir=/a".into()]);
        assert!(f.contains(MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC));
        assert_eq!(d, vec!["lowerdir=/a".to_string()]);
        let lowers: Vec<String> = (0..3)
            .map(|i| format!("/var/lib/x/snapshots/{i}/fs"))
            .collect();
        let data = vec![
            "index=off".to_string(),
            format!("lowerdir={}", lowers.join(":")),
        ];
        let (dir, out) = compact_lowerdir(&data).unwrap();
        assert_eq!(dir, Path::new("/var/lib/x/snapshots"));
        assert_eq!(out[1], "lowerdir=0/fs:1/fs:2/fs");
    }
}
