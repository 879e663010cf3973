//! Test harness: start real daemons on temp directories, build the image
//! fixtures once per run, and find the real peers (`ctr`, …).
//!
//! A peer that is not installed makes its test print `SKIPPED: …` with the
//! reason; with `BERTH_REQUIRE_PEERS=1` (set by CI) it fails instead.
//!
//! The harness's modules use each other directly (`paths`, `peers`,
//! `process` at the bottom, then `daemon` and the peer daemons); the root
//! only re-exports their helpers, so tests keep using `berth_tests::*`.

pub mod bench;
pub mod conformance;
pub mod containerd;
mod daemon;
pub mod dockerd;
pub mod guard;
mod images;
pub mod netns;
mod openssl;
mod paths;
mod peers;
mod probe;
mod process;
pub mod registry;
pub mod token;

pub use daemon::{Daemon, berthctl_at, berthctl_at_default_net, wait_listening, without_network};
pub use guard::remove_cgroups;
pub use images::*;
pub use openssl::{run_openssl, self_signed};
pub use paths::{bin, corpus, fixture_digest, fixtures, repo_root, target_dir};
pub use peers::{peer, peer_at, require_root};
pub use probe::syscall_probe;
pub use process::{as_nobody, fails, ok, output_within, terminate};
