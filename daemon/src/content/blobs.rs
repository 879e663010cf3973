//! The on-disk half of the store: committed blobs and upload directories.

use crate::error::{Result, io_err};
use crate::types::Digest;
use berth_snapshotter::mount::private;
use sha2::Digest as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// The on-disk half of the store, shared with the garbage collector.
pub struct Blobs {
    root: PathBuf,
    /// Held for reading while an upload is created or committed and for
    /// writing while the collector sweeps files, so it never removes a file
    /// whose metadata is about to appear.
    pub sweep_lock: RwLock<()>,
}

impl Blobs {
    /// Creates the directory layout under `root`.
    pub fn open(root: &Path) -> Result<Blobs> {
        // Blobs and uploads (image layers, their secrets) are owner-only.
        private::dir(root, private::OWNER_ONLY)
            .map_err(|e| io_err(format!("create {}", root.display()), e))?;
        for d in ["blobs/sha256", "ingest"] {
            private::dir(&root.join(d), private::OWNER_ONLY)
                .map_err(|e| io_err(format!("create {}", root.join(d).display()), e))?;
        }
        Ok(Blobs {
            root: root.to_path_buf(),
            sweep_lock: RwLock::new(()),
        })
    }

    /// Where a committed blob lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// The directory name of an upload (stable across restarts).
    pub fn ingest_name(ns: &str, reference: &str) -> String {
        hex::encode(sha2::Sha256::digest(format!("{ns}/{reference}").as_bytes()))
    }

    /// Where an upload's files live.
    pub fn ingest_dir(&self, ns: &str, reference: &str) -> PathBuf {
        self.root
            .join("ingest")
            .join(Self::ingest_name(ns, reference))
    }

    /// Hex digests of every committed blob on disk.
    pub fn list_blobs(&self) -> Result<Vec<String>> {
        list_names(&self.root.join("blobs/sha256"))
    }

    /// Names of every upload directory on disk.
    pub fn list_ingests(&self) -> Result<Vec<String>> {
        list_names(&self.root.join("ingest"))
    }

    /// Removes a blob file.
    pub fn remove_blob(&self, hex: &str) -> std::io::Result<()> {
        fs::remove_file(self.root.join("blobs/sha256").join(hex))
    }

    /// Removes an upload directory.
    pub fn remove_ingest(&self, name: &str) -> std::io::Result<()> {
        fs::remove_dir_all(self.root.join("ingest").join(name))
    }
}

fn list_names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| io_err(format!("read {}", dir.display()), e))? {
        let e = e.map_err(|e| io_err(format!("read {}", dir.display()), e))?;
        if let Some(n) = e.file_name().to_str() {
            out.push(n.to_string());
        }
    }
    Ok(out)
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    crate::durable::sync_dir(dir).map_err(|e| io_err(format!("sync {}", dir.display()), e))
}
