//! Where things are: the build's binaries, the repository, and the image
//! fixtures and interop corpus, each built once per run.

use crate::peers::{peer, require_root};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace's target directory for this profile (where `berthd` is).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Tests run from target/<profile>/deps, binaries from target/<profile>.
    let dir = exe.parent().expect("exe has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of one of the workspace's binaries; panics with the fix if absent.
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (tests/run does)",
        p.display()
    );
    p
}

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Directory with the image fixtures, built once per run (shared between
/// test binaries through a lock file).
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = target_dir().join("berth-fixtures");
        let script = repo_root().join("tests/fixtures/make-fixtures.sh");
        let lock = target_dir().join("berth-fixtures.lock");
        let st = Command::new("flock")
            .arg(&lock)
            .arg("bash")
            .arg(&script)
            .arg(&out)
            .status()
            .expect("run flock make-fixtures.sh");
        assert!(st.success(), "make-fixtures.sh failed");
        out
    })
}

/// The interop corpus (`tests/fixtures/make-corpus.sh`): the same changes
/// made on the busybox fixture by umoci, buildah, skopeo and GNU tar, built
/// once per run. `None` (SKIPPED, or a failure under BERTH_REQUIRE_PEERS)
/// when a builder is not installed or we are not root.
pub fn corpus() -> Option<&'static Path> {
    for tool in ["umoci", "buildah", "skopeo", "runc"] {
        peer(tool)?;
    }
    if !require_root("building the corpus (buildah RUN, umoci owners)") {
        return None;
    }
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    Some(DIR.get_or_init(|| {
        let out = target_dir().join("berth-corpus");
        let script = repo_root().join("tests/fixtures/make-corpus.sh");
        let lock = target_dir().join("berth-corpus.lock");
        let st = Command::new("flock")
            .arg(&lock)
            .arg("bash")
            .arg(&script)
            .arg(&out)
            .arg(fixtures())
            .status()
            .expect("run flock make-corpus.sh");
        assert!(st.success(), "make-corpus.sh failed");
        out
    }))
}

/// A digest recorded by the fixture script (`manifest`, `config`, `layer`, `index`).
pub fn fixture_digest(name: &str) -> String {
    let env = std::fs::read_to_string(fixtures().join("digests.env")).expect("digests.env");
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in digests.env"))
        .to_string()
}
