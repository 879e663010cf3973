//! Snapshotters: stacked filesystem layers for images and containers.
//!
//! Not built yet: the `Snapshotter` trait and its overlayfs/native
//! implementations arrive with the snapshots work. The daemon does not serve
//! the Snapshots or Diff APIs until then (clients get `Unimplemented`).
