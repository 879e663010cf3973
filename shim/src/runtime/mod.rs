//! Low-level OCI runtimes behind one trait, [`OciRuntime`] ([`oci`]): the
//! built-in one ([`builtin`]) and a driver for runc-compatible binaries
//! ([`external`]); [`choice`] picks one per container. May use
//! `crate::cgroup`, `crate::stdio`, `crate::bundle`; never the ttrpc
//! service. This file only names the parts.

pub mod builtin;
pub mod choice;
pub mod external;
pub mod oci;

pub use choice::{Choice, cleanup_after_crash, load_spec};
pub use oci::{CreateOpts, Created, ExecOpts, OciRuntime, signal_process};
