//! Benchmark (not a test): import and unpack a ~150 MiB image into berthd,
//! and into containerd + its overlayfs snapshotter when installed, and print
//! the throughput side by side.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-unpack`

use berth_tests::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 3;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Five layers, ~150 MiB compressed: big files, medium ones and thousands
/// of small ones, like a real distribution image.
fn image() -> Vec<u8> {
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
fn settle() {
    let _ = Command::new("sync").status();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mibs(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

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
        let dir = tempfile::Builder::new()
            .prefix("bench-ctrd-")
            .tempdir()
            .unwrap();
        let sock = dir.path().join("c.sock");
        let cfg = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}.ttrpc\"\n",
            dir.path().join("root").display(),
            dir.path().join("state").display(),
            sock.display(),
            sock.display()
        );
        std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
        let mut child = Command::new(&containerd)
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        settle();
        let t = Instant::now();
        let out = Command::new(&ctr)
            .arg("--address")
            .arg(&sock)
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
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let _ = child.wait();
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
    let archive = dir.path().join("image.tar");
    // BENCH_IMAGE=path reuses (or first writes) the image there.
    match std::env::var_os("BENCH_IMAGE").map(std::path::PathBuf::from) {
        Some(p) if p.exists() => std::fs::copy(&p, &archive).map(|_| ()).unwrap(),
        other => {
            eprintln!("building the benchmark image…");
            let img = image();
            if let Some(p) = other {
                std::fs::write(p, &img).unwrap();
            }
            std::fs::write(&archive, img).unwrap();
        }
    }
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
