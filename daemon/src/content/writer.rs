//! Uploads: opening or resuming one, writing, and committing it (verify,
//! fsync, rename into place, record) — a blob becomes visible all at once.

use super::blobs::sync_dir;
use super::records::{ContentRecord, INGEST_EXPIRY_NANOS, IngestRecord, Status};
use super::store::ContentStore;
use crate::error::{Error, Result, io_err};
use crate::metadata::leases;
use crate::metadata::namespaces;
use crate::metadata::{Read, key, kind};
use crate::types::{Ctx, Digest, Labels, drop_empty, now, validate_labels};
use berth_proto::pb::containerd::events as ev;
use sha2::Digest as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek, SeekFrom, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

impl ContentStore {
    /// Opens (or resumes) the upload `reference`. `AlreadyExists` when the
    /// expected blob is already in the namespace; `Unavailable` while
    /// another writer holds the same ref.
    pub fn writer(
        self: &Arc<Self>,
        ctx: &Ctx,
        reference: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<Writer> {
        if reference.is_empty() {
            return Err(Error::invalid("ref must not be empty"));
        }
        if let Some(d) = &expected {
            let exists = self.db.write(|w| {
                if w.exists(&key(&ctx.ns, kind::CONTENT, d.as_str()))? {
                    leases::attach(w, ctx, "content", d.as_str())?;
                    return Ok(true);
                }
                Ok(false)
            })?;
            if exists {
                return Err(Error::already_exists(format!(
                    "content {d}: already exists"
                )));
            }
        }
        let lock_key = format!("{}/{reference}", ctx.ns);
        {
            let mut active = self
                .active
                .lock()
                .map_err(|_| Error::internal("lock poisoned"))?;
            if !active.insert(lock_key.clone()) {
                return Err(Error::unavailable(format!(
                    "ref {reference:?} locked: another write to it is in progress; retry when it ends"
                )));
            }
        }
        let guard = RefGuard {
            store: self.clone(),
            key: lock_key,
        };
        let _sweep = self
            .blobs
            .sweep_lock
            .read()
            .map_err(|_| Error::internal("lock poisoned"))?;
        let rec = self.db.write(|w| {
            namespaces::ensure(w, &ctx.ns)?;
            let k = key(&ctx.ns, kind::INGESTS, reference);
            let mut rec: IngestRecord = w.get(&k)?.unwrap_or_else(|| IngestRecord {
                started_at: now(),
                ..Default::default()
            });
            if total > 0 {
                rec.total = total;
            }
            if let Some(d) = &expected {
                rec.expected = d.to_string();
            }
            rec.expires_at = if ctx.lease.is_some() {
                0
            } else {
                now() + INGEST_EXPIRY_NANOS
            };
            w.put(&k, &rec)?;
            leases::attach(w, ctx, "ingests", reference)?;
            Ok(rec)
        })?;
        let dir = self.blobs.ingest_dir(&ctx.ns, reference);
        fs::create_dir_all(&dir).map_err(|e| io_err(format!("create {}", dir.display()), e))?;
        let path = dir.join("data");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err(format!("open {}", path.display()), e))?;
        // Resuming: the digest state is rebuilt from the bytes already there.
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0i64;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| io_err(format!("read {}", path.display()), e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as i64;
        }
        Ok(Writer {
            store: self.clone(),
            ctx: ctx.clone(),
            reference: reference.to_string(),
            dir,
            file,
            hasher,
            offset,
            total: rec.total,
            started_at: rec.started_at,
            updated_at: now(),
            _guard: guard,
        })
    }

    /// Writes a whole blob in one go (import, manifests made by the daemon).
    /// Returns the digest; an existing blob counts as success.
    pub fn write_blob(
        self: &Arc<Self>,
        ctx: &Ctx,
        reference: &str,
        data: &mut dyn std::io::Read,
        expected: Option<Digest>,
        labels: Labels,
    ) -> Result<(Digest, i64)> {
        let mut w = match self.writer(ctx, reference, 0, expected.clone()) {
            Ok(w) => w,
            Err(e) if e.is_already_exists() => {
                let d = expected.ok_or(e)?;
                let info = self.info(&ctx.ns, &d)?;
                if !labels.is_empty() {
                    let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
                    self.update(&ctx.ns, &d, &labels, &paths)?;
                }
                return Ok((d, info.record.size));
            }
            Err(e) => return Err(e),
        };
        w.truncate()?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = data
                .read(&mut buf)
                .map_err(|e| io_err("read blob data", e))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])?;
        }
        let size = w.offset;
        let (d, _created) = w.commit(0, expected.as_ref(), labels)?;
        Ok((d, size))
    }
}

