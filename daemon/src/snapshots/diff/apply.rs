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

use crate::error::{Error, Result};
use crate::types::Digest;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fstatat, futimens, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use sha2::Digest as _;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

fn bad(entry: &OsStr, what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("layer entry {:?}: {what}", entry.to_string_lossy()))
}

/// A tar uid/gid: 64 bits in the archive, 32 in the kernel.
fn id32(entry: &OsStr, what: &str, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| bad(entry, format!("{what} {v} is out of range")))
}

fn sys(entry: &OsStr, op: &str, e: nix::Error) -> Error {
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
fn components(raw: &OsStr) -> Result<Vec<OsString>> {
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

fn join(comps: &[OsString]) -> PathBuf {
    let mut p = PathBuf::new();
    for c in comps {
        p.push(c);
    }
    p
}

fn in_root(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Where a layer is applied: the target root and, for an overlay upper
/// directory, the parent layers below it (topmost first).
struct Target {
    root: OwnedFd,
    parents: Vec<OwnedFd>,
}

impl Target {
    /// Opens the directory `comps` inside the root (creating missing parts).
    fn open_dir(&self, comps: &[OsString], entry: &OsStr) -> Result<OwnedFd> {
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
    fn whiteout_dir(&self, comps: &[OsString], entry: &OsStr) -> Result<Option<OwnedFd>> {
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
    fn inherit(&self, rel: &Path, made: &OwnedFd, entry: &OsStr) -> Result<()> {
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

fn lstat_at(dir: &OwnedFd, name: &OsStr) -> Option<FileStat> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// `/proc/self/fd/<dir>/<name>`: a path naming `name` inside an open
/// directory, for the few calls that have no `*at` form.
fn fd_path(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

/// Removes `name` in `dir` (recursively for directories, never following
/// symlinks).
fn remove_at(dir: &OwnedFd, name: &OsStr, entry: &OsStr) -> Result<()> {
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

struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn times(mtime: u64) -> (TimeSpec, TimeSpec) {
    let t = TimeSpec::new(mtime as i64, 0);
    (t, t)
}

/// Sets one xattr through `set`. A filesystem that does not support it
/// (ENOTSUP) loses it with a warning, as in containerd; any other failure
/// fails the layer.
fn set_xattr(entry: &OsStr, k: &str, set: impl FnOnce() -> std::io::Result<()>) -> Result<()> {
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

fn set_xattrs_fd(f: &File, m: &Meta, entry: &OsStr) -> Result<()> {
    use xattr::FileExt;
    for (k, v) in &m.xattrs {
        set_xattr(entry, k, || f.set_xattr(k, v))?;
    }
    Ok(())
}

/// Ownership, then mode (a chown clears set-id bits), then xattrs (a chown
/// clears capabilities), through an open descriptor.
fn finish_fd(fd: OwnedFd, m: &Meta, entry: &OsStr, set_times: bool) -> Result<()> {
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
fn finish_at(dir: &OwnedFd, name: &OsStr, m: &Meta, entry: &OsStr, symlink: bool) -> Result<()> {
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

/// Counts and hashes what the tar reader consumes (the uncompressed layer).
struct Hashing<R> {
    inner: R,
    hash: sha2::Sha256,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// Wraps a (possibly compressed) layer stream in the right decompressor,
/// chosen by its magic bytes.
pub fn decompress<'a>(r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let head = br
        .fill_buf()
        .map_err(|e| crate::error::io_err("read layer", e))?
        .to_vec();
    Ok(match head.as_slice() {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(br)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(
            zstd::stream::read::Decoder::with_buffer(br)
                .map_err(|e| crate::error::io_err("start zstd decoder", e))?,
        ),
        _ => Box::new(br),
    })
}

/// Reads the chunks a producer thread sends.
struct ChanReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

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
