//! Running containers: the real ctr against berthd, berthctl run,
//! isolation, OOM, runc as the oracle for the built-in runtime, real
//! containerd running berth's shim, and daemon restarts. Root only.

use berth_proto::services::events::v1 as events;
use berth_proto::services::events::v1::events_client::EventsClient;
use berth_proto::services::tasks::v1 as tasks;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use berth_tests::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

fn import_busybox(d: &Daemon) {
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
}

/// The real ctr and a daemon holding busybox, for tests that run
/// containers; `None` (SKIPPED) without ctr or root.
fn ctr_and_busybox() -> Option<(std::path::PathBuf, Daemon)> {
    let ctr_bin = peer("ctr")?;
    if !require_root("running containers") {
        return None;
    }
    let d = Daemon::start();
    import_busybox(&d);
    Some((ctr_bin, d))
}

/// The memory limit the container's cgroup holds (v1 or v2).
fn cgroup_memory_limit(path: &str) -> Option<String> {
    for p in [
        format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"),
        format!("/sys/fs/cgroup{path}/memory.max"),
    ] {
        if let Ok(s) = std::fs::read_to_string(&p) {
            return Some(s.trim().to_string());
        }
    }
    None
}

fn no_mounts_under(dir: &std::path::Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.display().to_string();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&d)).collect();
    assert!(left.is_empty(), "mounts left behind: {left:#?}");
}

