//! Garbage collection: mark and sweep.
//!
//! Roots, per namespace: images (unless their `containerd.io/gc.expire`
//! label has passed), the resources of live leases, content labelled
//! `containerd.io/gc.root` or with a future `gc.expire`, and uploads that
//! have not expired. References: an image holds its target;
//! `containerd.io/gc.ref.content*` labels on content or images hold the named
//! blobs, `containerd.io/gc.ref.image*` hold images, and a blob labelled
//! `containerd.io/gc.bref.content*=<parent>` is held while its parent is.
//! Expired leases are removed. Unmarked metadata is swept in one transaction;
//! then files no namespace records are removed. A failure on one file is
//! logged and the run goes on.
//!
//! Collection runs in the background, a short delay after deletions
//! ([`Gc::schedule`]), or on demand ([`Gc::collect`], for `sync` deletes).

use crate::content::{Blobs, ContentRecord, IngestRecord};
use crate::error::{Error, Result};
use crate::images::ImageRecord;
use crate::metadata::leases::{LABEL_EXPIRE, LABEL_FLAT, LeaseRecord, parse_time};
use crate::metadata::{Db, Read, key, kind, prefix};
use crate::snapshots::{Snapshots, bkey};
use crate::types::now;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const GC_ROOT: &str = "containerd.io/gc.root";
const REF_CONTENT: &str = "containerd.io/gc.ref.content";
const REF_IMAGE: &str = "containerd.io/gc.ref.image";
const BREF_CONTENT: &str = "containerd.io/gc.bref.content";
const REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";

/// What one collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub content_records: usize,
    pub ingest_records: usize,
    pub leases: usize,
    pub blobs: usize,
    pub ingest_dirs: usize,
    pub snapshots: usize,
    pub errors: usize,
}

enum Request {
    Schedule,
    Collect(oneshot::Sender<Result<Stats>>),
}

/// A handle to the collector; cheap to clone.
#[derive(Clone)]
pub struct Gc {
    tx: mpsc::UnboundedSender<Request>,
}

impl Gc {
    /// Starts the collector task; `delay` batches deletions into one run.
    pub fn start(db: Arc<Db>, blobs: Arc<Blobs>, snapshots: Arc<Snapshots>, delay: Duration) -> Gc {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let collector = Arc::new(Collector {
            db,
            blobs,
            snapshots,
        });
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                let mut waiters = Vec::new();
                if let Request::Schedule = req {
                    tokio::time::sleep(delay).await;
                } else if let Request::Collect(w) = req {
                    waiters.push(w);
                }
                // Everything queued meanwhile is served by this one run.
                while let Ok(r) = rx.try_recv() {
                    if let Request::Collect(w) = r {
                        waiters.push(w);
                    }
                }
                let c = collector.clone();
                let out = tokio::task::spawn_blocking(move || c.collect())
                    .await
                    .unwrap_or_else(|e| Err(Error::internal(format!("gc task: {e}"))));
                match &out {
                    Ok(s) if *s != Stats::default() => tracing::info!(?s, "garbage collected"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("garbage collection failed: {e}"),
                }
                for w in waiters {
                    let _ = w.send(out.clone());
                }
            }
        });
        Gc { tx }
    }

    /// Asks for a collection soon; returns at once.
    pub fn schedule(&self) {
        let _ = self.tx.send(Request::Schedule);
    }

    /// Runs a collection now and waits for it.
    pub async fn collect(&self) -> Result<Stats> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Collect(tx))
            .map_err(|_| Error::unavailable("garbage collector stopped"))?;
        rx.await
            .map_err(|_| Error::unavailable("garbage collector stopped"))?
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Content(String),
    Image(String),
}

struct Collector {
    db: Arc<Db>,
    blobs: Arc<Blobs>,
    snapshots: Arc<Snapshots>,
}

/// `(snapshotter, backend key)` pairs that something holds.
type SnapshotRoots = HashSet<(String, String)>;

fn snapshot_refs(ns: &str, labels: &HashMap<String, String>, out: &mut SnapshotRoots) {
    for (k, v) in labels {
        if let Some(rest) = k.strip_prefix(REF_SNAPSHOT) {
            let sn = rest.split('/').next().unwrap_or(rest);
            out.insert((sn.to_string(), bkey(ns, v)));
        }
    }
}

