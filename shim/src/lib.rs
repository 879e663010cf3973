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
pub mod flags;
pub mod memory;
pub mod runtime;
pub mod service;
pub mod stdio;

pub use error::{Error, Result};
pub use flags::{Flags, parse_flags};

/// Entry point of the binary; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags = match parse_flags(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-berth-v2: {e}");
            return 2;
        }
    };
    if flags.version {
        println!(
            "containerd-shim-berth-v2:\n  Version: {}",
            env!("CARGO_PKG_VERSION")
        );
        return 0;
    }
    let r = match flags.action.as_str() {
        "start" => bootstrap::start(&flags),
        "delete" => bootstrap::delete(&flags),
        "" => Err(Error::invalid("no action: expected start or delete")),
        other => Err(Error::invalid(format!(
            "unknown action {other:?}: expected start or delete"
        ))),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-berth-v2: {}", e.chain());
            1
        }
    }
}
