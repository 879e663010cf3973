//! Snapshotters: stacked filesystem layers for images and containers.
//!
//! A [`Snapshotter`] keeps a tree of snapshots. Images become chains of
//! committed snapshots (one per layer, named by chain ID); a container gets
//! an active snapshot on top of its image's last layer. Two implementations:
//! [`overlay::Overlay`] (overlayfs, the default) and [`native::Native`]
//! (plain copies, for filesystems without overlay). Both pass the
//! conformance suite in [`testsuite`]. [`proxy`] serves any snapshotter over
//! containerd's Snapshots gRPC API (the `berth-snapshotter` binary), so real
//! containerd can use it as a `proxy_plugins` snapshotter.

pub mod contract;
pub mod error;
pub mod fsutil;
pub mod mount;
pub mod native;
pub mod overlay;
pub mod proxy;
pub mod storage;
pub mod testsuite;

pub use contract::{Info, Kind, Labels, Snapshotter, Usage};
pub use error::{Error, Result};
pub use mount::Mount;
