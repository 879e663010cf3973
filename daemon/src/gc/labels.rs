//! The labels collection reads and the graph nodes it marks; shared by the
//! root scan, the reference walk and the sweep.

use crate::metadata::leases::{LABEL_EXPIRE, parse_time};
use crate::snapshots::bkey;
use std::collections::{HashMap, HashSet};

/// Keeps an object regardless of references.
pub const GC_ROOT: &str = "containerd.io/gc.root";
/// `…gc.ref.content[.<anything>]=<digest>` holds a blob.
pub const REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// `…gc.ref.image[.<anything>]=<name>` holds an image.
pub const REF_IMAGE: &str = "containerd.io/gc.ref.image";
/// `…gc.bref.content[.<anything>]=<parent>` on a blob: held while the parent is.
pub const BREF_CONTENT: &str = "containerd.io/gc.bref.content";
/// `…gc.ref.snapshot.<snapshotter>[/<anything>]=<key>` holds a snapshot.
pub const REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";

/// An object of the metadata graph, within one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    Content(String),
    Image(String),
}

/// `(snapshotter, backend key)` pairs that something holds.
pub type SnapshotRoots = HashSet<(String, String)>;

/// The content and images `labels` reference.
pub fn refs(labels: &HashMap<String, String>) -> impl Iterator<Item = Node> + '_ {
    labels.iter().filter_map(|(k, v)| {
        if k.starts_with(REF_CONTENT) {
            Some(Node::Content(v.clone()))
        } else if k.starts_with(REF_IMAGE) {
            Some(Node::Image(v.clone()))
        } else {
            None
        }
    })
}

/// Adds the snapshots `labels` reference (in namespace `ns`) to `out`.
pub fn snapshot_refs(ns: &str, labels: &HashMap<String, String>, out: &mut SnapshotRoots) {
    for (k, v) in labels {
        if let Some(rest) = k.strip_prefix(REF_SNAPSHOT) {
            let sn = rest.split('/').next().unwrap_or(rest);
            out.insert((sn.to_string(), bkey(ns, v)));
        }
    }
}

fn expiry(labels: &HashMap<String, String>) -> Option<i64> {
    labels.get(LABEL_EXPIRE).and_then(|v| parse_time(v))
}

/// True if `gc.expire` lies at or before `t`.
pub fn expired(labels: &HashMap<String, String>, t: i64) -> bool {
    expiry(labels).is_some_and(|e| e <= t)
}

/// True if `gc.expire` lies after `t` (such an object is a root until then).
pub fn not_yet_expired(labels: &HashMap<String, String>, t: i64) -> bool {
    expiry(labels).is_some_and(|e| e > t)
}
