//! Applying a layer tar to a directory, confined to it.
//!
//! Every path is resolved inside the target root with `openat2`
//! (`RESOLVE_IN_ROOT`): a symlink met on the way — absolute or full of `..`
//! — resolves as if the root were `/`, so nothing outside can be reached.
//! The final component is always handled with `*at` calls that do not follow
//! it.
//!
//! Entry names are cleaned as containerd and docker clean them: a leading
//! `/` is the layer root (builders such as umoci write `/` and `/etc/x`),
//! `.` and empty components vanish and `a/../b` is `b`; a name that would
//! still climb above the root (`../x`, `a/../../x`) is refused, as docker
//! refuses it. Hard-link targets follow the same rule and must already
//! exist under the target (in an overlay upper directory: in this layer).
//! The root entry itself is skipped, as both do: a layer does not change
//! the mode or owner of the snapshot root. GNU sparse files (whose header
//! may claim any size) are refused with an error naming the entry.
//!
//! Directories a layer implies without listing them (a child before, or
//! without, its parent) are made 0755 root-owned, or, when the parent
//! layers are known (overlay lower directories), with the mode, owner and
//! times of the first parent layer that has them, so the merged view keeps
//! them (containerd's `mkparent`).
//!
//! Whiteouts (`.wh.<name>`, `.wh..wh..opq`) become overlay whiteouts (a 0:0
//! character device, `trusted.overlay.opaque=y`) when applying to an
//! overlay upper directory, or deletions when applying to a full tree.

use super::attrs::{Meta, finish_at, finish_fd, times};
pub use super::stream::decompress;
use super::stream::{ChanReader, Hashing};
use super::target::{
    Target, bad, components, fd_path, id32, in_root, is_dir, join, lstat_at, remove_at, sys,
};
use crate::error::{Error, Result};
use crate::types::Digest;
use nix::fcntl::{AtFlags, OFlag, openat, openat2};
use nix::sys::stat::{Mode, SFlag, futimens, mknodat};
use sha2::Digest as _;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How whiteouts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Into an overlay upper directory: as overlay's own whiteout markers.
    Overlay,
    /// Into a complete tree: as deletions.
    Delete,
}

/// What an apply produced.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Digest of the uncompressed tar stream (the layer's diff ID).
    pub diff_id: Digest,
    /// Bytes of the uncompressed stream.
    pub size: u64,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Applies the layer read from `layer` (compressed or not) to `root`.
///
/// Decompression and hashing run on a second thread, so they overlap with
/// the filesystem work of extraction.
pub fn apply(root: &Path, layer: impl Read + Send, mode: Whiteouts) -> Result<Applied> {
    apply_over(root, &[], layer, mode)
}

/// Applies a layer to `root`, an overlay upper directory whose parent
/// layers are `parents` (topmost first): directories the layer implies
/// take their metadata from there.
pub fn apply_over(
    root: &Path,
    parents: &[&Path],
    layer: impl Read + Send,
    mode: Whiteouts,
) -> Result<Applied> {
    let open = |p: &Path| {
        openat(
            nix::fcntl::AT_FDCWD,
            p,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::internal(format!("open {}: {e}", p.display())))
    };
    let target = Target {
        root: open(root)?,
        parents: parents.iter().map(|p| open(p)).collect::<Result<_>>()?,
    };
    let root_fd = &target.root;
    let mut created: HashSet<Vec<OsString>> = HashSet::new();
    let mut dir_times: Vec<(Vec<OsString>, u64)> = Vec::new();
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(8);
    let (extracted, produced) = std::thread::scope(|s| {
        let producer = s.spawn(move || -> Result<Applied> {
            let mut hashing = Hashing {
                inner: decompress(layer)?,
                hash: sha2::Sha256::new(),
                n: 0,
            };
            loop {
                let mut buf = vec![0u8; 1 << 20];
                match hashing.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            break; // the extractor gave up
                        }
                    }
                    Err(e) => {
                        let msg = format!("layer stream is corrupt: {e}");
                        let _ = tx.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                        return Err(Error::invalid(msg));
                    }
                }
            }
            Ok(Applied {
                diff_id: Digest::from_hash(&hashing.hash.finalize()),
                size: hashing.n,
            })
        });
        let mut reader = ChanReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        };
        let extracted = (|| {
            let mut archive = tar::Archive::new(&mut reader);
            let entries = archive
                .entries()
                .map_err(|e| Error::invalid(format!("layer is not a tar archive: {e}")))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| {
                    Error::invalid(format!("layer tar is malformed or truncated: {e}"))
                })?;
                apply_entry(&target, &mut entry, mode, &mut created, &mut dir_times)?;
            }
            // The digest covers the whole stream, padding after the end too.
            std::io::copy(&mut reader, &mut std::io::sink())
                .map_err(|e| Error::invalid(format!("layer stream is corrupt: {e}")))?;
            Ok::<(), Error>(())
        })();
        drop(reader); // unblocks the producer if extraction stopped early
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(Error::internal("layer reader thread panicked")));
        (extracted, produced)
    });
    // A broken stream explains a failed extraction better than the tar error.
    if let (Err(_), Err(p)) = (&extracted, &produced) {
        return Err(p.clone());
    }
    extracted?;
    let applied = produced?;
    // Directory times last: creating children changed them.
    for (comps, mtime) in dir_times.iter().rev() {
        let fd = if comps.is_empty() {
            nix::unistd::dup(root_fd).ok()
        } else {
            openat2(
                root_fd,
                &join(comps),
                in_root(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW),
            )
            .ok()
        };
        if let Some(fd) = fd {
            let (a, t) = times(*mtime);
            let _ = futimens(&fd, &a, &t);
        }
    }
    Ok(applied)
}

