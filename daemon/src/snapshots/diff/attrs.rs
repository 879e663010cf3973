//! Ownership, mode, times and xattrs of applied entries, set on the entry
//! itself (never through a path that could be swapped).

use super::target::{fd_path, sys};
use crate::error::Result;
use nix::fcntl::AtFlags;
use nix::sys::stat::{Mode, UtimensatFlags, futimens, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;

pub(super) struct Meta {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mode: u32,
    pub(super) mtime: u64,
    pub(super) xattrs: Vec<(String, Vec<u8>)>,
}

pub(super) fn times(mtime: u64) -> (TimeSpec, TimeSpec) {
    let t = TimeSpec::new(mtime as i64, 0);
    (t, t)
}

/// Sets one xattr through `set`. A filesystem that does not support it
/// (ENOTSUP) loses it with a warning, as in containerd; any other failure
/// fails the layer.
pub(super) fn set_xattr(
    entry: &OsStr,
    k: &str,
    set: impl FnOnce() -> std::io::Result<()>,
) -> Result<()> {
    match set() {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
            tracing::warn!(
                "layer entry {:?}: xattr {k} not supported by the filesystem, not set",
                entry.to_string_lossy()
            );
            Ok(())
        }
        Err(e) => Err(crate::error::io_err(
            format!("layer entry {:?}: set xattr {k}", entry.to_string_lossy()),
            e,
        )),
    }
}

pub(super) fn set_xattrs_fd(f: &File, m: &Meta, entry: &OsStr) -> Result<()> {
    use xattr::FileExt;
    for (k, v) in &m.xattrs {
        set_xattr(entry, k, || f.set_xattr(k, v))?;
    }
    Ok(())
}

/// Ownership, then mode (a chown clears set-id bits), then xattrs (a chown
/// clears capabilities), through an open descriptor.
pub(super) fn finish_fd(fd: OwnedFd, m: &Meta, entry: &OsStr, set_times: bool) -> Result<()> {
    nix::unistd::fchown(&fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))
        .map_err(|e| sys(entry, "chown", e))?;
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(m.mode & 0o7777))
        .map_err(|e| sys(entry, "chmod", e))?;
    let f = File::from(fd);
    set_xattrs_fd(&f, m, entry)?;
    if set_times {
        let (a, t) = times(m.mtime);
        futimens(&f, &a, &t).map_err(|e| sys(entry, "set times", e))?;
    }
    Ok(())
}

/// Metadata for entries that cannot be opened (symlinks, device nodes).
pub(super) fn finish_at(
    dir: &OwnedFd,
    name: &OsStr,
    m: &Meta,
    entry: &OsStr,
    symlink: bool,
) -> Result<()> {
    nix::unistd::fchownat(
        dir,
        name,
        Some(Uid::from_raw(m.uid)),
        Some(Gid::from_raw(m.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| sys(entry, "chown", e))?;
    if !symlink {
        // Not a symlink (we just made it), so following is harmless.
        nix::sys::stat::fchmodat(
            dir,
            name,
            Mode::from_bits_truncate(m.mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| sys(entry, "chmod", e))?;
        for (k, v) in &m.xattrs {
            set_xattr(entry, k, || xattr::set(fd_path(dir, name), k, v))?;
        }
    }
    let (a, t) = times(m.mtime);
    utimensat(dir, name, &a, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| sys(entry, "set times", e))
}
