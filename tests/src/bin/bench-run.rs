//! Benchmark (not a test): `run --rm true` latency (median of 25, driven by
//! the real ctr), shim memory (RSS and PSS per shim with 50 containers) and
//! daemon RSS — for berthd with its built-in runtime, and for
//! containerd + runc when installed, side by side, each without and with
//! containerd's default seccomp profile (`ctr run --seccomp`); then
//! berthd's latency with its own client, berthctl.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-run`
//!
//! Every binary measured is first dropped from the page cache: a file just
//! written (by the build, or a copy) is cached in large folios, and a fault
//! then maps a whole folio, so the same shim showed ~200 KiB more RSS right
//! after `cp` than after a cold start. Evicting first makes runs comparable.

use berth_tests::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 25;
const CONTAINERS: usize = 50;

fn kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn pids_of(pattern: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let first = cmd.split(|b| *b == 0).next()?;
            String::from_utf8_lossy(first)
                .ends_with(pattern)
                .then_some(pid)
        })
        .collect()
}

struct Figures {
    median_ms: f64,
    shim_rss_kib: f64,
    shim_pss_kib: f64,
    daemon_rss_kib: u64,
}

fn measure(ctr: &Path, sock: &Path, runtime_args: &[&str], shim: &str, daemon_pid: u32) -> Figures {
    let c = |args: &[&str]| {
        Command::new(ctr)
            .arg("--address")
            .arg(sock)
            .args(["-n", "bench"])
            .args(args)
            .stdout(Stdio::null())
            .output()
            .unwrap()
    };
    let fx = fixtures();
    ok(
        "import",
        c(&[
            "images",
            "import",
            fx.join("busybox-docker.tar").to_str().unwrap(),
        ]),
    );
    let mut times = Vec::new();
    for i in 0..RUNS + 2 {
        let id = format!("lat{i}");
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(runtime_args);
        args.extend_from_slice(&["docker.io/library/busybox:latest", &id, "true"]);
        let t = Instant::now();
        ok("run --rm true", c(&args));
        if i >= 2 {
            times.push(t.elapsed()); // two warm-up runs
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    for i in 0..CONTAINERS {
        let id = format!("mem{i}");
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(runtime_args);
        args.extend_from_slice(&["docker.io/library/busybox:latest", &id, "sleep", "600"]);
        ok("run -d", c(&args));
    }
    std::thread::sleep(Duration::from_secs(1));
    let shims = pids_of(shim);
    let n = shims.len().max(1) as f64;
    let rss: u64 = shims.iter().map(|p| kib(*p, "Rss:")).sum();
    let pss: u64 = shims.iter().map(|p| kib(*p, "Pss:")).sum();
    let daemon_rss = kib(daemon_pid, "Rss:");
    eprintln!("  {} shims found", shims.len());
    for i in 0..CONTAINERS {
        let id = format!("mem{i}");
        let _ = c(&["tasks", "kill", "-s", "SIGKILL", &id]);
    }
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..CONTAINERS {
        let id = format!("mem{i}");
        let _ = c(&["tasks", "rm", &id]);
        let _ = c(&["containers", "rm", &id]);
    }
    Figures {
        median_ms: median.as_secs_f64() * 1000.0,
        shim_rss_kib: rss as f64 / n,
        shim_pss_kib: pss as f64 / n,
        daemon_rss_kib: daemon_rss,
    }
}

/// `berthctl run --rm true` against the same daemon: the latency with
/// berth's own client, whose start-up and round trips cost less than
/// ctr's. The image is already imported (by `measure`).
fn berthctl_median(d: &Daemon) -> f64 {
    let mut times = Vec::new();
    for i in 0..RUNS + 2 {
        let id = format!("own{i}");
        let t = Instant::now();
        ok(
            "berthctl run --rm true",
            d.berthctl(
                "bench",
                &[
                    "run",
                    "--rm",
                    "--name",
                    &id,
                    "docker.io/library/busybox:latest",
                    "true",
                ],
            ),
        );
        if i >= 2 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1000.0
}

/// The runs measured on each daemon: plain, and with the default profile.
const FLAGS: [&[&str]; 2] = [&[], &["--seccomp"]];

fn containerd_figures(ctr: &Path) -> Option<Vec<Figures>> {
    let containerd = peer("containerd")?;
    peer("containerd-shim-runc-v2")?;
    let c = berth_tests::containerd::Containerd::start(&containerd, "", None);
    Some(
        FLAGS
            .iter()
            .map(|f| measure(ctr, &c.sock, f, "containerd-shim-runc-v2", c.pid()))
            .collect(),
    )
}

/// Drops a file's pages from the page cache (see the module doc); a file
/// that cannot be opened is left alone, as nothing measured maps it.
fn evict(path: &Path) {
    let Ok(f) = std::fs::File::open(path) else {
        return;
    };
    use std::os::fd::AsRawFd;
    // Dirty pages are not dropped: write them out first.
    if let Err(e) = f.sync_all() {
        eprintln!("  could not sync {}: {e}", path.display());
    }
    // SAFETY: advice on a descriptor we own; it changes no memory of ours.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        eprintln!(
            "  could not evict {} from the page cache: errno {r}",
            path.display()
        );
    }
}

fn main() {
    if !require_root("the run benchmark") {
        return;
    }
    let Some(ctr) = peer("ctr") else { return };
    for name in ["berthd", "containerd-shim-berth-v2"] {
        evict(&bin(name));
    }
    for name in ["containerd", "containerd-shim-runc-v2", "runc"] {
        if let Some(p) = peer(name) {
            evict(&p);
        }
    }
    let d = Daemon::start();
    let b: Vec<Figures> = FLAGS
        .iter()
        .map(|f| measure(&ctr, &d.sock, f, "containerd-shim-berth-v2", d.pid()))
        .collect();
    let own = berthctl_median(&d);
    let c = containerd_figures(&ctr);
    println!(
        "run --rm true (median of {RUNS}, ctr client) and memory with {CONTAINERS} containers"
    );
    println!(
        "{:<26} {:>10} {:>14} {:>14} {:>14}",
        "runtime", "run ms", "shim RSS KiB", "shim PSS KiB", "daemon RSS KiB"
    );
    let row = |name: &str, f: &Figures| {
        println!(
            "{:<26} {:>10.1} {:>14.0} {:>14.0} {:>14}",
            name, f.median_ms, f.shim_rss_kib, f.shim_pss_kib, f.daemon_rss_kib
        )
    };
    row("berthd + built-in runtime", &b[0]);
    row("  --seccomp", &b[1]);
    match &c {
        Some(c) => {
            row("containerd 1.6 + runc", &c[0]);
            row("  --seccomp", &c[1]);
        }
        None => println!("{:<26} {:>10}", "containerd + runc", "n/a"),
    }
    println!("berthd with berthctl as the client: run --rm true {own:.1} ms (median of {RUNS})");
}
