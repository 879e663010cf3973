//! Reference walk: from the roots through `gc.ref.*` labels, image targets
//! and `gc.bref.content` back references, to the set of live objects of one
//! namespace. References never cross namespaces.

use super::labels::{BREF_CONTENT, Node, SnapshotRoots, refs, snapshot_refs};
use super::roots::{NsRecords, Roots};
use std::collections::{HashMap, HashSet, VecDeque};

/// Marks what the roots of namespace `ns` reach; adds the snapshots the
/// reached objects' labels reference to `snapshots`.
pub fn mark(
    ns: &str,
    rec: &NsRecords,
    roots: &Roots,
    snapshots: &mut SnapshotRoots,
) -> HashSet<Node> {
    // Back references: a child blob is held while its parent is.
    let mut brefs: HashMap<&str, Vec<&str>> = HashMap::new();
    for (d, c) in &rec.content {
        for (k, v) in &c.labels {
            if k.starts_with(BREF_CONTENT) {
                brefs.entry(v.as_str()).or_default().push(d.as_str());
            }
        }
    }
    let mut marked: HashSet<Node> = HashSet::new();
    let mut queue: VecDeque<Node> = roots.nodes.iter().cloned().collect();
    while let Some(n) = queue.pop_front() {
        if !marked.insert(n.clone()) {
            continue;
        }
        let labels = match &n {
            Node::Image(name) => match rec.images.get(name) {
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
                match rec.content.get(d) {
                    Some(c) => &c.labels,
                    None => continue,
                }
            }
        };
        snapshot_refs(ns, labels, snapshots);
        queue.extend(refs(labels));
    }
    // Flat-leased objects are held without what they reference. Added after
    // the walk, so one that is also reached from a root is still followed.
    marked.extend(roots.flat.iter().cloned());
    marked
}
