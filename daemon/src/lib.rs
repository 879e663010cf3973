//! berthd: the berth daemon as a library; `main.rs` is a thin wrapper.
//!
//! In-process services ([`content`], [`images`], [`namespaces`], [`leases`],
//! [`events`], [`gc`], [`archive`]) sit on the [`metadata`] database and are
//! wired together in [`core`]; [`runtime`] runs tasks through shims;
//! [`server`] adapts them to gRPC and ttrpc.

pub mod archive;
pub mod config;
pub mod containers;
pub mod content;
pub mod core;
pub mod daemon;
pub mod diff;
pub mod error;
pub mod events;
pub mod gc;
pub mod images;
pub mod leases;
pub mod metadata;
pub mod namespaces;
pub mod oci;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod snapshots;
pub mod types;
pub mod unpack;
