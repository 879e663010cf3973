//! Computing a layer: the changes that turn the tree `lower` into `upper`,
//! as a tar stream with whiteouts (`.wh.<name>`) for deletions.

use crate::error::{Error, Result, io_err};
use std::collections::{HashMap, HashSet};
use std::fs::{self, Metadata};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

fn lstat(p: &Path) -> Option<Metadata> {
    fs::symlink_metadata(p).ok()
}

fn sorted_children(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .map_err(|e| io_err(format!("read {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    v.sort();
    Ok(v)
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = fs::File::open(a).map_err(|e| io_err(format!("open {}", a.display()), e))?;
    let mut fb = fs::File::open(b).map_err(|e| io_err(format!("open {}", b.display()), e))?;
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let na = fa.read(&mut ba).map_err(|e| io_err("compare", e))?;
        let nb = fb.read(&mut bb).map_err(|e| io_err("compare", e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// True when `u` (in upper) is unchanged from `l` (in lower).
fn unchanged(lp: &Path, l: &Metadata, up: &Path, u: &Metadata) -> Result<bool> {
    if l.file_type() != u.file_type()
        || l.mode() != u.mode()
        || l.uid() != u.uid()
        || l.gid() != u.gid()
        || l.rdev() != u.rdev()
    {
        return Ok(false);
    }
    if u.is_dir() {
        return Ok(true);
    }
    if l.len() != u.len() || l.mtime() != u.mtime() || l.mtime_nsec() != u.mtime_nsec() {
        return Ok(false);
    }
    if u.file_type().is_symlink() {
        return Ok(fs::read_link(lp).ok() == fs::read_link(up).ok());
    }
    // Extracted files carry whole-second times; compare their bytes.
    if u.is_file() && u.mtime_nsec() == 0 {
        return same_content(lp, up);
    }
    Ok(true)
}

struct Writer<W: Write> {
    tar: tar::Builder<W>,
    emitted_dirs: HashSet<PathBuf>,
    links: HashMap<(u64, u64), PathBuf>,
    upper: PathBuf,
}

impl<W: Write> Writer<W> {
    fn header(m: &Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(u64::from(m.uid()));
        h.set_gid(u64::from(m.gid()));
        h.set_mtime(m.mtime().max(0) as u64);
        h.set_size(0);
        h
    }

    fn xattrs(&mut self, p: &Path) -> Result<()> {
        let Ok(names) = xattr::list(p) else {
            return Ok(());
        };
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        for n in names {
            let n = n.to_string_lossy().to_string();
            if n.starts_with("trusted.overlay.") {
                continue; // overlay's own bookkeeping
            }
            if let Ok(Some(v)) = xattr::get(p, &n) {
                pax.push((format!("SCHILY.xattr.{n}"), v));
            }
        }
        if !pax.is_empty() {
            self.tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| io_err("write layer", e))?;
        }
        Ok(())
    }

    /// Emits the directories above `rel` that were not emitted yet.
    fn parents(&mut self, rel: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut cur = rel.parent();
        while let Some(p) = cur {
            if p.as_os_str().is_empty() || self.emitted_dirs.contains(p) {
                break;
            }
            missing.push(p.to_path_buf());
            cur = p.parent();
        }
        for p in missing.into_iter().rev() {
            let m = fs::symlink_metadata(self.upper.join(&p))
                .map_err(|e| io_err(format!("stat {}", p.display()), e))?;
            self.entry(&p, &m)?;
        }
        Ok(())
    }

    fn entry(&mut self, rel: &Path, m: &Metadata) -> Result<()> {
        let full = self.upper.join(rel);
        let ft = m.file_type();
        let w = |e| io_err(format!("write layer entry {}", rel.display()), e);
        if ft.is_dir() {
            self.xattrs(&full)?;
            let mut h = Self::header(m, tar::EntryType::Directory);
            self.tar
                .append_data(&mut h, rel, std::io::empty())
                .map_err(w)?;
            self.emitted_dirs.insert(rel.to_path_buf());
            return Ok(());
        }
        if m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                let mut h = Self::header(m, tar::EntryType::Link);
                let first = first.clone();
                self.tar.append_link(&mut h, rel, &first).map_err(w)?;
                return Ok(());
            }
            self.links.insert((m.dev(), m.ino()), rel.to_path_buf());
        }
        if ft.is_symlink() {
            let target = fs::read_link(&full)
                .map_err(|e| io_err(format!("readlink {}", rel.display()), e))?;
            let mut h = Self::header(m, tar::EntryType::Symlink);
            self.tar.append_link(&mut h, rel, &target).map_err(w)?;
        } else if ft.is_file() {
            self.xattrs(&full)?;
            let mut h = Self::header(m, tar::EntryType::Regular);
            h.set_size(m.len());
            let f =
                fs::File::open(&full).map_err(|e| io_err(format!("open {}", rel.display()), e))?;
            self.tar.append_data(&mut h, rel, f).map_err(w)?;
        } else {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else if ft.is_fifo() {
                tar::EntryType::Fifo
            } else {
                return Ok(()); // sockets have no place in a layer
            };
            let mut h = Self::header(m, kind);
            let rdev = m.rdev();
            let dev32 = |n: u64| {
                u32::try_from(n).map_err(|_| {
                    w(std::io::Error::other(format!(
                        "device number {n} is out of range"
                    )))
                })
            };
            h.set_device_major(dev32(nix::sys::stat::major(rdev))?)
                .map_err(w)?;
            h.set_device_minor(dev32(nix::sys::stat::minor(rdev))?)
                .map_err(w)?;
            self.tar
                .append_data(&mut h, rel, std::io::empty())
                .map_err(w)?;
        }
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path) -> Result<()> {
        let name = rel
            .file_name()
            .ok_or_else(|| Error::internal("whiteout of the root"))?;
        let wh = rel.with_file_name(format!(".wh.{}", name.to_string_lossy()));
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_mtime(0);
        self.tar
            .append_data(&mut h, &wh, std::io::empty())
            .map_err(|e| io_err(format!("write whiteout {}", wh.display()), e))
    }
}

/// Writes to `out` the tar of changes from `lower` to `upper`.
pub fn diff_trees<W: Write>(lower: &Path, upper: &Path, out: W) -> Result<W> {
    let mut w = Writer {
        tar: tar::Builder::new(out),
        emitted_dirs: HashSet::new(),
        links: HashMap::new(),
        upper: upper.to_path_buf(),
    };
    // Additions and changes, in sorted order.
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = upper.join(&rel);
        let mut children = sorted_children(&dir)?;
        children.reverse(); // the stack pops in sorted order
        for c in children {
            let r = rel.join(&c);
            let (up, lp) = (upper.join(&r), lower.join(&r));
            let um = fs::symlink_metadata(&up)
                .map_err(|e| io_err(format!("stat {}", up.display()), e))?;
            let same = match lstat(&lp) {
                Some(lm) => unchanged(&lp, &lm, &up, &um)?,
                None => false,
            };
            if !same {
                w.parents(&r)?;
                w.entry(&r, &um)?;
            }
            if um.is_dir() {
                stack.push(r);
            }
        }
    }
    // Deletions: the top-most missing path of each deleted subtree.
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for c in sorted_children(&lower.join(&rel))? {
            let r = rel.join(&c);
            let lm = match lstat(&lower.join(&r)) {
                Some(m) => m,
                None => continue,
            };
            match lstat(&upper.join(&r)) {
                None => {
                    w.parents(&r)?;
                    w.whiteout(&r)?;
                }
                Some(um) if lm.is_dir() && um.is_dir() => stack.push(r),
                Some(_) => {}
            }
        }
    }
    w.tar.into_inner().map_err(|e| io_err("finish layer", e))
}
