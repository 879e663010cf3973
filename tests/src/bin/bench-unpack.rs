//! Benchmark (not a test): import and unpack a ~150 MiB image into berthd,
//! and into containerd + its overlayfs snapshotter when installed, and print
//! the throughput side by side.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-unpack`

use berth_tests::bench::*;
use berth_tests::*;
use std::time::Instant;

const RUNS: usize = 3;

fn main() {
    if !require_root("the unpack benchmark (mounts)") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("bench-unpack-")
        .tempdir()
        .unwrap();
    let archive = image_archive(dir.path());
    let file = archive.to_str().unwrap();
    let size = usize::try_from(std::fs::metadata(&archive).unwrap().len()).unwrap();
    eprintln!(
        "image archive: {:.1} MiB, {RUNS} runs each",
        size as f64 / (1 << 20) as f64
    );
    let import = ["images", "import", "--base-name", "bench/img", file];
    let berth = timed_runs("berth", RUNS, || {
        settle();
        let d = Daemon::start();
        let t = Instant::now();
        ok("import", d.berthctl("bench", &import));
        t.elapsed()
    });
    let containerd = containerd_runs(RUNS, &import);
    print_comparison("import + unpack", size, RUNS, berth, containerd);
}
