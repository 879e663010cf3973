//! Sweep: removes what the walk left unmarked — metadata records in the
//! collection's transaction, then snapshots (children before parents), then
//! blob and upload files no namespace records. A failure on one snapshot or
//! file is counted and logged and the sweep goes on.

use super::labels::{GC_ROOT, Node, SnapshotRoots, expired, not_yet_expired};
use super::roots::{NsRecords, Roots};
use crate::content::{Blobs, ContentRecord, IngestRecord};
use crate::error::{Error, Result};
use crate::metadata::{Db, Read, Writer, key, kind, prefix};
use crate::snapshots::Snapshots;
use berth_snapshotter::Info;
use std::collections::{HashMap, HashSet};

/// What one collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub content_records: usize,
    pub ingest_records: usize,
    pub leases: usize,
    pub images: usize,
    pub blobs: usize,
    pub ingest_dirs: usize,
    pub snapshots: usize,
    pub errors: usize,
}

/// Deletes the records of namespace `ns` that nothing holds.
pub fn metadata(
    w: &mut Writer<'_, '_>,
    ns: &str,
    rec: &NsRecords,
    roots: &Roots,
    marked: &HashSet<Node>,
    t: i64,
    stats: &mut Stats,
) -> Result<()> {
    for id in &roots.expired_leases {
        w.delete(&key(ns, kind::LEASES, id))?;
        stats.leases += 1;
    }
    for d in rec.content.keys() {
        if !marked.contains(&Node::Content(d.clone())) {
            w.delete(&key(ns, kind::CONTENT, d))?;
            stats.content_records += 1;
        }
    }
    // An image without an expiry is a root, so only expired ones can go.
    for (name, img) in &rec.images {
        if !marked.contains(&Node::Image(name.clone())) && expired(&img.labels, t) {
            w.delete(&key(ns, kind::IMAGES, name))?;
            stats.images += 1;
        }
    }
    for (r, ingest) in &rec.ingests {
        // expires_at 0 marks an upload that only its lease kept alive.
        let live = roots.leased_ingests.contains(r) || ingest.expires_at > t;
        if !live {
            w.delete(&key(ns, kind::INGESTS, r))?;
            stats.ingest_records += 1;
        }
    }
    Ok(())
}

/// The snapshots of one snapshotter that go, in an order that removes
/// children before their parents. `held` says which are held directly; a
/// held snapshot holds its parent chain.
pub fn doomed_snapshots(infos: &[Info], held: impl Fn(&Info) -> bool) -> Vec<&str> {
    let by_name: HashMap<&str, &Info> = infos.iter().map(|i| (i.name.as_str(), i)).collect();
    let mut marked: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = infos
        .iter()
        .filter(|i| held(i))
        .map(|i| i.name.as_str())
        .collect();
    while let Some(n) = stack.pop() {
        if marked.insert(n)
            && let Some(i) = by_name.get(n)
            && !i.parent.is_empty()
        {
            stack.push(i.parent.as_str());
        }
    }
    // Marked snapshots only have marked parents, so only doomed ones can
    // still be a parent of something doomed.
    let mut left: Vec<&Info> = infos
        .iter()
        .filter(|i| !marked.contains(i.name.as_str()))
        .collect();
    let mut order = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let parents: HashSet<&str> = left.iter().map(|i| i.parent.as_str()).collect();
        let (leaves, rest): (Vec<&Info>, Vec<&Info>) = left
            .into_iter()
            .partition(|i| !parents.contains(i.name.as_str()));
        if leaves.is_empty() {
            // A parent loop cannot come from a snapshotter; stop rather than spin.
            break;
        }
        let mut names: Vec<&str> = leaves.iter().map(|i| i.name.as_str()).collect();
        names.sort_unstable();
        order.extend(names);
        left = rest;
    }
    order
}

/// Removes the snapshots nothing holds, in every snapshotter.
pub fn snapshots(snapshots: &Snapshots, roots: &SnapshotRoots, t: i64, stats: &mut Stats) {
    for (sn, s, infos) in snapshots.all() {
        let held = |i: &Info| {
            roots.contains(&(sn.clone(), i.name.clone()))
                || i.labels.contains_key(GC_ROOT)
                || not_yet_expired(&i.labels, t)
        };
        for name in doomed_snapshots(&infos, held) {
            match s.remove(name) {
                Ok(()) => stats.snapshots += 1,
                Err(e) => {
                    stats.errors += 1;
                    tracing::warn!("gc: remove snapshot {sn}/{name}: {e}");
                }
            }
        }
    }
}

/// Removes blob and upload files that no namespace records, under the
/// content store's sweep lock so no upload is created or committed meanwhile.
pub fn files(db: &Db, blobs: &Blobs, stats: &mut Stats) -> Result<()> {
    let _sweep = blobs
        .sweep_lock
        .write()
        .map_err(|_| Error::internal("lock poisoned"))?;
    // What survived the metadata sweep, plus anything committed since.
    let (keep_blobs, keep_ingests) = db.read(|r| {
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
    for hex in blobs.list_blobs()? {
        if keep_blobs.contains(&format!("sha256:{hex}")) {
            continue;
        }
        match blobs.remove_blob(&hex) {
            Ok(()) => stats.blobs += 1,
            Err(e) => {
                stats.errors += 1;
                tracing::warn!("gc: remove blob sha256:{hex}: {e}");
            }
        }
    }
    for name in blobs.list_ingests()? {
        if keep_ingests.contains(&name) {
            continue;
        }
        match blobs.remove_ingest(&name) {
            Ok(()) => stats.ingest_dirs += 1,
            Err(e) => {
                stats.errors += 1;
                tracing::warn!("gc: remove upload {name}: {e}");
            }
        }
    }
    Ok(())
}