fn shim_processes() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("containerd-shim-berth-v2"))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn ctr_runs_containers_on_berthd() {
    let Some((ctr_bin, d)) = ctr_and_busybox() else {
        return;
    };
    let ctr = |args: &[&str]| d.ctr(&ctr_bin, "default", args);
    let mut ev = Command::new(&ctr_bin)
        .arg("--address")
        .arg(&d.sock)
        .arg("events")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let out = ok(
        "ctr run --rm",
        ctr(&[
            "run",
            "--rm",
            "docker.io/library/busybox:latest",
            "t1",
            "echo",
            "hi",
        ]),
    );
    assert_eq!(out, "hi\n");

    ok(
        "ctr run -d",
        ctr(&[
            "run",
            "-d",
            "--memory-limit",
            "33554432",
            "docker.io/library/busybox:latest",
            "d1",
            "sleep",
            "300",
        ]),
    );
    assert_eq!(
        cgroup_memory_limit("/default/d1").as_deref(),
        Some("33554432"),
        "the cgroup holds the limit"
    );
    // The serving shim says so in `ps` (it is a fork of `start`).
    let shim = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .find(|c| {
            c.contains("containerd-shim-berth-v2")
                && c.contains(" -id d1 ")
                && c.contains(d.sock.to_str().unwrap())
        })
        .expect("the shim of d1");
    assert!(shim.trim_end().ends_with(" serve"), "{shim}");
    let ls = ok("tasks ls", ctr(&["tasks", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.starts_with("d1 ") && l.contains("RUNNING")),
        "{ls}"
    );
    let ex = ok(
        "exec",
        ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            "e1",
            "d1",
            "sh",
            "-c",
            "echo from-exec; exit 0",
        ]),
    );
    assert_eq!(ex, "from-exec\n");
    let ps = ok("ps", ctr(&["tasks", "ps", "d1"]));
    assert!(ps.lines().count() >= 2, "{ps}");
    let m = ok("metrics", ctr(&["tasks", "metrics", "d1"]));
    assert!(
        m.contains("memory.usage_in_bytes") && m.contains("33554432"),
        "{m}"
    );
    // Metrics filters on id, namespace and runtime, as containerd's do.
    let metric_ids = |filters: &[&str]| {
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            TasksClient::new(d.channel().await)
                .metrics(berth_proto::client::request(
                    "default",
                    tasks::MetricsRequest { filters },
                ))
                .await
                .unwrap()
                .into_inner()
                .metrics
                .into_iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(metric_ids(&["runtime==io.containerd.runc.v2"]), ["d1"]);
    assert_eq!(metric_ids(&["namespace==default,id==d1"]), ["d1"]);
    assert!(metric_ids(&["runtime==io.containerd.other.v1"]).is_empty());
    ok("pause", ctr(&["tasks", "pause", "d1"]));
    assert!(ok("ls", ctr(&["tasks", "ls"])).contains("PAUSED"));
    ok("resume", ctr(&["tasks", "resume", "d1"]));
    assert!(ok("ls", ctr(&["tasks", "ls"])).contains("RUNNING"));
    let err = fails("rm running", ctr(&["tasks", "rm", "d1"]));
    assert!(
        err.contains("kill it before deleting") || err.contains("running"),
        "{err}"
    );
    ok("kill", ctr(&["tasks", "kill", "-s", "SIGKILL", "d1"]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok("ls", ctr(&["tasks", "ls"])).contains("STOPPED") {
        assert!(Instant::now() < deadline, "task did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok("tasks rm", ctr(&["tasks", "rm", "d1"]));
    ok("c rm", ctr(&["containers", "rm", "d1"]));
    assert!(ok("ls", ctr(&["tasks", "ls", "-q"])).trim().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let _ = ev.kill();
    let events = String::from_utf8_lossy(&ev.wait_with_output().unwrap().stdout).to_string();
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        assert!(
            events.contains(topic),
            "{topic} missing from ctr events:\n{events}"
        );
    }
    assert!(
        cgroup_memory_limit("/default/d1").is_none(),
        "cgroup removed"
    );
    no_mounts_under(d.dir.path());
    let deadline = Instant::now() + Duration::from_secs(5);
    while shim_processes() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a container sees of itself, printed one fact per line.
const PROBE: &str = "echo pid=$$; hostname; id -u; \
    if [ -e /proc/kcore ]; then echo kcore=$(wc -c < /proc/kcore); else echo kcore=absent; fi; \
    echo keys=$(wc -c < /proc/keys); \
    if echo x > /proc/sys/kernel/domainname 2>/dev/null; then echo ro=writable; else echo ro=refused; fi; \
    ls /dev | tr '\\n' ' '; echo; \
    echo fds=$(ls /proc/self/fd | wc -l)";

#[test]
fn isolation_and_runc_as_oracle() {
    if !require_root("running containers") {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let run = |id: &str, extra: &[&str], cmd: &str| {
        let mut args = vec!["run", "--rm", "--hostname", "box", "--name", id];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["busybox", "sh", "-c", cmd]);
        d.berthctl("default", &args)
    };
    let builtin = ok("builtin", run("iso1", &[], PROBE));
    let lines: Vec<&str> = builtin.lines().collect();
    assert_eq!(lines[0], "pid=1", "the command is PID 1: {builtin}");
    assert_eq!(lines[1], "box", "the container's hostname: {builtin}");
    assert_eq!(lines[2], "0");
    assert!(
        lines[3] == "kcore=absent" || lines[3] == "kcore=0",
        "/proc/kcore masked: {builtin}"
    );
    assert_eq!(lines[4], "keys=0", "/proc/keys masked: {builtin}");
    assert_eq!(
        lines[5], "ro=refused",
        "a readonly path refuses writes: {builtin}"
    );
    for dev in ["null", "zero", "urandom", "tty", "pts", "shm"] {
        assert!(lines[6].contains(dev), "/dev/{dev}: {builtin}");
    }
    // What a process in the container inherits: stdio, plus the directory
    // ls reads; nothing the shim or berthd hold leaks in. (The shell's own
    // table is not counted: it holds pipeline ends while it forks.)
    assert_eq!(lines[7], "fds=4", "only stdio crosses in: {builtin}");
    // Exit codes pass through.
    let out = run("iso2", &[], "exit 42");
    assert_eq!(out.status.code(), Some(42));

    // runc, driven by the same shim, must see the same world.
    let Some(runc) = peer("runc") else { return };
    let ctr = peer("ctr");
    if let Some(ctr) = ctr {
        let out = ok(
            "runc via ctr",
            d.ctr(
                &ctr,
                "default",
                &[
                    "run",
                    "--rm",
                    "--runc-binary",
                    runc.to_str().unwrap(),
                    "docker.io/library/busybox:latest",
                    "o1",
                    "sh",
                    "-c",
                    PROBE,
                ],
            ),
        );
        // runc kept its state under this daemon's state dir, per namespace.
        assert!(d.state().join("runc/default").is_dir());
        let theirs: Vec<&str> = out.lines().collect();
        // ctr sets no hostname; everything else must match the built-in runtime.
        assert_eq!(theirs[0], lines[0]);
        assert_eq!(
            theirs[2..6],
            lines[2..6],
            "runc:\n{out}\nbuilt-in:\n{builtin}"
        );
        assert_eq!(theirs[7], lines[7], "runc:\n{out}\nbuilt-in:\n{builtin}");
        let ours = ok(
            "builtin via ctr",
            d.ctr(
                &ctr,
                "default",
                &[
                    "run",
                    "--rm",
                    "docker.io/library/busybox:latest",
                    "o2",
                    "sh",
                    "-c",
                    PROBE,
                ],
            ),
        );
        assert_eq!(
            out.replace("o1", "X"),
            ours.replace("o2", "X"),
            "ctr-built spec: runc and built-in agree"
        );
    }
    no_mounts_under(d.dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_kills_and_reports_oom() {
    if !require_root("running containers") {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let ch = d.channel().await;
    let mut sub = EventsClient::new(ch)
        .subscribe(events::SubscribeRequest {
            filters: vec!["topic==/tasks/oom".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let sock = d.address();
    let dir = d.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin("berthctl"))
            .args([
                "--address",
                &sock,
                "run",
                // On the host's network: no default bridge (as the harness's
                // berthctl helpers add).
                "--net",
                "none",
                "--rm",
                "--memory-limit",
                "16777216",
                "--name",
                "oom1",
                "busybox",
                "sh",
                "-c",
            ])
            .arg("x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived")
            .env("BERTH_FIFO_DIR", dir.join("fifo"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"));
    assert_eq!(
        out.status.code(),
        Some(137),
        "killed by the OOM killer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("an OOM event")
        .unwrap()
        .unwrap();
    assert_eq!(ev.topic, "/tasks/oom");
    let oom: berth_proto::pb::containerd::events::TaskOom =
        berth_proto::typeurl::unpack(ev.event.as_ref().unwrap()).unwrap();
    assert_eq!(oom.container_id, "oom1");
}

#[test]
fn containerd_runs_berths_shim() {
    let Some(containerd) = peer("containerd") else {
        return;
    };
    let Some(ctr) = peer("ctr") else { return };
    if !require_root("containerd") {
        return;
    }
    let path = format!(
        "{}:{}",
        target_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let c = berth_tests::containerd::Containerd::start(&containerd, "", Some(&path));
    let sock = c.sock.clone();
    let ctr = |args: &[&str]| {
        Command::new(&ctr)
            .arg("--address")
            .arg(&sock)
            .args(args)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let fx = fixtures();
    ok(
        "import",
        ctr(&[
            "images",
            "import",
            fx.join("busybox-docker.tar").to_str().unwrap(),
        ]),
    );
    let out = ok(
        "ctr run via berth shim",
        ctr(&[
            "run",
            "--rm",
            "--runtime",
            "io.containerd.berth.v2",
            "docker.io/library/busybox:latest",
            "viaberth",
            "echo",
            "hi",
        ]),
    );
    assert_eq!(out, "hi\n");
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.berth.v2",
        "docker.io/library/busybox:latest",
        "code",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = c.dir.path().to_path_buf();
    drop(c);
    no_mounts_under(&dir);
}

#[test]
fn restart_keeps_containers_running() {
    if !require_root("running containers") {
        return;
    }
    let mut d = Daemon::start();
    import_busybox(&d);
    for i in 0..10 {
        ok(
            "run -d",
            d.berthctl(
                "default",
                &[
                    "run",
                    "-d",
                    "--name",
                    &format!("k{i}"),
                    "busybox",
                    "sleep",
                    "600",
                ],
            ),
        );
    }
    ok(
        "run -d dier",
        d.berthctl(
            "default",
            &[
                "run",
                "-d",
                "--name",
                "dier",
                "busybox",
                "sh",
                "-c",
                "sleep 1; exit 7",
            ],
        ),
    );
    let tasks = |d: &Daemon| -> serde_json::Value {
        serde_json::from_str(&ok(
            "tasks ls",
            d.berthctl("default", &["--format", "json", "tasks", "ls"]),
        ))
        .unwrap()
    };
    let before = tasks(&d);
    let pids: Vec<u64> = before
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["id"].as_str().unwrap().starts_with('k'))
        .map(|t| t["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 10);
    d.kill9();
    std::thread::sleep(Duration::from_millis(1500)); // the dier exits meanwhile
    for p in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{p}")).exists(),
            "container {p} died with the daemon"
        );
    }
    d.restart();
    let after = tasks(&d);
    let list = after.as_array().unwrap();
    let running = list.iter().filter(|t| t["status"] == "RUNNING").count();
    assert_eq!(running, 10, "{after:#}");
    let dier = list
        .iter()
        .find(|t| t["id"] == "dier")
        .expect("dier listed");
    assert_eq!(dier["status"], "STOPPED");
    assert_eq!(dier["exit_status"], 7, "the real exit status: {dier}");
    let ex = ok(
        "exec after restart",
        d.berthctl("default", &["tasks", "exec", "k3", "echo", "still-here"]),
    );
    assert_eq!(ex, "still-here\n");

    // A shim killed outright: its task is reported stopped and cleaned up.
    let shim = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let s = String::from_utf8_lossy(&c).replace('\0', " ");
                    s.contains("containerd-shim-berth-v2") && s.contains(" -id k5 ")
                })
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().parse::<i32>().unwrap())
        .expect("shim of k5");
    // SAFETY: killing the shim we started (through berthd) for this test.
    unsafe {
        libc::kill(shim, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = tasks(&d);
        if t.as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == "k5" && x["status"] == "STOPPED")
        {
            break;
        }
        assert!(Instant::now() < deadline, "k5 not reported stopped: {t:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("/k5/rootfs"), "k5's rootfs unmounted");

    for t in tasks(&d).as_array().unwrap() {
        let id = t["id"].as_str().unwrap();
        ok("rm", d.berthctl("default", &["tasks", "rm", "-f", id]));
        ok("c rm", d.berthctl("default", &["containers", "rm", id]));
    }
    no_mounts_under(d.dir.path());
    // The shims berthd reconnected to end with their tasks, as those it
    // started do (each lingers ~100 ms after Shutdown).
    let sock = std::path::PathBuf::from(d.address());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !berth_tests::guard::shims_serving(&sock).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = berth_tests::guard::shims_serving(&sock);
    assert!(
        left.is_empty(),
        "shims outlived their deleted tasks: {left:?}"
    );
}

#[test]
fn run_forwards_signals_and_returns_the_exit_code() {
    if !require_root("running containers") {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let mut run = d
        .berthctl_command(
            "default",
            &[
                "run",
                "--rm",
                "--name",
                "sig1",
                "busybox",
                "sh",
                "-c",
                "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.05; done",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berthctl run");
    let mut out = std::io::BufReader::new(run.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: signalling the berthctl we spawned.
    unsafe {
        libc::kill(run.id() as i32, libc::SIGTERM);
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let st = run.wait().unwrap();
    assert_eq!(rest, "got TERM\n", "the container got the signal");
    assert_eq!(st.code(), Some(7), "its exit code is berthctl's");
    // --rm cleaned up after the signalled run.
    let ls = ok(
        "containers ls",
        d.berthctl("default", &["containers", "ls", "-q"]),
    );
    assert!(!ls.contains("sig1"), "{ls}");
    no_mounts_under(d.dir.path());
}

#[test]
fn run_interrupted_while_unpacking_leaves_nothing() {
    if !require_root("unpacking and running containers") {
        return;
    }
    let d = Daemon::start();
    d.import(
        &fixtures().join("busybox-big-oci.tar"),
        &["--no-unpack", "--base-name", "docker.io/local/big"],
    );
    let mut run = d
        .berthctl_command(
            "default",
            &[
                "run",
                "--rm",
                "--name",
                "int1",
                "docker.io/local/big:big",
                "true",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berthctl run");
    let mut err = std::io::BufReader::new(run.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.starts_with("unpacking"), "{line}");
    // SAFETY: signalling the berthctl we spawned, mid-unpack.
    unsafe {
        libc::kill(run.id() as i32, libc::SIGINT);
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let st = run.wait().unwrap();
    assert_eq!(st.code(), Some(130), "128 + SIGINT: {rest}");
    assert!(rest.contains("interrupted before int1 started"), "{rest}");
    let cs = ok(
        "containers ls",
        d.berthctl("default", &["containers", "ls", "-q"]),
    );
    assert!(cs.trim().is_empty(), "no container: {cs}");
    let ss = ok("snapshots ls", d.berthctl("default", &["snapshots", "ls"]));
    assert!(!ss.contains("int1"), "no snapshot: {ss}");
    let ls = ok("leases ls", d.berthctl("default", &["leases", "ls"]));
    assert_eq!(ls.lines().count(), 1, "no lease left: {ls}");
}

#[test]
fn terminals_for_run_and_exec() {
    let Some(script) = peer("script") else { return };
    if !require_root("running containers") {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    terminals_with(&d, &script, None);
    // runc hands its terminal over on --console-socket.
    if let Some(runc) = peer("runc") {
        terminals_with(&d, &script, Some(runc.to_str().unwrap()));
    }
    no_mounts_under(d.dir.path());
}

/// `run -t` and `exec -t` on the built-in runtime or `runc`; for runc also
/// an exec's three streams and exit status, and an exec that keeps
/// running does not hold the shim up.
fn terminals_with(d: &Daemon, script: &std::path::Path, runc: Option<&str>) {
    let image = "docker.io/library/busybox:latest";
    let (tag, runtime): (&str, Vec<&str>) = match runc {
        None => ("builtin", vec![]),
        Some(r) => ("runc", vec!["--runc-binary", r]),
    };
    // run [runtime] --name ID FLAGS IMAGE CMD...
    let run = |flags: &[&'static str], id: &str, cmd: &[&'static str]| -> Vec<String> {
        let mut args = vec!["run"];
        args.extend_from_slice(&runtime);
        args.extend_from_slice(&["--name", id]);
        args.extend_from_slice(flags);
        args.push(image);
        args.extend_from_slice(cmd);
        args.into_iter().map(String::from).collect()
    };
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let id1 = format!("tty1-{tag}");
    let out = d.berthctl_in_terminal(
        script,
        (91, 27),
        &strs(&run(
            &["--rm", "-t"],
            &id1,
            &["sh", "-c", "tty; stty size; exit 3"],
        )),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{tag}: exit status passes through:\n{text}"
    );
    assert!(
        text.contains("/dev/pts/0"),
        "{tag}: a terminal of the container's own devpts:\n{text}"
    );
    assert!(
        text.contains("27 91"),
        "{tag}: sized from the client's terminal before it runs:\n{text}"
    );

    let id2 = format!("tty2-{tag}");
    ok(
        "run -d",
        d.berthctl("default", &strs(&run(&["-d"], &id2, &["sleep", "300"]))),
    );
    let out = d.berthctl_in_terminal(
        script,
        (80, 24),
        &["tasks", "exec", "-t", &id2, "sh", "-c", "tty; stty size"],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{tag}: exec -t:\n{text}");
    assert!(text.contains("/dev/pts/"), "{tag}: {text}");
    assert!(text.contains("24 80"), "{tag}: {text}");

    // Without a terminal: stdout, stderr and the status, each its own.
    let out = d.berthctl(
        "default",
        &[
            "tasks",
            "exec",
            &id2,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 4",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{tag}: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n", "{tag}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err"),
        "{tag}: an exec's stderr reaches the client: {out:?}"
    );
    ok(
        "exec -d",
        d.berthctl("default", &["tasks", "exec", "-d", &id2, "sleep", "300"]),
    );
    let ps = ok("ps", d.berthctl("default", &["tasks", "ps", &id2]));
    assert!(
        ps.lines().count() >= 3,
        "{tag}: init and the exec run: {ps}"
    );
    ok("rm", d.berthctl("default", &["tasks", "rm", "-f", &id2]));
    ok("c rm", d.berthctl("default", &["containers", "rm", &id2]));
}

/// CloseIO right after the client wrote its last byte: the shim still
/// passes on everything the FIFO holds to a process that reads only later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_io_loses_nothing_the_client_wrote() {
    use berth_proto::client::request;
    use berth_proto::services::snapshots::v1 as snapshots;
    use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
    let Some((ctr_bin, d)) = ctr_and_busybox() else {
        return;
    };
    ok(
        "ctr containers create",
        d.ctr(
            &ctr_bin,
            "default",
            &[
                "containers",
                "create",
                "docker.io/library/busybox:latest",
                "cio1",
                "--", // or ctr takes `-c` for its own --config
                "sh",
                "-c",
                "sleep 1; wc -c",
            ],
        ),
    );
    let ch = d.channel().await;
    let rootfs = SnapshotsClient::new(ch.clone())
        .mounts(request(
            "default",
            snapshots::MountsRequest {
                snapshotter: "overlayfs".into(),
                key: "cio1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let fifo = |name: &str| {
        let p = d.dir.path().join(name);
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        p
    };
    let (stdin, stdout) = (fifo("in"), fifo("out"));
    let reader = std::thread::spawn({
        let stdout = stdout.clone();
        move || std::fs::read_to_string(stdout).unwrap()
    });
    let mut tc = TasksClient::new(ch.clone());
    tc.create(request(
        "default",
        tasks::CreateTaskRequest {
            container_id: "cio1".into(),
            rootfs,
            stdin: stdin.display().to_string(),
            stdout: stdout.display().to_string(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    tc.start(request(
        "default",
        tasks::StartRequest {
            container_id: "cio1".into(),
            exec_id: String::new(),
        },
    ))
    .await
    .unwrap();
    // Less than the FIFO, the shim's buffer and the pipe hold together, so
    // the write completes while the process still sleeps.
    const SIZE: usize = 100_000;
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(stdin).unwrap();
        f.write_all(&vec![b'x'; SIZE]).unwrap();
    })
    .await
    .unwrap();
    // The process sleeps: most of the input is still in the FIFO and pipes.
    tc.close_io(request(
        "default",
        tasks::CloseIoRequest {
            container_id: "cio1".into(),
            exec_id: String::new(),
            stdin: true,
        },
    ))
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert_eq!(out.trim(), SIZE.to_string(), "bytes the process read");
    let w = tc
        .wait(request(
            "default",
            tasks::WaitRequest {
                container_id: "cio1".into(),
                exec_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_status, 0);
    tc.delete(request(
        "default",
        tasks::DeleteTaskRequest {
            container_id: "cio1".into(),
        },
    ))
    .await
    .unwrap();
}

/// The harness's guard: a test that fails with a container running (its
/// shim outlives berthd by design) leaves no shim, container, mount or
/// cgroup behind once its daemon is dropped.
#[test]
fn a_dropped_test_daemon_leaves_nothing_running() {
    let Some((ctr_bin, d)) = ctr_and_busybox() else {
        return;
    };
    ok(
        "ctr run -d",
        d.ctr(
            &ctr_bin,
            "default",
            &[
                "run",
                "-d",
                "docker.io/library/busybox:latest",
                "left",
                "sleep",
                "600",
            ],
        ),
    );
    let dir = d.dir.path().to_path_buf();
    let bundle = d.state().join("io.containerd.runtime.v2.task/default/left");
    let init: i32 = std::fs::read_to_string(bundle.join("init.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let sock = d.sock.display().to_string();
    let shim = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c).replace('\0', " ");
                c.contains("containerd-shim-berth-v2") && c.contains(&sock)
            })
        })
        .expect("the shim of the container")
        .path();
    drop(d); // as a panicking test would
    assert!(
        !std::path::Path::new(&format!("/proc/{init}/exe")).exists(),
        "the container's init {init} still runs"
    );
    assert!(!shim.join("exe").exists(), "the shim still runs");
    no_mounts_under(&dir);
    assert!(
        !std::path::Path::new("/sys/fs/cgroup/memory/default/left").exists(),
        "the container's cgroup is still there"
    );
}
