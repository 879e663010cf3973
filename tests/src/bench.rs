//! Shared pieces of the benchmarks (not tests): the ~150 MiB image they
//! move around, and timing helpers.

pub mod pods;

use crate::images::{layer_tar, oci_image};
use std::process::Command;
use std::time::Duration;

/// Incompressible bytes from a seed, without a random-number dependency.
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// An OCI archive of five layers, ~150 MiB compressed: big files, medium
/// ones and thousands of small ones, like a real distribution image. Its
/// one tag is `bench`. `BENCH_IMAGE=path` reuses (or first writes) it there.
pub fn image_archive(dir: &std::path::Path) -> std::path::PathBuf {
    let archive = dir.join("image.tar");
    match std::env::var_os("BENCH_IMAGE").map(std::path::PathBuf::from) {
        Some(p) if p.exists() => {
            std::fs::copy(&p, &archive).expect("copy BENCH_IMAGE");
        }
        other => {
            eprintln!("building the benchmark image…");
            let img = build_image();
            if let Some(p) = other {
                std::fs::write(p, &img).expect("write BENCH_IMAGE");
            }
            std::fs::write(&archive, img).expect("write image");
        }
    }
    archive
}

fn build_image() -> Vec<u8> {
    let mut layers = Vec::new();
    let mut seed = 1;
    for (files, size) in [
        (2usize, 30usize << 20),
        (4, 10 << 20),
        (40, 512 << 10),
        (400, 32 << 10),
        (6000, 2 << 10),
    ] {
        let data: Vec<(String, Vec<u8>)> = (0..files)
            .map(|i| {
                seed += 1;
                (format!("usr/lib/l{seed}/f{i}"), random(size, seed))
            })
            .collect();
        let refs: Vec<(&str, &[u8])> = data
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        layers.push(layer_tar(&refs));
    }
    oci_image(&layers, "bench", None)
}

/// Flushes the previous run's writes so runs do not pay for each other.
pub fn settle() {
    let _ = Command::new("sync").status();
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn mibs(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

/// Prints berthd's and containerd's median times for moving `bytes`.
pub fn print_comparison(
    what: &str,
    bytes: usize,
    runs: usize,
    berth: Duration,
    containerd: Option<Duration>,
) {
    println!(
        "{what} of a {:.0} MiB image (median of {runs})",
        bytes as f64 / (1 << 20) as f64
    );
    println!("{:<24} {:>10} {:>10}", "runtime", "seconds", "MiB/s");
    println!(
        "{:<24} {:>10.2} {:>10.1}",
        "berthd (berthctl)",
        berth.as_secs_f64(),
        mibs(bytes, berth)
    );
    match containerd {
        Some(c) => println!(
            "{:<24} {:>10.2} {:>10.1}",
            "containerd 1.6 (ctr)",
            c.as_secs_f64(),
            mibs(bytes, c)
        ),
        None => println!("{:<24} {:>10} {:>10}", "containerd", "n/a", "n/a"),
    }
}

/// Runs `once` `runs` times and returns the median, logging each run.
pub fn timed_runs(label: &str, runs: usize, mut once: impl FnMut() -> Duration) -> Duration {
    let mut times = Vec::new();
    for run in 0..runs {
        let e = once();
        eprintln!("  {label} run {run}: {:.2}s", e.as_secs_f64());
        times.push(e);
    }
    median(times)
}

/// Times `ctr -n bench <args>` against a fresh containerd per run; `None`
/// when containerd or ctr is not installed.
pub fn containerd_runs(runs: usize, args: &[&str]) -> Option<Duration> {
    let (containerd, ctr) = (
        crate::peers::peer("containerd")?,
        crate::peers::peer("ctr")?,
    );
    Some(timed_runs("containerd", runs, || {
        let c = crate::containerd::Containerd::start(&containerd, "", None);
        settle();
        let t = std::time::Instant::now();
        let out = Command::new(&ctr)
            .arg("--address")
            .arg(&c.sock)
            .args(["-n", "bench"])
            .args(args)
            .output()
            .expect("run ctr");
        let e = t.elapsed();
        crate::process::ok(&format!("ctr {}", args.join(" ")), out);
        e
    }))
}
