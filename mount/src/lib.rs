//! Mounts for berth: the [`Mount`] type snapshotters hand out, the one
//! parser for mount options ([`parse_options`]), and performing and undoing
//! mounts ([`mount_all`], [`unmount`]), and the owner-only directories and
//! files that keep mount points and secrets from other host users
//! ([`private`]).
//!
//! Shared by the snapshotters, berthd and the shim, so the shim need not
//! link the snapshotter crate (and its database and gRPC stack).

mod options;
pub mod private;
mod setattr;

pub use options::{MountOptions, RecursiveAttrs, attr, parse_options};
pub use setattr::{setattr_recursive, setattr_supported};

use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// A mount failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A system call failed while doing `what`.
    #[error("{what}: {}", std::io::Error::from(*errno))]
    Sys {
        /// What was being done.
        what: String,
        /// The system call's error.
        errno: nix::Error,
    },
    /// The mount cannot be expressed (options too long, …).
    #[error("{0}")]
    Invalid(String),
    /// The mount asks for something berth does not do (`loop`).
    #[error("{0}")]
    Unsupported(String),
    /// A bug or an environment failure (a mount thread panicked).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    fn sys(what: impl std::fmt::Display, errno: nix::Error) -> Self {
        Error::Sys {
            what: what.to_string(),
            errno,
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A filesystem mount: `mount -t <kind> -o <options> <source> <target>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Filesystem type (`bind`, `overlay`, …).
    pub kind: String,
    /// What to mount: a directory for bind mounts, a device or a name.
    pub source: String,
    /// Sub-path under the mount point (unused by our snapshotters).
    pub target: String,
    /// fstab-style options, as [`parse_options`] reads them.
    pub options: Vec<String>,
}

#[cfg(feature = "proto")]
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

#[cfg(feature = "proto")]
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

/// Largest mount data the kernel takes in one page, with containerd's margin.
fn data_limit() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // -1 (unknown) falls back to the smallest page size.
    usize::try_from(page)
        .ok()
        .filter(|p| *p > 0)
        .unwrap_or(4096)
        - 512
}

/// Mounts every mount onto `target`, in order, with containerd's semantics:
/// flags from [`parse_options`], bind mounts remounted to apply their other
/// flags, then each propagation change; an overlay whose options exceed a
/// page is mounted with `lowerdir` relative to the lower directories'
/// common parent.
///
/// On failure the mounts already made are undone. `loop` is refused
/// ([`Error::Unsupported`]).
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
    let opts = parse_options(&m.options);
    let what = || format!("mount {} {} on {}", m.kind, m.source, target.display());
    if opts.loop_device {
        return Err(Error::Unsupported(format!(
            "{}: loop mounts are not supported",
            what()
        )));
    }
    if opts.recursive.is_some() {
        // runc's options for a container's mounts; containerd's rootfs
        // mounts have no such thing.
        return Err(Error::Unsupported(format!(
            "{}: recursive attributes (rro, rnosuid, …) are not supported on rootfs mounts",
            what()
        )));
    }
    mount_with(m, target, opts.flags, &opts.data, &what)?;
    // As containerd and runc do: propagation is its own call after the
    // mount, one type per call, because mount(2) rejects it mixed with
    // other flags.
    for p in opts.propagation {
        nix::mount::mount(None::<&str>, target, None::<&str>, p, None::<&str>)
            .map_err(|e| Error::sys(format!("{} (propagation)", what()), e))?;
    }
    Ok(())
}

fn mount_with(
    m: &Mount,
    target: &Path,
    flags: MsFlags,
    data: &[String],
    what: &dyn Fn() -> String,
) -> Result<()> {
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
    let (dir, compact) = compact_lowerdir(data)
        .ok_or_else(|| Error::Invalid(format!("{}: mount options exceed one page", what())))?;
    data_s = compact.join(",");
    if data_s.len() > data_limit() {
        return Err(Error::Invalid(format!(
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
        .unwrap_or_else(|_| Err(Error::Internal("mount thread panicked".into())))
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

/// Unmounts `target`, retrying briefly while busy, then detaching it.
///
/// A `target` that is not a mount point is success, so undoing is
/// idempotent.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_compaction() {
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
        assert_eq!(out[0], "index=off");
    }

    #[test]
    fn loop_is_refused_before_any_mount() {
        let m = Mount {
            kind: "ext4".into(),
            source: "/nonexistent.img".into(),
            target: String::new(),
            options: vec!["loop".into(), "ro".into()],
        };
        let e = mount_all(&[m], Path::new("/nonexistent-target")).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
    }
}
