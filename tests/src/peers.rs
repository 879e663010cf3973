//! Finding the real peers (`ctr`, `containerd`, …) and root: a missing one
//! makes its test print `SKIPPED: …`, or fail under `BERTH_REQUIRE_PEERS=1`.

use std::path::PathBuf;

/// Finds a peer program, or reports the skip loudly.
pub fn peer(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        missing_peer(name);
    }
    found
}

/// Like [`peer`], for a peer that must be this very file: one of the same
/// name earlier on PATH would be another program (e.g. a newer docker CLI).
pub fn peer_at(path: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    if p.is_file() {
        Some(p)
    } else {
        missing_peer(path);
        None
    }
}

fn missing_peer(name: &str) {
    if std::env::var("BERTH_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("required peer {name:?} is not installed (BERTH_REQUIRE_PEERS=1)");
    }
    eprintln!("SKIPPED: {name} is not installed; install it (see .ci/run) to run this test");
}

/// True when running as root; otherwise reports the skip loudly.
pub fn require_root(what: &str) -> bool {
    let root = nix_is_root();
    if !root {
        if std::env::var("BERTH_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{what} needs root (BERTH_REQUIRE_PEERS=1)");
        }
        eprintln!("SKIPPED: {what} needs root");
    }
    root
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