impl Collector {
    fn collect(&self) -> Result<Stats> {
        let mut stats = Stats::default();
        let t = now();
        // No snapshot is created or committed while a collection runs, so
        // none is seen before the reference that holds it.
        let _sweep = self.snapshots.sweep_guard();
        let mut snap_roots = SnapshotRoots::new();
        // Phase 1: mark and sweep metadata in one transaction.
        self.db.write(|w| {
            for ns in w.namespaces()? {
                let images: HashMap<String, ImageRecord> =
                    w.scan(&prefix(&ns, kind::IMAGES))?.into_iter().collect();
                let content: HashMap<String, ContentRecord> =
                    w.scan(&prefix(&ns, kind::CONTENT))?.into_iter().collect();
                let ingests: Vec<(String, IngestRecord)> = w.scan(&prefix(&ns, kind::INGESTS))?;
                let leases: Vec<(String, LeaseRecord)> = w.scan(&prefix(&ns, kind::LEASES))?;

                let mut marked: HashSet<Node> = HashSet::new();
                let mut queue: VecDeque<Node> = VecDeque::new();
                let mut leased_ingests = HashSet::new();
                let mut flat: HashSet<Node> = HashSet::new();

                for (id, lease) in &leases {
                    if lease.expired(t) {
                        w.delete(&key(&ns, kind::LEASES, id))?;
                        stats.leases += 1;
                        continue;
                    }
                    let is_flat = lease.labels.contains_key(LABEL_FLAT);
                    for r in &lease.resources {
                        let node = match r.kind.as_str() {
                            "content" => Node::Content(r.id.clone()),
                            "images" => Node::Image(r.id.clone()),
                            "ingests" => {
                                leased_ingests.insert(r.id.clone());
                                continue;
                            }
                            k => {
                                if let Some(sn) = k.strip_prefix("snapshots/") {
                                    snap_roots.insert((sn.to_string(), bkey(&ns, &r.id)));
                                }
                                continue;
                            }
                        };
                        if is_flat {
                            flat.insert(node);
                        } else {
                            queue.push_back(node);
                        }
                    }
                }
                for (name, img) in &images {
                    if !expired(&img.labels, t) {
                        queue.push_back(Node::Image(name.clone()));
                    }
                }
                // Containers are roots: they hold their snapshot and whatever
                // their labels reference.
                for (_, c) in
                    w.scan::<crate::containers::ContainerRecord>(&prefix(&ns, kind::CONTAINERS))?
                {
                    if !c.snapshot_key.is_empty() {
                        snap_roots.insert((c.snapshotter.clone(), bkey(&ns, &c.snapshot_key)));
                    }
                    snapshot_refs(&ns, &c.labels, &mut snap_roots);
                    for (k, v) in &c.labels {
                        if k.starts_with(REF_CONTENT) {
                            queue.push_back(Node::Content(v.clone()));
                        } else if k.starts_with(REF_IMAGE) {
                            queue.push_back(Node::Image(v.clone()));
                        }
                    }
                }
                for (d, c) in &content {
                    if c.labels.contains_key(GC_ROOT) || not_yet_expired(&c.labels, t) {
                        queue.push_back(Node::Content(d.clone()));
                    }
                }
                // Back references: child blob held while its parent is.
                let mut brefs: HashMap<&str, Vec<&str>> = HashMap::new();
                for (d, c) in &content {
                    for (k, v) in &c.labels {
                        if k.starts_with(BREF_CONTENT) {
                            brefs.entry(v.as_str()).or_default().push(d.as_str());
                        }
                    }
                }
                for n in flat {
                    marked.insert(n);
                }
                while let Some(n) = queue.pop_front() {
                    if !marked.insert(n.clone()) {
                        continue;
                    }
                    let labels = match &n {
                        Node::Image(name) => match images.get(name) {
                            Some(img) => {
                                queue.push_back(Node::Content(img.target.digest.clone()));
                                &img.labels
                            }
                            None => continue,
                        },
                        Node::Content(d) => {
                            for child in brefs.get(d.as_str()).into_iter().flatten() {
                                queue.push_back(Node::Content(child.to_string()));
                            }
                            match content.get(d) {
                                Some(c) => &c.labels,
                                None => continue,
                            }
                        }
                    };
                    snapshot_refs(&ns, labels, &mut snap_roots);
                    for (k, v) in labels {
                        if k.starts_with(REF_CONTENT) {
                            queue.push_back(Node::Content(v.clone()));
                        } else if k.starts_with(REF_IMAGE) {
                            queue.push_back(Node::Image(v.clone()));
                        }
                    }
                }
                for d in content.keys() {
                    if !marked.contains(&Node::Content(d.clone())) {
                        w.delete(&key(&ns, kind::CONTENT, d))?;
                        stats.content_records += 1;
                    }
                }
                for (name, img) in &images {
                    if !marked.contains(&Node::Image(name.clone())) && expired(&img.labels, t) {
                        w.delete(&key(&ns, kind::IMAGES, name))?;
                    }
                }
                for (r, rec) in &ingests {
                    // expires_at 0 marks an upload that only its lease kept alive.
                    let live = leased_ingests.contains(r) || rec.expires_at > t;
                    if !live {
                        w.delete(&key(&ns, kind::INGESTS, r))?;
                        stats.ingest_records += 1;
                    }
                }
            }
            Ok(())
        })?;

        // Phase 1b: snapshots nothing holds go, children before parents.
        self.sweep_snapshots(&snap_roots, t, &mut stats);

        // Phase 2: remove files nothing records, under the sweep lock so no
        // upload is created or committed meanwhile.
        let _sweep = self
            .blobs
            .sweep_lock
            .write()
            .map_err(|_| Error::internal("lock poisoned"))?;
        // What survived phase 1, plus anything committed since.
        let (keep_blobs, keep_ingests) = self.db.read(|r| {
            let mut blobs = HashSet::new();
            let mut ingests = HashSet::new();
            for ns in r.namespaces()? {
                for (d, _) in r.scan::<ContentRecord>(&prefix(&ns, kind::CONTENT))? {
                    blobs.insert(d);
                }
                for (reference, rec) in r.scan::<IngestRecord>(&prefix(&ns, kind::INGESTS))? {
                    ingests.insert(Blobs::ingest_name(&ns, &reference));
                    if !rec.expected.is_empty() {
                        blobs.insert(rec.expected);
                    }
                }
            }
            Ok((blobs, ingests))
        })?;
        for hex in self.blobs.list_blobs()? {
            if keep_blobs.contains(&format!("sha256:{hex}")) {
                continue;
            }
            match self.blobs.remove_blob(&hex) {
                Ok(()) => stats.blobs += 1,
                Err(e) => {
                    stats.errors += 1;
                    tracing::warn!("gc: remove blob sha256:{hex}: {e}");
                }
            }
        }
        for name in self.blobs.list_ingests()? {
            if keep_ingests.contains(&name) {
                continue;
            }
            match self.blobs.remove_ingest(&name) {
                Ok(()) => stats.ingest_dirs += 1,
                Err(e) => {
                    stats.errors += 1;
                    tracing::warn!("gc: remove upload {name}: {e}");
                }
            }
        }
        Ok(stats)
    }
}

