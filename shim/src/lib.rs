//! The per-container shim, `containerd-shim-berth-v2`.
//!
//! It speaks containerd's shim v2 contract, so both berthd and real
//! containerd 1.6/1.7 can drive it:
//!
//! * `… start` (run with the bundle as working directory) starts a shim
//!   serving the `containerd.task.v2.Task` ttrpc API on a unix socket and
//!   prints its address; a shim already serving that container is reused.
//! * `… delete` cleans up after a shim that died and prints a
//!   `containerd.task.v2.DeleteResponse` with the saved exit status.
//!
//! The serving shim ([`service`]) is a child subreaper running one
//! current-thread tokio runtime (no other threads, so forking container
//! processes is safe). It runs the container with the built-in OCI runtime
//! ([`runtime::builtin`]) or, when the runtime options name a
//! `BinaryName`, drives runc/crun ([`runtime::external`]). Exit statuses are
//! written durably into the bundle; events go to `$TTRPC_ADDRESS`.

pub mod bootstrap;
pub mod bundle;
pub mod cgroup;
pub mod error;
pub mod events;
pub mod exe_seal;
pub mod fdio;
pub mod flags;
pub mod logfile;
pub mod memory;
pub mod runtime;
pub mod service;
pub mod stdio;

pub use error::{Error, Result};
pub use flags::{Flags, parse_flags};
