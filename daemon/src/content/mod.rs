//! The content store: immutable blobs addressed by digest.
//!
//! Layout under `<root>/content`: `blobs/sha256/<hex>` holds committed
//! blobs, shared by all namespaces; `ingest/<sha256(ns/ref)>/data` holds an
//! upload in progress. A blob appears under `blobs/` only by an atomic rename
//! after its bytes are fsynced and its digest checked, so a crash leaves
//! either nothing or the whole blob there, never part of one. Which blobs a
//! namespace can see, and their labels, is metadata (`v1/<ns>/content/…`);
//! uploads are recorded (`v1/<ns>/ingests/<ref>`) before their first byte so
//! they can be resumed from their offset after a restart.

use crate::error::{Error, Result, io_err};
use crate::events::Exchange;
use crate::metadata::leases;
use crate::metadata::namespaces;
use crate::metadata::trigger::GcTrigger;
use crate::metadata::{Db, Read, key, kind, prefix};
use crate::types::{Ctx, Digest, Labels, apply_label_path, drop_empty, now, validate_labels};
use berth_proto::filters::{Adaptor, Filter, label_field};
use berth_proto::pb::containerd::events as ev;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek, SeekFrom, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// How long an upload outside any lease is kept before collection.
pub const INGEST_EXPIRY_NANOS: i64 = 24 * 3600 * 1_000_000_000;

/// A namespace's record of a blob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContentRecord {
    pub size: i64,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub labels: Labels,
}

/// A blob as a namespace sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub digest: String,
    pub record: ContentRecord,
}

impl Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "digest" if path.len() == 1 => Some(self.digest.clone()),
            "size" if path.len() == 1 => Some(self.record.size.to_string()),
            "labels" => label_field(&self.record.labels, &path[1..]),
            _ => None,
        }
    }
}

/// A namespace's record of an upload in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestRecord {
    pub started_at: i64,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub expected: String,
    /// When an upload outside any lease becomes collectable (0 = leased).
    #[serde(default)]
    pub expires_at: i64,
}

/// Progress of an upload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub reference: String,
    pub offset: i64,
    pub total: i64,
    pub expected: String,
    pub started_at: i64,
    pub updated_at: i64,
}

impl Adaptor for Status {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path.first()?.as_str(), path.len()) {
            ("ref", 1) => Some(self.reference.clone()),
            ("expected", 1) => Some(self.expected.clone()),
            _ => None,
        }
    }
}

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
        for d in ["blobs/sha256", "ingest"] {
            fs::create_dir_all(root.join(d))
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

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(format!("sync {}", dir.display()), e))
}

/// The content store.
pub struct ContentStore {
    blobs: Arc<Blobs>,
    db: Arc<Db>,
    events: Arc<Exchange>,
    gc: GcTrigger,
    /// Uploads with a live writer, as `ns/ref`: one writer per ref.
    active: Mutex<HashSet<String>>,
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

    fn unlock(&self, key: &str) {
        if let Ok(mut a) = self.active.lock() {
            a.remove(key);
        }
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

#[cfg(test)]
mod tests {
    //! The content store over a temporary root (no root user needed).
    use crate::core::temp_core as core;
    use crate::types::{Ctx, Digest, Labels};

    const NS: &str = "content-test";

    fn digest_of(data: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_hash(&sha2::Sha256::digest(data))
    }

    #[tokio::test]
    async fn a_wrong_digest_or_size_commits_nothing_and_the_upload_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let c = core(&dir);
        let ctx = Ctx::new(NS);
        let data = b"some blob bytes";
        let mut w = c.content.writer(&ctx, "up", 0, None).unwrap();
        w.write(&data[..4]).unwrap();
        drop(w); // the client goes away mid-upload
        assert_eq!(c.content.status(NS, "up").unwrap().offset, 4);
        let mut w = c.content.writer(&ctx, "up", 0, None).unwrap();
        assert_eq!(w.status().offset, 4, "a writer resumes where it stopped");
        w.write(&data[4..]).unwrap();
        let err = w
            .commit(0, Some(&digest_of(b"other bytes")), Labels::new())
            .unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");
        assert!(
            c.content
                .info(NS, &digest_of(data))
                .unwrap_err()
                .is_not_found()
        );
        let w = c.content.writer(&ctx, "up", 0, None).unwrap();
        let err = w.commit(99, None, Labels::new()).unwrap_err();
        assert!(err.to_string().contains("size validation"), "{err}");
        let w = c.content.writer(&ctx, "up", 0, None).unwrap();
        let (d, created) = w
            .commit(data.len() as i64, Some(&digest_of(data)), Labels::new())
            .unwrap();
        assert!(created);
        assert_eq!(c.content.read_all(NS, &d).unwrap(), data);
        assert!(c.content.status(NS, "up").unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn one_writer_per_ref_and_abort_removes_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let c = core(&dir);
        let ctx = Ctx::new(NS);
        let mut w = c.content.writer(&ctx, "busy", 0, None).unwrap();
        w.write(b"partial").unwrap();
        let err = c.content.writer(&ctx, "busy", 0, None).err().unwrap();
        assert!(err.to_string().contains("busy"), "{err}");
        drop(w);
        c.content.abort(NS, "busy").unwrap();
        assert!(c.content.status(NS, "busy").unwrap_err().is_not_found());
        assert!(c.content.abort(NS, "busy").unwrap_err().is_not_found());
        assert!(c.content.writer(&ctx, "", 0, None).is_err(), "an empty ref");
    }

    #[tokio::test]
    async fn blobs_are_per_namespace_and_immutable_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let c = core(&dir);
        let data = b"shared bytes";
        let (d, _) = c
            .content
            .write_blob(&Ctx::new(NS), "a", &mut &data[..], None, Labels::new())
            .unwrap();
        assert!(c.content.info("other-ns", &d).unwrap_err().is_not_found());
        let mode = std::fs::metadata(c.content.blobs.blob_path(&d))
            .unwrap()
            .permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o222, 0);
        // The same bytes in another namespace share the file.
        let (d2, _) = c
            .content
            .write_blob(
                &Ctx::new("other-ns"),
                "b",
                &mut &data[..],
                None,
                Labels::new(),
            )
            .unwrap();
        assert_eq!(d, d2);
        c.content.delete(NS, &d).unwrap();
        assert_eq!(c.content.read_all("other-ns", &d2).unwrap(), data);
    }
}
