//! The store's reads, label updates and deletions; uploads are in `writer`.

use super::blobs::Blobs;
use super::records::{ContentRecord, Info, IngestRecord, Status};
use crate::error::{Error, Result, io_err};
use crate::events::Exchange;
use crate::metadata::leases;
use crate::metadata::trigger::GcTrigger;
use crate::metadata::{Db, Read, key, kind, prefix};
use crate::types::{Digest, Labels, apply_label_path, drop_empty, now, validate_labels};
use berth_proto::filters::Filter;
use berth_proto::pb::containerd::events as ev;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read as _;
use std::sync::{Arc, Mutex};

/// The content store.
pub struct ContentStore {
    pub(super) blobs: Arc<Blobs>,
    pub(super) db: Arc<Db>,
    pub(super) events: Arc<Exchange>,
    gc: GcTrigger,
    /// Uploads with a live writer, as `ns/ref`: one writer per ref.
    pub(super) active: Mutex<HashSet<String>>,
}

impl ContentStore {
    pub fn new(blobs: Arc<Blobs>, db: Arc<Db>, events: Arc<Exchange>, gc: GcTrigger) -> Self {
        Self {
            blobs,
            db,
            events,
            gc,
            active: Mutex::new(HashSet::new()),
        }
    }

    /// A blob's record in `ns`; `NotFound` if the namespace cannot see it.
    pub fn info(&self, ns: &str, digest: &Digest) -> Result<Info> {
        self.db
            .read(|r| r.get::<ContentRecord>(&key(ns, kind::CONTENT, digest.as_str())))?
            .map(|record| Info {
                digest: digest.to_string(),
                record,
            })
            .ok_or_else(|| Error::not_found(format!("content digest {digest}: not found")))
    }

    /// Updates labels (`labels`, `labels.<key>`; no paths = replace all).
    pub fn update(
        &self,
        ns: &str,
        digest: &Digest,
        labels: &Labels,
        paths: &[String],
    ) -> Result<Info> {
        self.db.write(|w| {
            let k = key(ns, kind::CONTENT, digest.as_str());
            let mut rec: ContentRecord = w
                .get(&k)?
                .ok_or_else(|| Error::not_found(format!("content digest {digest}: not found")))?;
            if paths.is_empty() {
                rec.labels = labels.clone();
            }
            for p in paths {
                if !apply_label_path(&mut rec.labels, labels, p) {
                    return Err(Error::invalid(format!(
                        "cannot update {p:?} field on content info {digest}: only labels can be updated"
                    )));
                }
            }
            drop_empty(&mut rec.labels);
            validate_labels(&rec.labels)?;
            rec.updated_at = now();
            w.put(&k, &rec)?;
            Ok(Info {
                digest: digest.to_string(),
                record: rec,
            })
        })
    }

    /// Blobs visible in `ns` matching any of `filters`.
    pub fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Info>> {
        let filter = Filter::parse_all(filters)?;
        let all = self
            .db
            .read(|r| r.scan::<ContentRecord>(&prefix(ns, kind::CONTENT)))?;
        Ok(all
            .into_iter()
            .map(|(digest, record)| Info { digest, record })
            .filter(|i| filter.matches(i))
            .collect())
    }

    /// Removes a blob from `ns`; the file goes once no namespace holds it.
    pub fn delete(&self, ns: &str, digest: &Digest) -> Result<()> {
        self.db.write(|w| {
            if !w.delete(&key(ns, kind::CONTENT, digest.as_str()))? {
                return Err(Error::not_found(format!(
                    "content digest {digest}: not found"
                )));
            }
            leases::detach_everywhere(w, ns, "content", digest.as_str())
        })?;
        self.events.publish(
            ns,
            "/content/delete",
            &ev::ContentDelete {
                digest: digest.to_string(),
            },
        );
        self.gc.schedule();
        Ok(())
    }

    /// Opens a committed blob visible in `ns`, with its size.
    pub fn open_blob(&self, ns: &str, digest: &Digest) -> Result<(File, i64)> {
        let info = self.info(ns, digest)?;
        let f = File::open(self.blobs.blob_path(digest)).map_err(|e| {
            io_err(
                format!("content {digest} is recorded but its blob is unreadable"),
                e,
            )
        })?;
        Ok((f, info.record.size))
    }

    /// Reads a whole blob (for small ones: manifests, configs, indexes).
    pub fn read_all(&self, ns: &str, digest: &Digest) -> Result<Vec<u8>> {
        let (mut f, size) = self.open_blob(ns, digest)?;
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        f.read_to_end(&mut buf)
            .map_err(|e| io_err(format!("read content {digest}"), e))?;
        Ok(buf)
    }

    /// Progress of the upload `reference` in `ns`.
    pub fn status(&self, ns: &str, reference: &str) -> Result<Status> {
        let rec: IngestRecord = self
            .db
            .read(|r| r.get(&key(ns, kind::INGESTS, reference)))?
            .ok_or_else(|| Error::not_found(format!("reference {reference:?}: not found")))?;
        Ok(self.status_of(ns, reference, &rec))
    }

    fn status_of(&self, ns: &str, reference: &str, rec: &IngestRecord) -> Status {
        let data = self.blobs.ingest_dir(ns, reference).join("data");
        let (offset, updated_at) = match fs::metadata(&data) {
            Ok(m) => (
                m.len() as i64,
                m.modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    // Saturates past 2262.
                    .map_or(rec.started_at, |d| {
                        i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
                    }),
            ),
            Err(_) => (0, rec.started_at),
        };
        Status {
            reference: reference.to_string(),
            offset,
            total: rec.total,
            expected: rec.expected.clone(),
            started_at: rec.started_at,
            updated_at,
        }
    }

    /// Uploads in progress in `ns` matching any of `filters`.
    pub fn list_statuses(&self, ns: &str, filters: &[String]) -> Result<Vec<Status>> {
        let filter = Filter::parse_all(filters)?;
        let recs = self
            .db
            .read(|r| r.scan::<IngestRecord>(&prefix(ns, kind::INGESTS)))?;
        Ok(recs
            .iter()
            .map(|(r, rec)| self.status_of(ns, r, rec))
            .filter(|s| filter.matches(s))
            .collect())
    }

    /// Abandons an upload and its partial data.
    pub fn abort(&self, ns: &str, reference: &str) -> Result<()> {
        self.db.write(|w| {
            if !w.delete(&key(ns, kind::INGESTS, reference))? {
                return Err(Error::not_found(format!(
                    "reference {reference:?}: not found"
                )));
            }
            leases::detach_everywhere(w, ns, "ingests", reference)
        })?;
        let dir = self.blobs.ingest_dir(ns, reference);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("remove {}", dir.display()), e)),
        }
    }

    pub(super) fn unlock(&self, key: &str) {
        if let Ok(mut a) = self.active.lock() {
            a.remove(key);
        }
    }
}