impl Collector {
    fn sweep_snapshots(&self, roots: &SnapshotRoots, t: i64, stats: &mut Stats) {
        for (sn, s, infos) in self.snapshots.all() {
            let by_name: HashMap<&str, &berth_snapshotter::Info> =
                infos.iter().map(|i| (i.name.as_str(), i)).collect();
            let mut marked: HashSet<&str> = HashSet::new();
            let mut queue: Vec<&str> = infos
                .iter()
                .filter(|i| {
                    roots.contains(&(sn.clone(), i.name.clone()))
                        || i.labels.contains_key(GC_ROOT)
                        || not_yet_expired(&i.labels, t)
                })
                .map(|i| i.name.as_str())
                .collect();
            while let Some(n) = queue.pop() {
                if marked.insert(n)
                    && let Some(i) = by_name.get(n)
                    && !i.parent.is_empty()
                {
                    queue.push(i.parent.as_str());
                }
            }
            let mut doomed: Vec<&berth_snapshotter::Info> = infos
                .iter()
                .filter(|i| !marked.contains(i.name.as_str()))
                .collect();
            // Remove leaves until nothing more can go.
            loop {
                let before = doomed.len();
                let parents: HashSet<&str> = infos
                    .iter()
                    .filter(|i| {
                        doomed.iter().any(|d| d.name == i.name) || marked.contains(i.name.as_str())
                    })
                    .map(|i| i.parent.as_str())
                    .collect();
                doomed.retain(|d| {
                    if parents.contains(d.name.as_str()) {
                        return true; // still a parent of something; later
                    }
                    match s.remove(&d.name) {
                        Ok(()) => {
                            stats.snapshots += 1;
                            false
                        }
                        Err(e) => {
                            stats.errors += 1;
                            tracing::warn!("gc: remove snapshot {sn}/{}: {e}", d.name);
                            false
                        }
                    }
                });
                if doomed.len() == before || doomed.is_empty() {
                    break;
                }
            }
        }
    }
}

