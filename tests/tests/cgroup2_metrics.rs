//! Tasks.Metrics of a container in a cgroup v2 hierarchy, read by the real
//! ctr. This host is hybrid (its containers use v1), so berthd and its
//! shims run in a mount namespace of their own where the cgroup2
//! hierarchy is mounted at /sys/fs/cgroup: the shim sees a v2 host there,
//! as on a cgroup v2 machine, and its container's cgroup is a real
//! cgroup2 group (in the host's view, under /sys/fs/cgroup/unified). Root
//! only.

use berth_proto::services::tasks::v1 as tasks;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use berth_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The containerd namespace the test's container lives in: also the top
/// of its cgroup path (`/<ns>/<id>`), removed at the end.
const NS: &str = "berth-cg2-metrics";

/// berthd in a mount namespace that shows the cgroup2 hierarchy at
/// /sys/fs/cgroup. Dropping it kills it, the shims serving it and their
/// containers, and removes the test's cgroups.
struct V2Daemon {
    dir: tempfile::TempDir,
    sock: PathBuf,
    child: Child,
}

impl V2Daemon {
    fn start() -> V2Daemon {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .unwrap();
        let sock = dir.path().join("berth.sock");
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        let log = std::fs::File::create(dir.path().join("berthd.log")).unwrap();
        // unshare execs the shell and the shell execs berthd: the child's
        // pid is berthd's. Private propagation keeps the cgroup2 mount and
        // everything berthd mounts out of the host's view.
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@""#)
            .arg("sh")
            .arg(bin("berthd"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--address")
            .arg(&sock)
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run unshare");
        let mut d = V2Daemon { dir, sock, child };
        if let Err(e) = wait_listening("berthd", &d.sock, Duration::from_secs(20), &mut d.child) {
            panic!("{e}:\n{}", d.log());
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    fn ctr(&self, ctr: &Path, args: &[&str]) -> Output {
        Command::new(ctr)
            .arg("--address")
            .arg(&self.sock)
            .arg("--namespace")
            .arg(NS)
            .args(args)
            .output()
            .expect("run ctr")
    }
}

impl Drop for V2Daemon {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
        berth_tests::guard::after_daemon(&self.sock, self.dir.path());
        remove_cgroups(&format!("/{NS}"));
    }
}

/// The host's cgroup2 hierarchy is mounted somewhere (v2 or hybrid host).
fn has_cgroup2() -> bool {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .any(|r| Path::new(r).join("cgroup.controllers").exists())
}

/// The value of one `METRIC  VALUE` row of ctr's table.
fn row(table: &str, metric: &str) -> Option<u64> {
    table.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == metric).then(|| f.next()?.parse().ok())?
    })
}

/// Runs container `id` (with ctr's `run` options `opts`), checks its
/// metrics as ctr, the API and berthctl see them, and removes it.
fn check_v2_metrics(d: &V2Daemon, ctr_bin: &Path, id: &str, opts: &[&str]) {
    let ctr = |args: &[&str]| d.ctr(ctr_bin, args);
    // ctr asks for 1024 CPU shares unless told otherwise; the cgroup2 view
    // of a hybrid host has no cpu controller, and berth refuses a limit it
    // cannot set.
    let mut run = vec!["run", "-d", "--cpu-shares", "0"];
    run.extend_from_slice(opts);
    run.extend_from_slice(&[
        "docker.io/library/busybox:latest",
        id,
        "sh",
        "-c",
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 300",
    ]);
    ok(&format!("ctr run -d {id}"), ctr(&run));
    // The kernel's count of the container's CPU time, as ctr prints it
    // from io.containerd.cgroups.v2.Metrics (its v1 table has
    // cpuacct.usage and memory.usage_in_bytes instead).
    let deadline = Instant::now() + Duration::from_secs(10);
    let table = loop {
        let t = ok("ctr tasks metrics", ctr(&["tasks", "metrics", id]));
        if row(&t, "cpu.usage_usec").is_some_and(|u| u > 0) || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        row(&table, "cpu.usage_usec").is_some_and(|u| u > 0),
        "{id}:\n{table}"
    );
    for metric in [
        "pids.current",
        "cpu.user_usec",
        "memory.usage",
        "memory.swap_limit",
    ] {
        assert!(row(&table, metric).is_some(), "{id}: no {metric}:\n{table}");
    }
    assert!(!table.contains("memory.usage_in_bytes"), "{id}:\n{table}");
    let json = ok(
        "ctr tasks metrics --format json",
        ctr(&["tasks", "metrics", "--format", "json", id]),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        v["cpu"]["usage_usec"].as_u64().is_some_and(|u| u > 0),
        "{id}: {json}"
    );

    // The Any's type URL, as it left the shim.
    let metric = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ch = berth_proto::client::connect(&d.sock.display().to_string())
            .await
            .unwrap();
        TasksClient::new(ch)
            .metrics(berth_proto::client::request(
                NS,
                tasks::MetricsRequest {
                    filters: vec![format!("id=={id}")],
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .metrics
    });
    assert_eq!(
        metric[0].data.as_ref().unwrap().type_url,
        "io.containerd.cgroups.v2.Metrics",
        "{id}"
    );

    // berthctl reads the same type.
    let out = ok(
        "berthctl tasks metrics",
        berthctl_at(
            &d.sock,
            d.dir.path(),
            NS,
            &["--format", "json", "tasks", "metrics", id],
        )
        .output()
        .unwrap(),
    );
    let b: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(b["cgroup"], "v2", "{id}: {out}");
    assert!(
        b["cpu"]["total_ns"].as_u64().is_some_and(|n| n > 0),
        "{id}: {out}"
    );

    ok("kill", ctr(&["tasks", "kill", "-s", "SIGKILL", id]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok("ls", ctr(&["tasks", "ls"]))
        .lines()
        .any(|l| l.starts_with(&format!("{id} ")) && l.contains("STOPPED"))
    {
        assert!(Instant::now() < deadline, "{id} did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok("tasks rm", ctr(&["tasks", "rm", id]));
    ok("containers rm", ctr(&["containers", "rm", id]));
}

#[test]
fn ctr_reads_the_v2_metrics_of_a_cgroup2_container() {
    let Some(ctr_bin) = peer("ctr") else { return };
    if peer("unshare").is_none() || !require_root("a cgroup2 view of the host") {
        return;
    }
    if !has_cgroup2() {
        eprintln!("SKIPPED: no cgroup2 hierarchy on this host");
        return;
    }
    let d = V2Daemon::start();
    ok(
        "import busybox",
        berthctl_at(
            &d.sock,
            d.dir.path(),
            NS,
            &[
                "images",
                "import",
                fixtures().join("busybox-docker.tar").to_str().unwrap(),
            ],
        )
        .output()
        .unwrap(),
    );
    // The built-in runtime's cgroup, read by the shim's v2 cgroup code.
    check_v2_metrics(&d, &ctr_bin, "m1", &[]);
    // runc's: the shim finds it from the init's pid, as containerd's runc
    // shim does, and reads it the same way.
    if let Some(runc) = peer("runc") {
        check_v2_metrics(
            &d,
            &ctr_bin,
            "m2",
            &["--runc-binary", runc.to_str().unwrap()],
        );
        // runc ran it: it kept its state under this daemon's state dir.
        assert!(d.dir.path().join("state/runc").join(NS).is_dir());
    }
}
