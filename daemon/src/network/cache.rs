//! The result cache: what ADD returned for each attachment, kept on disk so
//! DEL and CHECK after a berthd restart still hand plugins their
//! `prevResult` and the exact configuration that was added (as libcni
//! keeps `/var/lib/cni/results`). Under berthd's state: a reboot ends every
//! namespace these describe, so they should not outlive it.

use super::cni::Attachment;
use crate::error::{Error, Result, io_err};
use berth_snapshotter::mount::private;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One cached ADD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cached {
    pub kind: String,
    pub network_name: String,
    pub attachment: Attachment,
    /// The conflist as it was when added; DEL uses it even if the file has
    /// changed or gone since.
    pub config: Value,
    /// The capability arguments (`runtimeConfig`) ADD was given, handed
    /// again to DEL and CHECK.
    #[serde(default)]
    pub runtime_config: Value,
    /// The final result of the chain; null while ADD is under way (the
    /// entry is written first, so a crash mid-ADD still leaves what DEL
    /// needs).
    pub result: Value,
    /// Who holds the attachment (`namespace/id`), for messages such as a
    /// taken port's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

pub const KIND: &str = "berthCniCacheV1";

/// The cache directory: one file per network, container and interface.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Self {
        Cache { dir }
    }

    fn path(&self, network: &str, att: &Attachment) -> PathBuf {
        // A folder per network: names may hold '-', so no single file
        // name could tell network and container apart.
        self.dir
            .join(network)
            .join(format!("{}-{}", att.container_id, att.ifname))
    }

    pub fn store(&self, c: &Cached) -> Result<()> {
        let dir = self.dir.join(&c.network_name);
        private::dir(&dir, private::OWNER_ONLY)
            .map_err(|e| io_err(format!("create {}", dir.display()), e))?;
        let bytes = serde_json::to_vec_pretty(c)
            .map_err(|e| Error::internal(format!("encode CNI cache entry: {e}")))?;
        write_atomic(&self.path(&c.network_name, &c.attachment), &bytes, true)
    }

    /// The cached ADD, `None` when there is none.
    pub fn load(&self, network: &str, att: &Attachment) -> Result<Option<Cached>> {
        let p = self.path(network, att);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(format!("read {}", p.display()), e)),
        };
        let c: Cached = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                berth_proto::errdefs::Kind::DataLoss,
                format!("CNI cache entry {} is unreadable: {e}", p.display()),
            )
        })?;
        if c.kind != KIND {
            return Err(Error::new(
                berth_proto::errdefs::Kind::DataLoss,
                format!("CNI cache entry {} has kind {:?}", p.display(), c.kind),
            ));
        }
        Ok(Some(c))
    }

    /// Every cached ADD, of every network (attachments of containers that
    /// are gone are found this way at restart). An unreadable entry is
    /// skipped with a warning rather than blocking every other teardown.
    pub fn entries(&self) -> Result<Vec<Cached>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("read {}", self.dir.display()), e)),
        };
        let mut out = Vec::new();
        for net in rd.filter_map(|e| e.ok()) {
            let Ok(files) = std::fs::read_dir(net.path()) else {
                continue;
            };
            for f in files.filter_map(|e| e.ok()) {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                match std::fs::read(f.path())
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Cached>(&b).map_err(|e| e.to_string()))
                {
                    Ok(c) if c.kind == KIND => out.push(c),
                    Ok(c) => tracing::warn!("{}: kind {:?}; skipped", f.path().display(), c.kind),
                    Err(e) => tracing::warn!("{}: {e}; skipped", f.path().display()),
                }
            }
        }
        Ok(out)
    }

    pub fn remove(&self, network: &str, att: &Attachment) -> Result<()> {
        let p = self.path(network, att);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err(format!("remove {}", p.display()), e))
            }
            _ => {
                // The network's folder goes with its last entry.
                let _ = std::fs::remove_dir(self.dir.join(network));
                Ok(())
            }
        }
    }
}

/// Writes `path` so that a crash leaves either the old or the new
/// contents: a temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], owner_only: bool) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid(format!("{} has no directory", path.display())))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{}.tmp", name.unwrap_or_default()));
    let werr = |e| io_err(format!("write {}", tmp.display()), e);
    {
        let mut f = if owner_only {
            private::create_file(&tmp).map_err(werr)?
        } else {
            std::fs::File::create(&tmp).map_err(werr)?
        };
        f.write_all(bytes).map_err(werr)?;
        f.sync_all().map_err(werr)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io_err(format!("rename to {}", path.display()), e))?;
    crate::durable::sync_dir(dir).map_err(|e| io_err(format!("sync {}", dir.display()), e))
}