fn expiry(labels: &HashMap<String, String>) -> Option<i64> {
    labels.get(LABEL_EXPIRE).and_then(|v| parse_time(v))
}

fn expired(labels: &HashMap<String, String>, t: i64) -> bool {
    expiry(labels).is_some_and(|e| e <= t)
}

fn not_yet_expired(labels: &HashMap<String, String>, t: i64) -> bool {
    expiry(labels).is_some_and(|e| e > t)
}

#[cfg(test)]
mod tests {
    //! The collector over real stores in a temporary root (no root user
    //! needed): what each kind of reference keeps, and what goes.
    use crate::core::{Core, temp_core as core};
    use crate::images::{Image, ImageRecord};
    use crate::types::{Ctx, Descriptor, Digest, Labels};

    const NS: &str = "gc-test";

    fn blob(c: &Core, ctx: &Ctx, data: &[u8], labels: &[(&str, &str)]) -> Digest {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let reference = format!("test-{}", hex::encode(&data[..data.len().min(8)]));
        c.content
            .write_blob(ctx, &reference, &mut &data[..], None, labels)
            .expect("write blob")
            .0
    }

    fn present(c: &Core, d: &Digest) -> bool {
        match c.content.info(NS, d) {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => panic!("info {d}: {e}"),
        }
    }

    #[tokio::test]
    async fn unreferenced_blobs_go_and_gc_roots_stay() {
        let dir = tempfile::tempdir().unwrap();
        let c = core(&dir);
        let ctx = Ctx::new(NS);
        let loose = blob(&c, &ctx, b"loose blob", &[]);
        let rooted = blob(&c, &ctx, b"rooted blob", &[("containerd.io/gc.root", "x")]);
        let stats = c.gc.collect().await.unwrap();
        assert!(!present(&c, &loose), "an unreferenced blob stayed");
        assert!(present(&c, &rooted), "a gc.root blob went");
        assert_eq!((stats.content_records, stats.blobs), (1, 1), "{stats:?}");
    }

    #[tokio::test]
    async fn an_image_keeps_what_its_labels_reference() {
        let dir = tempfile::tempdir().unwrap();
        let c = core(&dir);
        let ctx = Ctx::new(NS);
        let layer = blob(&c, &ctx, b"layer", &[]);
        let config = blob(&c, &ctx, b"config", &[]);
        let stray = blob(&c, &ctx, b"stray", &[]);
        let manifest = blob(
            &c,
            &ctx,
            b"manifest",
            &[
                ("containerd.io/gc.ref.content.config", config.as_str()),
                ("containerd.io/gc.ref.content.l.0", layer.as_str()),
            ],
        );
        c.images
            .create(
                &ctx,
                Image {
                    name: "docker.io/test/gc:1".into(),
                    record: ImageRecord {
                        target: Descriptor {
                            media_type: crate::images::oci::media::OCI_MANIFEST.into(),
                            digest: manifest.as_str().into(),
                            size: 8,
                            annotations: Default::default(),
                        },
                        ..Default::default()
                    },
                },
            )
            .unwrap();
        c.gc.collect().await.unwrap();
        for (what, d) in [
            ("manifest", &manifest),
            ("config", &config),
            ("layer", &layer),
        ] {
            assert!(present(&c, d), "the image's {what} went");
        }
        assert!(!present(&c, &stray), "a blob nothing references stayed");
    }

    #[tokio::test]
    async fn a_lease_keeps_its_blobs_until_it_goes_or_expires() {
        let dir = tempfile::tempdir().unwrap();
        let c = core(&dir);
        c.leases.create(NS, "hold", Labels::new()).unwrap();
        let held = blob(
            &c,
            &Ctx {
                ns: NS.into(),
                lease: Some("hold".into()),
            },
            b"held by a lease",
            &[],
        );
        let past = Labels::from([(
            "containerd.io/gc.expire".to_string(),
            "2000-01-01T00:00:00Z".to_string(),
        )]);
        c.leases.create(NS, "old", past).unwrap();
        let expiring = blob(
            &c,
            &Ctx {
                ns: NS.into(),
                lease: Some("old".into()),
            },
            b"held by an expired lease",
            &[],
        );
        let stats = c.gc.collect().await.unwrap();
        assert!(present(&c, &held), "a leased blob went");
        assert!(
            !present(&c, &expiring),
            "an expired lease still held its blob"
        );
        assert_eq!(stats.leases, 1, "{stats:?}");
        c.leases.delete(NS, "hold", true).await.unwrap();
        assert!(!present(&c, &held), "the blob outlived its lease");
    }
}
