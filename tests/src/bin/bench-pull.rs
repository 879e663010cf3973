//! Benchmark (not a test): pull (fetch + unpack) a ~150 MiB image from a
//! registry on 127.0.0.1 into berthd, and into containerd with `ctr images
//! pull` when installed, and print the times side by side.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-pull`

use berth_tests::bench::*;
use berth_tests::registry::Registry;
use berth_tests::*;
use std::time::Instant;

const RUNS: usize = 3;

fn main() {
    if !require_root("the pull benchmark (unpacking mounts)") {
        return;
    }
    let Some(reg_bin) = peer("docker-registry") else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("bench-pull-")
        .tempdir()
        .unwrap();
    let archive = image_archive(dir.path());
    let size = usize::try_from(std::fs::metadata(&archive).unwrap().len()).unwrap();
    let reg = Registry::start(&reg_bin);
    let base = format!("{}/bench", reg.host());
    let name = format!("{base}:bench");
    {
        let d = Daemon::start();
        d.import(&archive, &["--no-unpack", "--base-name", &base]);
        ok("push", d.berthctl("default", &["images", "push", &name]));
    }
    eprintln!(
        "image: {:.1} MiB in {name}, {RUNS} runs each",
        size as f64 / (1 << 20) as f64
    );
    let berth = timed_runs("berth", RUNS, || {
        let d = Daemon::start();
        settle();
        let t = Instant::now();
        ok("pull", d.berthctl("bench", &["images", "pull", &name]));
        t.elapsed()
    });
    let containerd = containerd_runs(RUNS, &["images", "pull", "--plain-http", &name]);
    print_comparison(
        "pull (fetch + unpack) from 127.0.0.1",
        size,
        RUNS,
        berth,
        containerd,
    );
}
