//! The snapshotter contract: the [`Snapshotter`] trait every
//! implementation keeps, and the facts about snapshots it deals in
//! ([`Kind`], [`Info`], [`Usage`], [`Labels`]). Below the implementations
//! and the proxy, which all use it; re-exported at the crate root.

use crate::error::Result;
use crate::mount::Mount;
use std::collections::HashMap;

/// Labels on a snapshot.
pub type Labels = HashMap<String, String>;

/// What a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Read-only, mountable, created by [`Snapshotter::view`].
    View,
    /// Writable, mountable, created by [`Snapshotter::prepare`].
    Active,
    /// Immutable, not mountable, created by [`Snapshotter::commit`]; the
    /// only kind that can be a parent.
    Committed,
}

impl Kind {
    /// Name used in filters and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// A snapshot's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Key (active, view) or name (committed).
    pub name: String,
    /// Name of the committed parent, or empty.
    pub parent: String,
    pub kind: Kind,
    /// Nanoseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
    pub labels: Labels,
}

impl berth_proto::filters::Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path.first()?.as_str(), path.len()) {
            ("name", 1) => Some(self.name.clone()),
            ("parent", 1) => Some(self.parent.clone()),
            ("kind", 1) => Some(self.kind.as_str().to_string()),
            ("labels", _) => berth_proto::filters::label_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

/// Disk used by one snapshot, its parents excluded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Bytes.
    pub size: i64,
    /// Files and directories.
    pub inodes: i64,
}

/// Label asking prepare/view for a tree remapped to these uids
/// (`container:host:length`), as containerd's remapping snapshotters read it.
pub const UID_MAPPING: &str = "containerd.io/snapshot/uidmapping";
/// The gid counterpart of [`UID_MAPPING`].
pub const GID_MAPPING: &str = "containerd.io/snapshot/gidmapping";

/// A store of snapshots: filesystem states related as parent and child.
///
/// The contract every implementation keeps (checked by [`testsuite`](crate::testsuite)):
///
/// * **One key space.** Active snapshots and views are identified by *key*,
///   committed ones by *name*; both share one namespace, so a key cannot be
///   reused while any snapshot holds it (`AlreadyExists`).
/// * **Lifecycle.** [`prepare`](Self::prepare) creates a writable *active*
///   snapshot and [`view`](Self::view) a read-only one, each on top of an
///   optional parent; [`commit`](Self::commit) turns an active snapshot into
///   an immutable *committed* one under a new name, removing the key. Views
///   cannot be committed (`FailedPrecondition`). Kinds never change otherwise.
/// * **Parents are committed.** Only a committed snapshot may be a parent
///   (`FailedPrecondition` otherwise, `NotFound` if absent); the parent of a
///   commit is the parent of the active snapshot it came from.
/// * **Removal.** [`remove`](Self::remove) deletes any snapshot without
///   children; one that is the parent of another is refused with
///   `FailedPrecondition`.
/// * **Mounts** are returned by prepare/view and again by
///   [`mounts`](Self::mounts) for active snapshots and views only
///   (committed: `FailedPrecondition`). Mounting them shows the parent chain's
///   content with the snapshot's own changes on top; a view's mounts are
///   read-only.
/// * **Usage** counts only the snapshot's own changes, never its parents'.
/// * **Labels** are the only mutable property ([`update`](Self::update) with
///   `labels` / `labels.<key>` field paths; no paths replaces them all).
/// * **Id remapping.** The labels [`UID_MAPPING`] / [`GID_MAPPING`]
///   (`ctr run --remap-labels`) ask for a tree owned by a user namespace's
///   ids. A snapshotter that cannot shift ownership refuses them on
///   prepare/view (`Unimplemented`, creating nothing) instead of handing
///   back a tree the container's root does not own.
/// * **Crash safety.** Metadata changes are transactional, and directories
///   are created under temporary names and renamed into place inside the
///   transaction, so a crash leaves at worst unreferenced directories, which
///   [`cleanup`](Self::cleanup) removes.
///
/// Calls do blocking filesystem work; async callers should run them on a
/// blocking thread.
pub trait Snapshotter: Send + Sync {
    /// Info of the snapshot with this key or name; `NotFound` if absent.
    fn stat(&self, key: &str) -> Result<Info>;

    /// Updates labels (the only mutable property); returns the new info.
    fn update(&self, info: Info, paths: &[String]) -> Result<Info>;

    /// Resource usage of the snapshot, excluding its parents.
    fn usage(&self, key: &str) -> Result<Usage>;

    /// Mounts of an active snapshot or view.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;

    /// Creates a writable snapshot `key` on top of the committed `parent`
    /// (empty for none) and returns its mounts.
    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>>;

    /// Creates a read-only snapshot `key` of the committed `parent`.
    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>>;

    /// Commits the active snapshot `key` as `name`; `key` stops existing.
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()>;

    /// Removes a snapshot that has no children.
    fn remove(&self, key: &str) -> Result<()>;

    /// Every snapshot matching any of `filters` (containerd syntax over
    /// `name`, `parent`, `kind`, `labels.<key>`).
    fn walk(&self, filters: &[String]) -> Result<Vec<Info>>;

    /// Removes directories no snapshot references (left by a crash).
    fn cleanup(&self) -> Result<()>;
}
