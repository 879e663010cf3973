//! The README's quick tour, run as written: the block between its `tour`
//! markers goes to `bash -e` with the built binaries on PATH and
//! BERTH_ADDRESS at a test daemon, inside a private network namespace (the
//! tour publishes a port on the default bridge network). A tour command
//! that stops working fails this test, so the README cannot drift.

use berth_tests::netns::*;
use berth_tests::*;
use std::process::Command;

const NAME: &str = "the_readme_quick_tour_runs_in_order";

/// The tour: the lines between `# <tour>` and `# </tour>`.
fn tour() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("read README.md");
    let (_, rest) = readme
        .split_once("# <tour>\n")
        .expect("README.md has a `# <tour>` marker");
    let (block, _) = rest
        .split_once("# </tour>")
        .expect("README.md has a `# </tour>` marker");
    block.to_string()
}

#[test]
fn the_readme_quick_tour_runs_in_order() {
    if !in_private_network() {
        if let Some(why) = network_prerequisites() {
            return skip(&why);
        }
        return run_test_in_private_network(NAME);
    }
    assert_eq!(links(), ["lo"], "not in a fresh network namespace");
    let block = tour();
    assert!(block.lines().count() > 20, "the tour is missing:\n{block}");
    let conf = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with_config(&network_config(&conf.path().join("net.d")));
    let work = tempfile::tempdir().expect("tempdir");
    let bins = bin("berthctl").parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", &block])
        .current_dir(repo_root())
        .env("PATH", path)
        .env("BERTH_ADDRESS", &d.sock)
        .env("TOUR", work.path())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the tour failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    for says in [
        "hi\n",
        "web answers by name",
        "MODE",
        "/tmp\nnobody\n",
        "hello from the log",
    ] {
        assert!(stdout.contains(says), "no {says:?} in:\n{stdout}");
    }
    // What the tour made it also removed: no container is left.
    let left = d.berthctl("default", &["ps", "-a", "-q"]);
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "containers left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    remove_cgroups("/default");
}
