//! The native snapshotter: every snapshot is a full copy of its parent, so
//! it works on any filesystem (no overlayfs needed), at the cost of disk and
//! prepare time. Mounts are plain bind mounts.

use crate::contract::{Kind, Usage};
use crate::error::{Error, Result};
use crate::fsutil::copy_tree;
use crate::mount::Mount;
use crate::overlay::{Dirs, Layout};
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The copy layout.
pub struct NativeLayout;

/// The native snapshotter.
pub type Native = Dirs<NativeLayout>;

impl Native {
    /// Opens a native snapshotter rooted at `root`.
    pub fn open(root: &Path) -> Result<Native> {
        Dirs::with_layout(root, NativeLayout)
    }
}

impl Layout for NativeLayout {
    fn name(&self) -> &'static str {
        "native"
    }

    fn populate(&self, dir: &Path, parents: &[PathBuf]) -> Result<()> {
        match parents.first() {
            Some(p) => copy_tree(p, &dir.join("fs")),
            None => Ok(()),
        }
    }

    fn mounts(&self, kind: Kind, dir: &Path, _parents: &[PathBuf]) -> Vec<Mount> {
        let ro = if kind == Kind::View { "ro" } else { "rw" };
        vec![Mount {
            kind: "bind".into(),
            source: dir.join("fs").display().to_string(),
            target: String::new(),
            options: vec![ro.into(), "rbind".into()],
        }]
    }

    fn usage(&self, dir: &Path, parents: &[PathBuf]) -> Result<Usage> {
        diff_usage(&dir.join("fs"), parents.first().map(PathBuf::as_path))
    }
}

/// Usage of what `dir` adds or changes relative to `parent` (a file counts
/// when it is new or differs in type, size, mode, owner or mtime).
fn diff_usage(dir: &Path, parent: Option<&Path>) -> Result<Usage> {
    let mut u = Usage::default();
    let mut seen = HashSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = dir.join(&rel);
        let m =
            fs::symlink_metadata(&p).map_err(|e| Error::io(format!("stat {}", p.display()), e))?;
        let same = parent
            .and_then(|base| fs::symlink_metadata(base.join(&rel)).ok())
            .is_some_and(|o| {
                o.file_type() == m.file_type()
                    && o.len() == m.len()
                    && o.mode() == m.mode()
                    && o.uid() == m.uid()
                    && o.gid() == m.gid()
                    && o.mtime() == m.mtime()
                    && o.mtime_nsec() == m.mtime_nsec()
            });
        if !same && seen.insert((m.dev(), m.ino())) {
            u.inodes += 1;
            u.size += (m.blocks() * 512) as i64;
        }
        if m.is_dir() {
            for e in fs::read_dir(&p).map_err(|e| Error::io(format!("read {}", p.display()), e))? {
                let e = e.map_err(|e| Error::io(format!("read {}", p.display()), e))?;
                stack.push(rel.join(e.file_name()));
            }
        }
    }
    Ok(u)
}
