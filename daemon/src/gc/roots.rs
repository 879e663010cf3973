//! Root scan: the records of one namespace, and which of them are held
//! regardless of references (images, containers, live leases, `gc.root`,
//! a future `gc.expire`, live uploads).

use super::labels::{GC_ROOT, Node, SnapshotRoots, expired, not_yet_expired, refs, snapshot_refs};
use crate::containers::ContainerRecord;
use crate::content::{ContentRecord, IngestRecord};
use crate::error::Result;
use crate::images::ImageRecord;
use crate::metadata::leases::{LABEL_FLAT, LeaseRecord};
use crate::metadata::{Read, kind, prefix};
use crate::snapshots::bkey;
use std::collections::{HashMap, HashSet};

/// Everything collection reads from one namespace.
pub struct NsRecords {
    pub images: HashMap<String, ImageRecord>,
    pub content: HashMap<String, ContentRecord>,
    pub ingests: Vec<(String, IngestRecord)>,
    pub leases: Vec<(String, LeaseRecord)>,
    pub containers: Vec<(String, ContainerRecord)>,
}

impl NsRecords {
    /// Reads namespace `ns` inside the collection's transaction.
    pub fn load(r: &impl Read, ns: &str) -> Result<NsRecords> {
        Ok(NsRecords {
            images: r.scan(&prefix(ns, kind::IMAGES))?.into_iter().collect(),
            content: r.scan(&prefix(ns, kind::CONTENT))?.into_iter().collect(),
            ingests: r.scan(&prefix(ns, kind::INGESTS))?,
            leases: r.scan(&prefix(ns, kind::LEASES))?,
            containers: r.scan(&prefix(ns, kind::CONTAINERS))?,
        })
    }
}

/// The roots of one namespace.
#[derive(Debug, Default)]
pub struct Roots {
    /// Held with everything they reference.
    pub nodes: Vec<Node>,
    /// Held by a `gc.flat` lease: themselves only.
    pub flat: Vec<Node>,
    /// Snapshots held directly (by containers and leases).
    pub snapshots: SnapshotRoots,
    /// Uploads a live lease holds.
    pub leased_ingests: HashSet<String>,
    /// Leases whose `gc.expire` has passed: removed, and hold nothing.
    pub expired_leases: Vec<String>,
}

/// The roots of namespace `ns` at time `t`.
pub fn scan(ns: &str, rec: &NsRecords, t: i64) -> Roots {
    let mut roots = Roots::default();
    for (id, lease) in &rec.leases {
        if lease.expired(t) {
            roots.expired_leases.push(id.clone());
            continue;
        }
        let flat = lease.labels.contains_key(LABEL_FLAT);
        for r in &lease.resources {
            let node = match r.kind.as_str() {
                "content" => Node::Content(r.id.clone()),
                "images" => Node::Image(r.id.clone()),
                "ingests" => {
                    roots.leased_ingests.insert(r.id.clone());
                    continue;
                }
                k => {
                    if let Some(sn) = k.strip_prefix("snapshots/") {
                        roots.snapshots.insert((sn.to_string(), bkey(ns, &r.id)));
                    }
                    continue;
                }
            };
            if flat {
                roots.flat.push(node);
            } else {
                roots.nodes.push(node);
            }
        }
    }
    for (name, img) in &rec.images {
        if !expired(&img.labels, t) {
            roots.nodes.push(Node::Image(name.clone()));
        }
    }
    // A container holds its snapshot and whatever its labels reference.
    for (_, c) in &rec.containers {
        if !c.snapshot_key.is_empty() {
            let snapshotter = c.snapshotter.clone();
            roots
                .snapshots
                .insert((snapshotter, bkey(ns, &c.snapshot_key)));
        }
        snapshot_refs(ns, &c.labels, &mut roots.snapshots);
        roots.nodes.extend(refs(&c.labels));
    }
    for (d, c) in &rec.content {
        if c.labels.contains_key(GC_ROOT) || not_yet_expired(&c.labels, t) {
            roots.nodes.push(Node::Content(d.clone()));
        }
    }
    roots
}
