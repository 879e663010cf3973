//! Filesystem helpers: disk usage of a tree, and a faithful recursive copy
//! (ownership, modes, times, xattrs, hard links, device nodes).

use crate::contract::Usage;
use crate::error::{Error, Result};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

/// Bytes allocated and inodes used under `root` (hard links counted once).
pub fn disk_usage(root: &Path) -> Result<Usage> {
    let mut seen = HashSet::new();
    let mut u = Usage::default();
    walk(root, &mut |_p, m| {
        if seen.insert((m.dev(), m.ino())) {
            u.inodes += 1;
            u.size += (m.blocks() * 512) as i64;
        }
        Ok(())
    })?;
    Ok(u)
}

fn walk(p: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<()>) -> Result<()> {
    let m = fs::symlink_metadata(p).map_err(|e| Error::io(format!("stat {}", p.display()), e))?;
    f(p, &m)?;
    if m.is_dir() {
        for e in fs::read_dir(p).map_err(|e| Error::io(format!("read {}", p.display()), e))? {
            let e = e.map_err(|e| Error::io(format!("read {}", p.display()), e))?;
            walk(&e.path(), f)?;
        }
    }
    Ok(())
}

fn set_times(p: &Path, m: &fs::Metadata) -> Result<()> {
    let at = TimeSpec::new(m.atime(), m.atime_nsec());
    let mt = TimeSpec::new(m.mtime(), m.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &at,
        &mt,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| Error::sys(format!("set times on {}", p.display()), e))
}

fn copy_xattrs(src: &Path, dst: &Path) {
    let Ok(names) = xattr::list(src) else { return };
    for n in names {
        if let Ok(Some(v)) = xattr::get(src, &n)
            && let Err(e) = xattr::set(dst, &n, &v)
        {
            tracing::debug!("copy xattr {:?} to {}: {e}", n, dst.display());
        }
    }
}

/// Copies the tree `src` into the existing directory `dst`, preserving
/// everything a container filesystem needs.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    copy_dir_contents(src, dst, &mut links)?;
    let m =
        fs::symlink_metadata(src).map_err(|e| Error::io(format!("stat {}", src.display()), e))?;
    finish(src, dst, &m)
}

/// Ownership, then mode and xattrs (a chown would clear capabilities), then
/// times (last, so nothing bumps them).
fn finish(src: &Path, dst: &Path, m: &fs::Metadata) -> Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        dst,
        Some(Uid::from_raw(m.uid())),
        Some(Gid::from_raw(m.gid())),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::sys(format!("chown {}", dst.display()), e))?;
    if !m.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(|e| Error::io(format!("chmod {}", dst.display()), e))?;
        copy_xattrs(src, dst);
    }
    set_times(dst, m)
}

fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> Result<()> {
    for e in fs::read_dir(src).map_err(|e| Error::io(format!("read {}", src.display()), e))? {
        let e = e.map_err(|e| Error::io(format!("read {}", src.display()), e))?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let m = fs::symlink_metadata(&from)
            .map_err(|e| Error::io(format!("stat {}", from.display()), e))?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(|e| Error::io(format!("mkdir {}", to.display()), e))?;
            copy_dir_contents(&from, &to, links)?;
            finish(&from, &to, &m)?;
            continue;
        }
        if m.nlink() > 1 && !ft.is_dir() {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, &to)
                    .map_err(|e| Error::io(format!("link {}", to.display()), e))?;
                continue;
            }
            links.insert((m.dev(), m.ino()), to.clone());
        }
        if ft.is_symlink() {
            let target = fs::read_link(&from)
                .map_err(|e| Error::io(format!("readlink {}", from.display()), e))?;
            symlink(&target, &to).map_err(|e| Error::io(format!("symlink {}", to.display()), e))?;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(|e| Error::io(format!("copy {}", from.display()), e))?;
        } else {
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else {
                continue; // sockets are not copied
            };
            mknod(
                &to,
                kind,
                Mode::from_bits_truncate(m.mode() & 0o7777),
                m.rdev(),
            )
            .map_err(|e| Error::sys(format!("mknod {}", to.display()), e))?;
        }
        finish(&from, &to, &m)?;
    }
    Ok(())
}
