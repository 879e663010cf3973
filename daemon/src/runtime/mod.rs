//! The runtime layer: running the tasks of containers.
//!
//! Owns the [`TaskRuntime`] seam between task orchestration and whatever
//! runs processes; its shim-backed implementation ([`ShimRuntime`]: a
//! [`ShimManager`] for shim binaries, bundles and restore, and a typed
//! [`ShimClient`] for ttrpc calls); and the [`TaskService`] that owns the
//! task registry, events, shim death and restart reconciliation.
//! May use `error`, `events`, `containers`, `types` and `berth-proto`; never
//! `server` (the gRPC adapter sits above this), and no store uses this.

mod client;
mod contract;
mod manager;
mod service;
mod shim;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use client::ShimClient;
pub use contract::{CreateTask, Created, Exit, Found, TaskRuntime};
pub use manager::{BUNDLES, RuntimeConfig, ShimManager};
pub use service::TaskService;
pub use shim::{ShimRuntime, ShimTask};

/// The task service of a running daemon: tasks run by shims.
pub type Tasks = TaskService<ShimRuntime>;
