//! CRI v1 (temporary module root on the cri-containers branch until the
//! skeleton lands).

pub mod exec;
pub mod seccomp_default;
pub mod security;
pub mod spec;
pub mod spec_mounts;
