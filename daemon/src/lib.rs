//! berthd: the berth daemon as a library; `main.rs` is a thin wrapper.
//!
//! Each folder is one concern, lowest first: [`metadata`] (the database,
//! namespaces, leases and the collection trigger), [`content`], [`images`],
//! [`snapshots`] (with diff and unpack), [`transfer`] (archives and
//! registries), [`gc`] (which reads every store; no store reads it),
//! [`runtime`] (tasks run by shims), [`network`] (CNI networks and
//! network namespaces). Single files: [`containers`],
//! [`events`]. [`core`] wires them together for [`daemon`] and the
//! gRPC/ttrpc adapters in [`server`]; [`instance`] keeps one daemon per
//! root and socket; [`notify`] tells systemd when it serves.

pub mod config;
pub mod containers;
pub mod content;
pub mod core;
pub mod cri;
pub mod daemon;
pub mod durable;
pub mod error;
pub mod events;
pub mod gc;
pub mod images;
pub mod instance;
pub mod logs;
pub mod metadata;
pub mod network;
pub mod notify;
pub mod restart;
pub mod runtime;
pub mod server;
pub mod snapshots;
pub mod transfer;
pub mod types;
pub mod volumes;