struct RefGuard {
    store: Arc<ContentStore>,
    key: String,
}

impl Drop for RefGuard {
    fn drop(&mut self) {
        self.store.unlock(&self.key);
    }
}

/// An open upload. Dropping it keeps the partial data for a later resume.
pub struct Writer {
    store: Arc<ContentStore>,
    ctx: Ctx,
    reference: String,
    dir: PathBuf,
    file: File,
    hasher: sha2::Sha256,
    offset: i64,
    total: i64,
    started_at: i64,
    updated_at: i64,
    _guard: RefGuard,
}

impl Writer {
    /// Progress so far.
    pub fn status(&self) -> Status {
        Status {
            reference: self.reference.clone(),
            offset: self.offset,
            total: self.total,
            expected: String::new(),
            started_at: self.started_at,
            updated_at: self.updated_at,
        }
    }

    /// The digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        Digest::from_hash(&self.hasher.clone().finalize())
    }

    /// Sets the expected total size.
    pub fn set_total(&mut self, total: i64) {
        if total > 0 {
            self.total = total;
        }
    }

    /// Discards the bytes written so far and starts over.
    pub fn truncate(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(|e| io_err(format!("truncate upload {:?}", self.reference), e))?;
        self.hasher = sha2::Sha256::new();
        self.offset = 0;
        self.updated_at = now();
        Ok(())
    }

    /// Appends bytes at the current offset.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .seek(SeekFrom::Start(self.offset as u64))
            .and_then(|_| self.file.write_all(data))
            .map_err(|e| io_err(format!("write upload {:?}", self.reference), e))?;
        self.hasher.update(data);
        self.offset += data.len() as i64;
        self.updated_at = now();
        Ok(())
    }

    /// Verifies size and digest, then makes the blob visible in the
    /// namespace; returns its digest and whether the namespace did not hold
    /// it before. On a mismatch nothing is committed and the upload stays
    /// for the client to resume or abort.
    pub fn commit(
        self,
        size: i64,
        expected: Option<&Digest>,
        labels: Labels,
    ) -> Result<(Digest, bool)> {
        let mut labels = labels;
        drop_empty(&mut labels);
        validate_labels(&labels)?;
        if size > 0 && size != self.offset {
            return Err(Error::precondition(format!(
                "{:?} failed size validation: {} != {size}: the upload holds {} bytes but {size} were expected",
                self.reference, self.offset, self.offset
            )));
        }
        let actual = self.digest();
        if let Some(exp) = expected
            && *exp != actual
        {
            return Err(Error::precondition(format!(
                "unexpected commit digest {actual}, expected {exp}: the uploaded bytes do not match; abort ref {:?} and upload again",
                self.reference
            )));
        }
        self.file
            .sync_all()
            .map_err(|e| io_err(format!("sync upload {:?}", self.reference), e))?;
        let store = &self.store;
        let ns = &self.ctx.ns;
        let _sweep = store
            .blobs
            .sweep_lock
            .read()
            .map_err(|_| Error::internal("lock poisoned"))?;
        let target = store.blobs.blob_path(&actual);
        let data = self.dir.join("data");
        if target.exists() {
            let _ = fs::remove_file(&data);
        } else {
            fs::rename(&data, &target)
                .map_err(|e| io_err(format!("commit {actual} into {}", target.display()), e))?;
            // Blobs are immutable: drop the write bits.
            let _ = fs::set_permissions(&target, fs::Permissions::from_mode(0o444));
            if let Some(parent) = target.parent() {
                sync_dir(parent)?;
            }
        }
        let size = self.offset;
        let result = store.db.write(|w| {
            w.delete(&key(ns, kind::INGESTS, &self.reference))?;
            leases::detach_everywhere(w, ns, "ingests", &self.reference)?;
            let k = key(ns, kind::CONTENT, actual.as_str());
            leases::attach(w, &self.ctx, "content", actual.as_str())?;
            if w.exists(&k)? {
                return Ok(false);
            }
            let t = now();
            w.put(
                &k,
                &ContentRecord {
                    size,
                    created_at: t,
                    updated_at: t,
                    labels: labels.clone(),
                },
            )?;
            Ok(true)
        });
        let _ = fs::remove_dir_all(&self.dir);
        if !result? {
            return Ok((actual, false));
        }
        store.events.publish(
            ns,
            "/content/create",
            &ev::ContentCreate {
                digest: actual.to_string(),
                size,
                media_type: String::new(),
            },
        );
        Ok((actual, true))
    }
}
