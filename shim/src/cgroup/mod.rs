//! The container's cgroup behind one trait, [`Cgroup`], with a cgroup v1
//! ([`v1`]: a directory per controller) and a cgroup v2 ([`v2`]: one
//! unified tree) implementation, picked by [`Hierarchy::detect`] from the
//! host (`/sys/fs/cgroup/cgroup.controllers` exists only on v2).
//!
//! Both write the cgroup files directly (no cgroups-rs): every field of
//! `linux.resources` is written or refused naming the field, every write
//! that fails names the file and value, and both are unit-tested against
//! fake cgroupfs trees under a temporary directory (v2 also against the
//! host's real cgroup2 mount when run as root). Device rules are folded
//! as runc folds them ([`devices`]) and on v2 loaded as an eBPF program
//! ([`bpf`]). May use `crate::error` only. [`base`] holds the trait and
//! the file helpers, [`hierarchy`] the detection and the choice; this file
//! only names them.

pub mod base;
pub mod bpf;
pub mod devices;
#[cfg(test)]
pub mod fake;
pub mod hierarchy;
pub mod stats;
pub mod v1;
pub mod v2;

pub use base::{Cgroup, OomCounter, OomWatch, Stats, join_self};
#[cfg(test)]
pub use fake::Fake;
pub use hierarchy::{Hierarchy, ROOT};
