//! Image archives handled by berthctl itself, for daemons without a
//! Transfer service (containerd 1.6). Import streams the tar once: each
//! blob goes up through `Content.Write` (digest checked by the daemon)
//! under a lease; then the images are checked complete, unpacked through
//! `Diff.Apply` and `Snapshots`, and named through `Images`. A failure
//! drops the lease synchronously, so nothing half-made stays. Export reads
//! the blobs through `Content.Read` and writes the OCI layout tar here.
//! The archive rules (names, platforms, docker-archive conversion) are
//! those of berthd's own import and export.
//!
//! [`upload`] puts blobs into the content store; [`import`] and [`export`]
//! are the two commands.

mod export;
mod import;
mod upload;

pub(crate) use export::export;
pub(crate) use import::import;
