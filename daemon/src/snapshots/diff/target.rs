//! Confinement: resolving entry names inside the target root with
//! `openat2(RESOLVE_IN_ROOT)`, creating implied parent directories, and the
//! errors that name the offending entry.

use crate::error::{Error, Result};
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, futimens};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub(super) fn bad(entry: &OsStr, what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("layer entry {:?}: {what}", entry.to_string_lossy()))
}

/// A tar uid/gid: 64 bits in the archive, 32 in the kernel.
pub(super) fn id32(entry: &OsStr, what: &str, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| bad(entry, format!("{what} {v} is out of range")))
}

pub(super) fn sys(entry: &OsStr, op: &str, e: nix::Error) -> Error {
    let mut err = crate::error::io_err(
        format!("layer entry {:?}: {op}", entry.to_string_lossy()),
        std::io::Error::from(e),
    );
    // A missing path or a wrong file type is a fault of the layer, not ours.
    if matches!(
        e,
        nix::Error::ENOENT
            | nix::Error::ENOTDIR
            | nix::Error::EEXIST
            | nix::Error::EISDIR
            | nix::Error::ELOOP
    ) {
        err = err.with_kind(berth_proto::errdefs::Kind::InvalidArgument);
    }
    err
}

/// The components of an entry path under the layer root, cleaned lexically
/// (Go's `filepath.Clean`): a leading `/` is the root, `.` and empty parts
/// vanish, `..` removes the part before it and stops at the root of an
/// absolute name; a relative name whose `..` would leave the root is
/// refused.
pub(super) fn components(raw: &OsStr) -> Result<Vec<OsString>> {
    let bytes = raw.as_bytes();
    let absolute = bytes.first() == Some(&b'/');
    let mut out: Vec<OsString> = Vec::new();
    for part in bytes.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() && !absolute {
                    return Err(bad(raw, "'..' would escape the layer root"));
                }
            }
            n => out.push(OsStr::from_bytes(n).to_os_string()),
        }
    }
    Ok(out)
}

pub(super) fn join(comps: &[OsString]) -> PathBuf {
    let mut p = PathBuf::new();
    for c in comps {
        p.push(c);
    }
    p
}

pub(super) fn in_root(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Where a layer is applied: the target root and, for an overlay upper
/// directory, the parent layers below it (topmost first).
pub(super) struct Target {
    pub(super) root: OwnedFd,
    pub(super) parents: Vec<OwnedFd>,
}

impl Target {
    /// Opens the directory `comps` inside the root (creating missing parts).
    pub(super) fn open_dir(&self, comps: &[OsString], entry: &OsStr) -> Result<OwnedFd> {
        let root = &self.root;
        let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY;
        if comps.is_empty() {
            return nix::unistd::dup(root).map_err(|e| sys(entry, "open root", e));
        }
        match openat2(root, &join(comps), in_root(flags)) {
            Ok(fd) => return Ok(fd),
            Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(sys(entry, "open parent directory", e)),
        }
        let mut cur = nix::unistd::dup(root).map_err(|e| sys(entry, "open root", e))?;
        for i in 1..=comps.len() {
            let prefix = join(&comps[..i]);
            match openat2(root, &prefix, in_root(flags)) {
                Ok(fd) => cur = fd,
                Err(nix::Error::ENOENT) => {
                    nix::sys::stat::mkdirat(
                        &cur,
                        comps[i - 1].as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    )
                    .map_err(|e| sys(entry, "create parent directory", e))?;
                    cur = openat2(root, &prefix, in_root(flags))
                        .map_err(|e| sys(entry, "open created parent directory", e))?;
                    self.inherit(&prefix, &cur, entry)?;
                }
                Err(e) => return Err(sys(entry, "open parent directory", e)),
            }
        }
        Ok(cur)
    }

    /// The directory a whiteout applies in, or `None` when that path is
    /// not a directory here: this layer replaced it with a file (umoci
    /// writes `d` as a file and then `d/.wh.child`), which already hides
    /// everything below. containerd 1.6 fails such layers ("mkparent: not
    /// a directory"); nothing is left to hide, so berth applies them.
    pub(super) fn whiteout_dir(
        &self,
        comps: &[OsString],
        entry: &OsStr,
    ) -> Result<Option<OwnedFd>> {
        match self.open_dir(comps, entry) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if !comps.is_empty() => {
                let st = openat2(&self.root, &join(comps), in_root(OFlag::O_PATH))
                    .ok()
                    .and_then(|fd| nix::sys::stat::fstat(&fd).ok());
                match st {
                    Some(st) if !is_dir(&st) => {
                        tracing::debug!(
                            "layer entry {:?}: its directory was replaced by a file, nothing to hide",
                            entry.to_string_lossy()
                        );
                        Ok(None)
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Gives a directory this layer implied the mode, owner and times of
    /// the same directory in the first parent layer that has that path;
    /// if that layer has something else there, it was replaced: keep 0755.
    pub(super) fn inherit(&self, rel: &Path, made: &OwnedFd, entry: &OsStr) -> Result<()> {
        for parent in &self.parents {
            // O_PATH: never opens (or blocks on) what is there, follows a
            // final symlink as containerd's RootPath does.
            let fd = match openat2(parent, rel, in_root(OFlag::O_PATH)) {
                Ok(fd) => fd,
                Err(nix::Error::ENOENT) => continue,
                Err(nix::Error::ENOTDIR | nix::Error::ELOOP) => return Ok(()),
                Err(e) => return Err(sys(entry, "look up parent layer directory", e)),
            };
            let st = nix::sys::stat::fstat(&fd).map_err(|e| sys(entry, "stat parent layer", e))?;
            if !is_dir(&st) {
                return Ok(());
            }
            nix::unistd::fchown(
                made,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(|e| sys(entry, "chown implied directory", e))?;
            nix::sys::stat::fchmod(made, Mode::from_bits_truncate(st.st_mode & 0o7777))
                .map_err(|e| sys(entry, "chmod implied directory", e))?;
            let t = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
            futimens(made, &t, &t).map_err(|e| sys(entry, "set times", e))?;
            return Ok(());
        }
        Ok(())
    }
}

pub(super) fn lstat_at(dir: &OwnedFd, name: &OsStr) -> Option<FileStat> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()
}

pub(super) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// `/proc/self/fd/<dir>/<name>`: a path naming `name` inside an open
/// directory, for the few calls that have no `*at` form.
pub(super) fn fd_path(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

/// Removes `name` in `dir` (recursively for directories, never following
/// symlinks).
pub(super) fn remove_at(dir: &OwnedFd, name: &OsStr, entry: &OsStr) -> Result<()> {
    let Some(st) = lstat_at(dir, name) else {
        return Ok(());
    };
    let p = fd_path(dir, name);
    let r = if is_dir(&st) {
        std::fs::remove_dir_all(&p)
    } else {
        std::fs::remove_file(&p)
    };
    r.map_err(|e| {
        crate::error::io_err(
            format!("layer entry {:?}: remove existing", entry.to_string_lossy()),
            e,
        )
    })
}
