//! Benchmark (not a test): pull (fetch + unpack) a ~150 MiB image from a
//! registry on 127.0.0.1 into berthd, and into containerd with `ctr images
//! pull` when installed, and print the times side by side.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-pull`

use berth_tests::bench::*;
use berth_tests::registry::Registry;
use berth_tests::*;
use std::process::Command;
use std::time::{Duration, Instant};

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
    let size = std::fs::metadata(&archive).unwrap().len() as usize;
    let reg = Registry::start(&reg_bin);
    let base = format!("{}/bench", reg.host());
    let name = format!("{base}:bench");
    {
        let d = Daemon::start();
        ok(
            "import",
            d.berthctl(
                "default",
                &[
                    "images",
                    "import",
                    "--no-unpack",
                    "--base-name",
                    &base,
                    archive.to_str().unwrap(),
                ],
            ),
        );
        ok("push", d.berthctl("default", &["images", "push", &name]));
    }
    eprintln!(
        "image: {:.1} MiB in {name}, {RUNS} runs each",
        size as f64 / (1 << 20) as f64
    );

    let mut berth = Vec::new();
    for run in 0..RUNS {
        let d = Daemon::start();
        settle();
        let t = Instant::now();
        ok("pull", d.berthctl("bench", &["images", "pull", &name]));
        let e = t.elapsed();
        eprintln!("  berth run {run}: {:.2}s", e.as_secs_f64());
        berth.push(e);
    }
    let berth = median(berth);

    let containerd = match (peer("containerd"), peer("ctr")) {
        (Some(containerd), Some(ctr)) => {
            let mut times: Vec<Duration> = Vec::new();
            for run in 0..RUNS {
                let c = berth_tests::containerd::Containerd::start(&containerd, "", None);
                settle();
                let t = Instant::now();
                let out = Command::new(&ctr)
                    .arg("--address")
                    .arg(&c.sock)
                    .args(["-n", "bench", "images", "pull", "--plain-http", &name])
                    .output()
                    .unwrap();
                let e = t.elapsed();
                drop(c);
                ok("ctr pull", out);
                eprintln!("  containerd run {run}: {:.2}s", e.as_secs_f64());
                times.push(e);
            }
            Some(median(times))
        }
        _ => None,
    };
    println!(
        "pull (fetch + unpack) of a {:.0} MiB image from 127.0.0.1 (median of {RUNS})",
        size as f64 / (1 << 20) as f64
    );
    println!("{:<24} {:>10} {:>10}", "runtime", "seconds", "MiB/s");
    println!(
        "{:<24} {:>10.2} {:>10.1}",
        "berthd (berthctl)",
        berth.as_secs_f64(),
        mibs(size, berth)
    );
    match containerd {
        Some(c) => println!(
            "{:<24} {:>10.2} {:>10.1}",
            "containerd 1.6 (ctr)",
            c.as_secs_f64(),
            mibs(size, c)
        ),
        None => println!("{:<24} {:>10} {:>10}", "containerd", "n/a", "n/a"),
    }
}
