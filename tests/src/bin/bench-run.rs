//! Benchmark (not a test): `run --rm true` latency (median of 25, driven by
//! the real ctr), shim memory (RSS and PSS per shim with 50 containers) and
//! daemon RSS — for berthd with its built-in runtime, and for
//! containerd + runc when installed, side by side, each without and with
//! containerd's default seccomp profile (`ctr run --seccomp`); then
//! berthd's latency with its own client, berthctl; then, inside a private
//! network namespace (the bench runs itself again under `unshare --net
//! --mount`, so no bridge or rule touches the host's network), berthctl's
//! `run --rm` with a bridge network and a published port against
//! `--net none`, their difference being the cost of network setup alone
//! (netns, CNI ADD and DEL), and containerd + nerdctl's equivalent when
//! nerdctl is installed; and there too pod start latency over the CRI
//! (RunPodSandbox + CreateContainer + StartContainer, tests/src/bench/pods.rs)
//! for berthd and containerd's CRI plugin on the same CNI conflist.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-run`
//! (`bench-run pods`: the pod start rows alone).
//!
//! Every binary measured is first dropped from the page cache: a file just
//! written (by the build, or a copy) is cached in large folios, and a fault
//! then maps a whole folio, so the same shim showed ~200 KiB more RSS right
//! after `cp` than after a cold start. Evicting first makes runs comparable.

use berth_tests::netns::{
    CNI_BIN_DIR, in_private_network, network_config, network_prerequisites, private_network,
};
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

/// Median of `RUNS` timed `cmd(i)` runs after two warm-up ones (the
/// first networked run also writes the default network and its bridge).
fn median_ms(what: &str, mut cmd: impl FnMut(usize) -> Command) -> f64 {
    let mut times = Vec::new();
    for i in 0..RUNS + 2 {
        let mut c = cmd(i);
        let t = Instant::now();
        ok(what, c.output().expect(what));
        if i >= 2 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1000.0
}

/// `nerdctl run --rm -p 8080:80 busybox true` on containerd's default
/// bridge network (CNI plugins from the same directory as berthd's), or
/// None when containerd is not installed.
fn nerdctl_median(nerdctl: &Path) -> Option<f64> {
    let containerd = peer("containerd")?;
    let c = berth_tests::containerd::Containerd::start(&containerd, "", None);
    let dir = tempfile::tempdir().expect("tempdir");
    let n = |args: &[&str]| {
        let mut cmd = Command::new(nerdctl);
        cmd.arg("--address")
            .arg(&c.sock)
            .args(["--namespace", "bench", "--cni-path", CNI_BIN_DIR])
            .arg("--cni-netconfpath")
            .arg(dir.path().join("net.d"))
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .args(args)
            .stdout(Stdio::null());
        cmd
    };
    let img = fixtures().join("busybox-docker.tar");
    ok(
        "nerdctl load",
        n(&["load", "-i", img.to_str().unwrap()]).output().unwrap(),
    );
    Some(median_ms("nerdctl run --rm -p", |_| {
        n(&[
            "run",
            "--rm",
            "-p",
            "8080:80",
            "docker.io/library/busybox:latest",
            "true",
        ])
    }))
}

/// The networked rows, measured inside the private network namespace.
fn network_bench() {
    let conf = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with_config(&network_config(&conf.path().join("net.d")));
    let ctl = |args: &[&str]| {
        let mut c = berthctl_at_default_net(&d.sock, d.dir.path(), "bench", args);
        c.stdout(Stdio::null());
        c
    };
    let img = fixtures().join("busybox-docker.tar");
    ok(
        "import",
        ctl(&["images", "import", img.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    let none = median_ms("run --rm --net none", |i| {
        ctl(&[
            "run",
            "--rm",
            "--name",
            &format!("none{i}"),
            "--net",
            "none",
            "busybox",
            "true",
        ])
    });
    let bridge = median_ms("run --rm --net bridge -p", |i| {
        ctl(&[
            "run",
            "--rm",
            "--name",
            &format!("br{i}"),
            "--net",
            "bridge",
            "-p",
            "8080:80",
            "busybox",
            "true",
        ])
    });
    let nerdctl = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("nerdctl"))
            .find(|p| p.is_file())
    });
    println!();
    println!("run --rm true with networking (median of {RUNS}, berthctl client, private netns)");
    println!("{:<48} {:>10}", "setup", "run ms");
    println!("{:<48} {none:>10.1}", "berthd, --net none");
    println!(
        "{:<48} {bridge:>10.1}",
        "berthd, bridge network + published port"
    );
    println!(
        "{:<48} {:>10.1}",
        "  network setup alone (difference)",
        bridge - none
    );
    match nerdctl.map(|p| (nerdctl_median(&p), p)) {
        Some((Some(ms), _)) => println!(
            "{:<48} {ms:>10.1}",
            "containerd + nerdctl, bridge + published port"
        ),
        Some((None, p)) => println!(
            "{:<48} {:>10}  ({} found, but containerd is not installed)",
            "containerd + nerdctl, bridge + published port",
            "n/a",
            p.display()
        ),
        None => println!(
            "{:<48} {:>10}  (nerdctl is not installed)",
            "containerd + nerdctl, bridge + published port", "n/a"
        ),
    }
}

fn main() {
    // `bench-run pods`: the pod start rows alone.
    let only_pods = std::env::args().nth(1).as_deref() == Some("pods");
    if in_private_network() {
        if !only_pods {
            network_bench();
        }
        return berth_tests::bench::pods::bench();
    }
    if !require_root("the run benchmark") {
        return;
    }
    if only_pods {
        return networked(&["pods"]);
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
    drop(d);
    networked(&[]);
}

/// Runs this benchmark again inside a private network namespace: bridges
/// and iptables rules are made in a namespace of their own.
fn networked(args: &[&str]) {
    match network_prerequisites() {
        Some(why) => println!("\nrun --rm with networking and pod start: not measured: {why}"),
        None => {
            let st = private_network(args).status().expect("run unshare");
            assert!(st.success(), "the networked runs failed: {st}");
        }
    }
}