fn apply_entry<R: Read>(
    target: &Target,
    entry: &mut tar::Entry<'_, R>,
    mode: Whiteouts,
    created: &mut HashSet<Vec<OsString>>,
    dir_times: &mut Vec<(Vec<OsString>, u64)>,
) -> Result<()> {
    let raw = OsStr::from_bytes(&entry.path_bytes()).to_os_string();
    let kind = entry.header().entry_type();
    let comps = components(&raw)?;
    let header = entry.header();
    // Empty numeric fields read as zero, as other tar readers (Go's) do.
    let mut meta = Meta {
        uid: id32(&raw, "uid", header.uid().unwrap_or(0))?,
        gid: id32(&raw, "gid", header.gid().unwrap_or(0))?,
        mode: header.mode().unwrap_or(0o644),
        mtime: header.mtime().unwrap_or(0),
        xattrs: Vec::new(),
    };
    if let Some(exts) = entry.pax_extensions().map_err(|e| bad(&raw, e))? {
        for ext in exts {
            let ext = ext.map_err(|e| bad(&raw, e))?;
            let Ok(k) = ext.key() else { continue };
            if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                meta.xattrs
                    .push((name.to_string(), ext.value_bytes().to_vec()));
                continue;
            }
            // PAX records override the header's fields (large ids, times
            // with fractions, as Go's archive/tar writes them).
            let id = || {
                ext.value()
                    .ok()
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| bad(&raw, format!("PAX {k} is not a 32-bit id")))
            };
            match k {
                "uid" => meta.uid = id()?,
                "gid" => meta.gid = id()?,
                "mtime" => {
                    // Seconds, maybe with a fraction; a time before 1970 keeps the header's.
                    if let Some(secs) = ext
                        .value()
                        .ok()
                        .and_then(|v| v.split('.').next())
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        meta.mtime = secs;
                    }
                }
                _ => {}
            }
        }
    }

    let root = &target.root;
    let Some((name, parent)) = comps.split_last() else {
        // The root itself (`/`, `./`): skipped, as containerd and docker do.
        tracing::debug!(
            "layer entry {:?}: resolves to the root, skipped",
            raw.to_string_lossy()
        );
        return Ok(());
    };
    let name_s = name.to_string_lossy();

    // Whiteouts.
    if name_s == OPAQUE {
        let Some(dir) = target.whiteout_dir(parent, &raw)? else {
            return Ok(());
        };
        match mode {
            Whiteouts::Overlay => {
                xattr::set(
                    fd_path(&dir, OsStr::new(".")),
                    "trusted.overlay.opaque",
                    b"y",
                )
                .map_err(|e| {
                    crate::error::io_err(
                        format!(
                            "layer entry {:?}: mark directory opaque",
                            raw.to_string_lossy()
                        ),
                        e,
                    )
                })?;
            }
            Whiteouts::Delete => {
                // Hide what lower layers put here, keep what this layer made.
                let rd = std::fs::read_dir(fd_path(&dir, OsStr::new("."))).map_err(|e| {
                    crate::error::io_err(
                        format!("layer entry {:?}: read directory", raw.to_string_lossy()),
                        e,
                    )
                })?;
                for child in rd.flatten() {
                    let mut full = parent.to_vec();
                    full.push(child.file_name());
                    if !created.contains(&full) {
                        remove_at(&dir, &child.file_name(), &raw)?;
                    }
                }
            }
        }
        return Ok(());
    }
    if let Some(hidden) = name_s.strip_prefix(WHITEOUT) {
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
            return Err(bad(&raw, "whiteout names no file in its directory"));
        }
        let Some(dir) = target.whiteout_dir(parent, &raw)? else {
            return Ok(());
        };
        let hidden = OsStr::new(hidden);
        remove_at(&dir, hidden, &raw)?;
        if mode == Whiteouts::Overlay {
            mknodat(&dir, hidden, SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(|e| sys(&raw, "create whiteout", e))?;
        }
        return Ok(());
    }

    let dir = target.open_dir(parent, &raw)?;
    let existing = lstat_at(&dir, name);
    if kind.is_dir() {
        if existing.as_ref().is_some_and(|st| !is_dir(st)) {
            remove_at(&dir, name, &raw)?;
        }
        if existing.as_ref().is_none_or(|st| !is_dir(st)) {
            nix::sys::stat::mkdirat(&dir, name.as_os_str(), Mode::from_bits_truncate(0o700))
                .map_err(|e| sys(&raw, "create directory", e))?;
        }
        let fd = openat(
            &dir,
            name.as_os_str(),
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| sys(&raw, "open directory", e))?;
        finish_fd(fd, &meta, &raw, false)?;
        dir_times.push((comps.clone(), meta.mtime));
        created.insert(comps);
        return Ok(());
    }
    if existing.is_some() {
        remove_at(&dir, name, &raw)?;
    }
    match kind {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let fd = openat(
                &dir,
                name.as_os_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| sys(&raw, "create file", e))?;
            let mut f = File::from(fd);
            let want = entry.header().size().map_err(|e| bad(&raw, e))?;
            let got = std::io::copy(entry, &mut f).map_err(|e| {
                Error::invalid(format!(
                    "layer entry {:?}: read data: {e}",
                    raw.to_string_lossy()
                ))
            })?;
            if got != want {
                return Err(bad(
                    &raw,
                    format!("data is cut short ({got} of {want} bytes): the layer is truncated"),
                ));
            }
            finish_fd(OwnedFd::from(f), &meta, &raw, true)?;
        }
        tar::EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| bad(&raw, "symlink without a target"))?;
            nix::unistd::symlinkat(OsStr::from_bytes(&target), &dir, name.as_os_str())
                .map_err(|e| sys(&raw, "create symlink", e))?;
            finish_at(&dir, name, &meta, &raw, true)?;
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| bad(&raw, "hard link without a target"))?;
            let tcomps = components(OsStr::from_bytes(&target))
                .map_err(|e| e.context(format!("hard link {:?}", raw.to_string_lossy())))?;
            let tfd = openat2(
                root,
                &join(&tcomps),
                in_root(OFlag::O_PATH | OFlag::O_NOFOLLOW),
            )
            .map_err(|e| {
                bad(
                    &raw,
                    format!(
                        "hard link target {:?} is not in the layer: {e}",
                        String::from_utf8_lossy(&target)
                    ),
                )
            })?;
            nix::unistd::linkat(&tfd, "", &dir, name.as_os_str(), AtFlags::AT_EMPTY_PATH)
                .map_err(|e| sys(&raw, "create hard link", e))?;
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            let (kind_flag, dev) = match kind {
                tar::EntryType::Char | tar::EntryType::Block => {
                    let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                    let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                    let f = if kind == tar::EntryType::Char {
                        SFlag::S_IFCHR
                    } else {
                        SFlag::S_IFBLK
                    };
                    (
                        f,
                        nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
                    )
                }
                _ => (SFlag::S_IFIFO, 0),
            };
            mknodat(
                &dir,
                name.as_os_str(),
                kind_flag,
                Mode::from_bits_truncate(meta.mode & 0o7777),
                dev,
            )
            .map_err(|e| sys(&raw, "create device node", e))?;
            finish_at(&dir, name, &meta, &raw, false)?;
        }
        tar::EntryType::GNUSparse => {
            return Err(bad(
                &raw,
                "GNU sparse files are not extracted (their header can claim any size)",
            ));
        }
        other => {
            tracing::debug!(
                "layer entry {:?}: skipping entry type {other:?}",
                raw.to_string_lossy()
            );
            return Ok(());
        }
    }
    created.insert(comps);
    Ok(())
}
