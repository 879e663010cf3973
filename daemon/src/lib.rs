//! berthd: the berth daemon as a library; `main.rs` is a thin wrapper.

pub mod content;
pub mod error;
pub mod events;
pub mod gc;
pub mod images;
pub mod leases;
pub mod metadata;
pub mod namespaces;
pub mod types;
