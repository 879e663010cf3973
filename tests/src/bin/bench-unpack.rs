//! Benchmark (not a test): import and unpack a ~150 MiB image into berthd,
//! and into containerd + its overlayfs snapshotter when installed, and print
//! the throughput side by side.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-unpack`

use berth_tests::bench::*;
use berth_tests::*;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 3;

fn bench_berth(archive: &std::path::Path) -> Duration {
    let mut times = Vec::new();
    for run in 0..RUNS {
        settle();
        let d = Daemon::start();
        let t = Instant::now();
        ok(
            "import",
            d.berthctl(
                "bench",
                &[
                    "images",
                    "import",
                    "--base-name",
                    "bench/img",
                    archive.to_str().unwrap(),
                ],
            ),
        );
        let e = t.elapsed();
        eprintln!("  berth run {run}: {:.2}s", e.as_secs_f64());
        times.push(e);
    }
    median(times)
}

fn bench_containerd(archive: &std::path::Path) -> Option<Duration> {
    let containerd = peer("containerd")?;
    let ctr = peer("ctr")?;
    let mut times = Vec::new();
    for run in 0..RUNS {
        let c = berth_tests::containerd::Containerd::start(&containerd, "", None);
        settle();
        let t = Instant::now();
        let out = Command::new(&ctr)
            .arg("--address")
            .arg(&c.sock)
            .args([
                "-n",
                "bench",
                "images",
                "import",
                "--base-name",
                "bench/img",
            ])
            .arg(archive)
            .output()
            .unwrap();
        let e = t.elapsed();
        drop(c);
        ok("ctr import", out);
        eprintln!("  containerd run {run}: {:.2}s", e.as_secs_f64());
        times.push(e);
    }
    Some(median(times))
}

fn main() {
    if !require_root("the unpack benchmark (mounts)") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("bench-unpack-")
        .tempdir()
        .unwrap();
    let archive = image_archive(dir.path());
    let size = std::fs::metadata(&archive).unwrap().len() as usize;
    eprintln!(
        "image archive: {:.1} MiB, {RUNS} runs each",
        size as f64 / (1 << 20) as f64
    );
    let b = bench_berth(&archive);
    let c = bench_containerd(&archive);
    println!(
        "import + unpack of a {:.0} MiB image (median of {RUNS})",
        size as f64 / (1 << 20) as f64
    );
    println!("{:<24} {:>10} {:>10}", "runtime", "seconds", "MiB/s");
    println!(
        "{:<24} {:>10.2} {:>10.1}",
        "berthd (berthctl)",
        b.as_secs_f64(),
        mibs(size, b)
    );
    match c {
        Some(c) => println!(
            "{:<24} {:>10.2} {:>10.1}",
            "containerd 1.6 (ctr)",
            c.as_secs_f64(),
            mibs(size, c)
        ),
        None => println!("{:<24} {:>10} {:>10}", "containerd", "n/a", "n/a"),
    }
}
