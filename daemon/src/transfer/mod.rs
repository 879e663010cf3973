//! Moving images in and out of the daemon: image archives (import and
//! export, `archive`) and registries (pull and push, `registry`).
//!
//! Owns no state of its own. May use the stores below it (`content`,
//! `images`, `metadata` leases) and `snapshots::unpack`; nothing but the
//! gRPC adapters (`server`) uses it.

pub mod archive;
pub mod registry;
pub mod stores;
