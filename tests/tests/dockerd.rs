//! dockerd 20.10 (Debian's docker.io) with berthd as its `--containerd`,
//! driven by the docker CLI: load, run, exec, logs, signals, stop, build,
//! volumes, resource limits, a berthd crash, and events delivered once.
//!
//! What dockerd asks of berthd (measured): namespace `moby`, runtime
//! `io.containerd.runc.v2` with runc options `BinaryName=runc` and `Root`
//! under its exec root, a spec with a seccomp profile, no rootfs mounts
//! (`root.path` is its own overlay2 mount), stdio FIFOs under its exec root,
//! and exits learnt only from `/tasks/exit` on `Events.Subscribe`; after
//! losing that stream it polls `grpc.health.v1.Health/Check` and
//! resubscribes once it answers SERVING.

use berth_proto::pb::containerd::events::TaskExit;
use berth_proto::services::events::v1 as events;
use berth_proto::services::events::v1::events_client::EventsClient;
use berth_tests::dockerd::{BUILTIN_RUNTIME, DOCKER_CLI, Dockerd};
use berth_tests::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_stream::StreamExt;

/// dockerd and its CLI, or None (SKIPPED) when they or root are missing.
fn peers() -> Option<(PathBuf, PathBuf)> {
    if !require_root("dockerd with berthd") {
        return None;
    }
    let dockerd = peer("dockerd")?;
    let cli = peer_at(DOCKER_CLI)?;
    // dockerd names runc as the low-level runtime (BinaryName=runc).
    peer("runc")?;
    Some((dockerd, cli))
}

/// Every `/tasks/exit` berthd publishes in namespace `moby`, recorded by a
/// subscription of our own next to dockerd's.
struct Exits {
    // Runs the subscription; kept for as long as the recorder lives.
    _rt: tokio::runtime::Runtime,
    seen: Arc<Mutex<Vec<TaskExit>>>,
}

impl Exits {
    fn subscribe(d: &Daemon) -> Exits {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let seen: Arc<Mutex<Vec<TaskExit>>> = Arc::default();
        // The call returns once berthd has registered the subscriber, so
        // nothing published after this is missed.
        let mut stream = rt.block_on(async {
            EventsClient::new(d.channel().await)
                .subscribe(events::SubscribeRequest {
                    filters: vec![r#"namespace==moby,topic=="/tasks/exit""#.into()],
                })
                .await
                .expect("subscribe to berthd's events")
                .into_inner()
        });
        let sink = seen.clone();
        rt.spawn(async move {
            while let Some(Ok(env)) = stream.next().await {
                let exit = env
                    .event
                    .as_ref()
                    .and_then(berth_proto::typeurl::unpack::<TaskExit>)
                    .expect("a /tasks/exit envelope carries a TaskExit");
                sink.lock().unwrap().push(exit);
            }
        });
        Exits { _rt: rt, seen }
    }

    /// Exit statuses berthd reported for container `id`: its init's, and
    /// its execs'. Waits briefly for events still in flight to us.
    fn of(&self, id: &str, inits: usize, execs: usize) -> (Vec<u32>, Vec<u32>) {
        let split = || {
            let seen = self.seen.lock().unwrap();
            let mine = seen.iter().filter(|e| e.container_id == id);
            let (i, e): (Vec<&TaskExit>, Vec<&TaskExit>) = mine.partition(|e| e.id == id);
            (
                i.iter().map(|e| e.exit_status).collect::<Vec<_>>(),
                e.iter().map(|e| e.exit_status).collect::<Vec<_>>(),
            )
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let (i, e) = split();
            if i.len() >= inits && e.len() >= execs {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Anything duplicated would arrive right behind the first copy.
        std::thread::sleep(Duration::from_millis(200));
        split()
    }
}

/// Now, as docker's `--since`/`--until` take it (seconds.nanoseconds).
fn docker_now() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

/// One container event from `docker events`.
#[derive(Debug)]
struct Event {
    id: String,
    name: String,
    action: String,
    exit_code: String,
}

fn docker_events(dk: &Dockerd, since: &str) -> Vec<Event> {
    let until = docker_now();
    let out = ok(
        "docker events",
        dk.docker(&[
            "events",
            "--since",
            since,
            "--until",
            &until,
            "--filter",
            "type=container",
            "--format",
            r#"{{.Actor.ID}}|{{.Actor.Attributes.name}}|{{.Action}}|{{index .Actor.Attributes "exitCode"}}"#,
        ]),
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '|').collect();
            assert_eq!(f.len(), 4, "unexpected docker events line {l:?}");
            Event {
                id: f[0].into(),
                name: f[1].into(),
                action: f[2].into(),
                exit_code: f[3].into(),
            }
        })
        .collect()
}

/// Waits until `docker logs name` shows `marker` (a trap is installed).
fn wait_for_log(dk: &Dockerd, name: &str, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = dk.docker(&["logs", name]);
        if String::from_utf8_lossy(&o.stdout).contains(marker) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never logged {marker:?}: {o:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn inspect(dk: &Dockerd, name: &str, format: &str) -> String {
    ok(
        &format!("inspect {name}"),
        dk.docker(&["inspect", "-f", format, name]),
    )
    .trim()
    .to_string()
}

fn run_d(dk: &Dockerd, name: &str, args: &[&str]) -> String {
    let mut a = vec!["run", "-d", "--network", "none", "--name", name];
    a.extend_from_slice(args);
    ok(&format!("run -d {name}"), dk.docker(&a))
        .trim()
        .to_string()
}

/// berthd holds no container or task of dockerd's any more.
fn assert_berthd_empty(d: &Daemon) {
    for what in ["containers", "tasks"] {
        let ls = ok(
            &format!("berthctl {what} ls"),
            d.berthctl("moby", &[what, "ls", "-q"]),
        );
        assert!(ls.trim().is_empty(), "berthd still has {what}: {ls}");
    }
}

fn load_busybox(dk: &Dockerd) {
    let tar = fixtures().join("busybox-docker.tar");
    let out = ok(
        "docker load",
        dk.docker(&["load", "-i", tar.to_str().unwrap()]),
    );
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
}

#[test]
fn docker_runs_builds_and_signals_on_berthd() {
    let Some((dockerd, cli)) = peers() else {
        return;
    };
    let d = Daemon::start();
    let exits = Exits::subscribe(&d);
    let dk = Dockerd::start(&dockerd, &cli, &d.sock);
    let since = docker_now();
    load_busybox(&dk);
    let images = ok(
        "images",
        dk.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
    );
    assert!(images.lines().any(|l| l == "busybox:latest"), "{images}");

    // run --rm: output, exit code, promptly (docker returns on the exit event).
    let t = Instant::now();
    let o = dk.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--name",
        "once",
        "busybox",
        "sh",
        "-c",
        "echo hi; echo oops >&2; exit 3",
    ]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("oops"), "{o:?}");
    assert!(took < Duration::from_secs(15), "run --rm took {took:?}");

    // Detached containers: one that exits on TERM, one that ignores it, one
    // with a USR1 handler, one plain sleeper.
    let loop_ = "while :; do sleep 0.1; done";
    let term = run_d(
        &dk,
        "term",
        &[
            "busybox",
            "sh",
            "-c",
            &format!("trap 'echo got-term; exit 0' TERM; echo started; {loop_}"),
        ],
    );
    let stubborn = run_d(
        &dk,
        "stubborn",
        &[
            "busybox",
            "sh",
            "-c",
            &format!("trap '' TERM; echo started; {loop_}"),
        ],
    );
    let usr1 = run_d(
        &dk,
        "usr1",
        &[
            "busybox",
            "sh",
            "-c",
            &format!("trap 'echo got-usr1; exit 7' USR1; echo started; {loop_}"),
        ],
    );
    let sleeper = run_d(&dk, "sleeper", &["busybox", "sleep", "600"]);
    for n in ["term", "stubborn", "usr1"] {
        wait_for_log(&dk, n, "started");
    }
    let ps = ok(
        "ps",
        dk.docker(&[
            "ps",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Names}} {{.Status}}",
        ]),
    );
    for (id, name) in [
        (&term, "term"),
        (&stubborn, "stubborn"),
        (&usr1, "usr1"),
        (&sleeper, "sleeper"),
    ] {
        assert!(
            ps.lines()
                .any(|l| l.starts_with(&format!("{id} {name} Up"))),
            "{name} not running:\n{ps}"
        );
    }
    // berthd drove runc for them, as dockerd asked (BinaryName=runc).
    let runtime = std::fs::read_to_string(
        d.state()
            .join("io.containerd.runtime.v2.task/moby")
            .join(&term)
            .join("runtime.json"),
    )
    .expect("the task's runtime choice");
    let runtime: serde_json::Value = serde_json::from_str(&runtime).expect("runtime.json");
    assert_eq!(runtime["binary"], "runc", "{runtime}");
    // runc's state is per namespace under the root dockerd names, as with
    // containerd's runc shim (dockerd's plugins use the same root).
    let runc_root = dk.dir.path().join("exec/runtime-runc/moby");
    assert_eq!(runtime["root"], runc_root.to_str().unwrap(), "{runtime}");
    assert!(runc_root.join(&term).join("state.json").is_file());

    // exec: same container (pid 1 is its init), exit code, stdin.
    let o = dk.docker(&[
        "exec",
        "term",
        "sh",
        "-c",
        "cat /proc/1/cmdline; echo; exit 5",
    ]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("echo started"),
        "{o:?}"
    );
    let o = dk.docker_with_input(
        &["exec", "-i", "term", "sh", "-c", "read l; echo got:$l"],
        b"abc\n",
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "got:abc\n", "{o:?}");
    assert!(o.status.success(), "{o:?}");

    // logs
    let logs = ok("logs term", dk.docker(&["logs", "term"]));
    assert_eq!(logs, "started\n");

    // stop: TERM handled at once; TERM ignored until the grace period ends.
    let t = Instant::now();
    ok("stop term", dk.docker(&["stop", "term"]));
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stop of a container that exits on TERM took {:?}",
        t.elapsed()
    );
    assert_eq!(inspect(&dk, "term", "{{.State.ExitCode}}"), "0");
    let logs = ok("logs term", dk.docker(&["logs", "term"]));
    assert!(logs.contains("got-term"), "{logs}");
    let t = Instant::now();
    ok("stop stubborn", dk.docker(&["stop", "-t", "2", "stubborn"]));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "stop -t 2 of a TERM-ignoring container took {took:?}"
    );
    assert_eq!(inspect(&dk, "stubborn", "{{.State.ExitCode}}"), "137");

    // kill: a signal of choice reaches the handler; the default is KILL.
    ok("kill -s USR1", dk.docker(&["kill", "-s", "USR1", "usr1"]));
    assert_eq!(ok("wait usr1", dk.docker(&["wait", "usr1"])).trim(), "7");
    let logs = ok("logs usr1", dk.docker(&["logs", "usr1"]));
    assert!(logs.contains("got-usr1"), "{logs}");
    ok("kill sleeper", dk.docker(&["kill", "sleeper"]));
    assert_eq!(
        ok("wait sleeper", dk.docker(&["wait", "sleeper"])).trim(),
        "137"
    );

    // rm
    let o = ok(
        "rm",
        dk.docker(&["rm", "term", "stubborn", "usr1", "sleeper"]),
    );
    assert_eq!(o.lines().count(), 4, "{o}");
    let left = ok("ps -a", dk.docker(&["ps", "-aq"]));
    assert!(left.trim().is_empty(), "containers left: {left}");

    // docker build, classic builder: RUN, COPY, ENV, CMD from the loaded image.
    let ctx = dk.dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("msg.txt"), "hello-from-copy\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         ENV GREETING=bonjour\n\
         RUN echo built-by-run > /built.txt && mkdir /app\n\
         COPY msg.txt /app/msg.txt\n\
         CMD [\"sh\", \"-c\", \"cat /built.txt /app/msg.txt; echo $GREETING\"]\n",
    )
    .unwrap();
    let out = ok(
        "docker build",
        dk.docker(&[
            "build",
            "--network",
            "none",
            "-t",
            "berth-built:1",
            ctx.to_str().unwrap(),
        ]),
    );
    assert!(out.contains("Successfully tagged berth-built:1"), "{out}");
    let o = ok(
        "run built",
        dk.docker(&["run", "--rm", "--network", "none", "berth-built:1"]),
    );
    assert_eq!(o, "built-by-run\nhello-from-copy\nbonjour\n");

    // A named volume outlives the container that wrote it.
    ok("volume create", dk.docker(&["volume", "create", "bvol"]));
    ok(
        "write volume",
        dk.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "bvol:/data",
            "busybox",
            "sh",
            "-c",
            "echo persisted > /data/f",
        ]),
    );
    let o = ok(
        "read volume",
        dk.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "bvol:/data:ro",
            "busybox",
            "cat",
            "/data/f",
        ]),
    );
    assert_eq!(o, "persisted\n");
    let mountpoint = ok(
        "volume inspect",
        dk.docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", "bvol"]),
    );
    let on_host = std::fs::read_to_string(PathBuf::from(mountpoint.trim()).join("f"));
    assert_eq!(on_host.ok().as_deref(), Some("persisted\n"));
    ok("volume rm", dk.docker(&["volume", "rm", "bvol"]));

    // --memory: the limit inside the container and on the host's cgroup.
    let o = ok(
        "run --memory",
        dk.docker(&[
            "run", "--rm", "--network", "none", "--memory", "64m", "busybox", "sh", "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
        ]),
    );
    assert_eq!(o.trim(), "67108864");
    let mem = run_d(&dk, "mem", &["--memory", "48m", "busybox", "sleep", "600"]);
    let v1 = PathBuf::from("/sys/fs/cgroup/memory")
        .join(dk.cgroup_of(&mem).trim_start_matches('/'))
        .join("memory.limit_in_bytes");
    let v2 = PathBuf::from("/sys/fs/cgroup")
        .join(dk.cgroup_of(&mem).trim_start_matches('/'))
        .join("memory.max");
    let limit = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap_or_else(|e| panic!("no memory cgroup for {mem} at {}: {e}", v1.display()));
    assert_eq!(limit.trim(), "50331648");
    ok("rm -f mem", dk.docker(&["rm", "-f", "mem"]));

    // --read-only: a write to / fails; without it the same write succeeds.
    let o = dk.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "busybox",
        "touch",
        "/x",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Read-only file system"),
        "{o:?}"
    );
    ok(
        "touch without --read-only",
        dk.docker(&["run", "--rm", "--network", "none", "busybox", "touch", "/x"]),
    );

    // Events: every container that started died exactly once in dockerd's
    // eyes, with the code berthd reported in its one /tasks/exit.
    let evs = docker_events(&dk, &since);
    let mut started: Vec<&str> = evs
        .iter()
        .filter(|e| e.action == "start")
        .map(|e| e.id.as_str())
        .collect();
    started.sort_unstable();
    started.dedup();
    // once, term, stubborn, usr1, sleeper, the build's RUN, built, two
    // volume runs, two memory runs, two read-only runs.
    assert_eq!(started.len(), 13, "{evs:#?}");
    let mut code_of: HashMap<&str, &str> = HashMap::new();
    for id in &started {
        let dies: Vec<&Event> = evs
            .iter()
            .filter(|e| e.id == *id && e.action == "die")
            .collect();
        assert_eq!(dies.len(), 1, "die events of {id}: {evs:#?}");
        code_of.insert(id, &dies[0].exit_code);
        let (inits, _) = exits.of(id, 1, 0);
        assert_eq!(
            inits.len(),
            1,
            "berthd's /tasks/exit events for {id}: {inits:?}"
        );
        assert_eq!(inits[0].to_string(), dies[0].exit_code, "exit code of {id}");
    }
    let name_code = |name: &str| {
        let id = evs
            .iter()
            .find(|e| e.name == name && e.action == "start")
            .map(|e| e.id.as_str())
            .unwrap_or_else(|| panic!("no start of {name}: {evs:#?}"));
        code_of[id].to_string()
    };
    for (name, code) in [
        ("once", "3"),
        ("term", "0"),
        ("stubborn", "137"),
        ("usr1", "7"),
        ("sleeper", "137"),
    ] {
        assert_eq!(name_code(name), code, "{name}");
    }
    // Two execs in `term`: one exec_die each, one exec exit each from berthd.
    let exec_dies = evs
        .iter()
        .filter(|e| e.id == term && e.action == "exec_die")
        .count();
    assert_eq!(exec_dies, 2, "{evs:#?}");
    let (_, mut execs) = exits.of(&term, 1, 2);
    execs.sort();
    assert_eq!(execs, vec![0, 5]);

    assert_berthd_empty(&d);
}

/// What a process sees of Docker's default seccomp profile: the status
/// lines, calls the profile denies (unshare and mount without
/// CAP_SYS_ADMIN, the keyring, personalities other than the few allowed),
/// and calls newer than the profile (`set_mempolicy_home_node`, 450, after
/// its `futex_waitv`, 449; a number no kernel has), which runc answers
/// with ENOSYS.
const PROFILE_PROBE: &str = "grep '^Seccomp' /proc/self/status; /probe unshare-user \
    unshare-mount mount-tmpfs keyctl add_key personality-query personality-bsd \
    nr:450 nr:1000 getpid personality-linux32";

const PROFILE_EXPECTED: &[&str] = &[
    "Seccomp:\t2",
    "Seccomp_filters:\t1",
    "unshare-user=EPERM",
    "unshare-mount=EPERM",
    "mount-tmpfs=EPERM",
    "keyctl=EPERM",
    "add_key=EPERM",
    "personality-query=0",
    "personality-bsd=EPERM",
    "nr:450=ENOSYS",
    "nr:1000=ENOSYS",
    "getpid=0",
    "personality-linux32=0",
];

/// Docker's default seccomp profile (dockerd puts it in every spec) is
/// enforced the same on the shim's built-in runtime (a dockerd runtime with
/// an empty path, see [`BUILTIN_RUNTIME`]) as on runc, for a container's
/// init and an exec.
#[test]
fn docker_default_seccomp_profile_as_under_runc() {
    let Some((dockerd, cli)) = peers() else {
        return;
    };
    let Some(probe) = syscall_probe() else {
        return;
    };
    let d = Daemon::start();
    let dk = Dockerd::start(&dockerd, &cli, &d.sock);
    load_busybox(&dk);
    let mount = format!("{}:/probe:ro", probe.display());
    let mut seen = Vec::new();
    for rt in ["runc", BUILTIN_RUNTIME] {
        let name = format!("seccomp-{rt}");
        let args = [
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime",
            rt,
            "-v",
            &mount,
            "--name",
            &name,
            "busybox",
            "sh",
            "-c",
            PROFILE_PROBE,
        ];
        let init = ok(&format!("run on {rt}"), dk.docker(&args));
        let id = run_d(
            &dk,
            &format!("{name}-d"),
            &["--runtime", rt, "-v", &mount, "busybox", "sleep", "600"],
        );
        let exec = ok(
            &format!("exec on {rt}"),
            dk.docker(&["exec", &id, "sh", "-c", PROFILE_PROBE]),
        );
        let runtime: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                d.state()
                    .join("io.containerd.runtime.v2.task/moby")
                    .join(&id)
                    .join("runtime.json"),
            )
            .expect("the task's runtime choice"),
        )
        .expect("runtime.json");
        ok("rm -f", dk.docker(&["rm", "-f", &id]));
        seen.push((rt, runtime["binary"].clone(), init, exec));
    }
    // The built-in runtime was the one that ran the second pair.
    assert_eq!(seen[0].1, "runc");
    assert_eq!(seen[1].1, "", "{:?}", seen[1].1);
    for (rt, _, init, exec) in &seen {
        for (what, out) in [("init", init), ("exec", exec)] {
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines, PROFILE_EXPECTED, "{what} on {rt}");
        }
    }
    assert_berthd_empty(&d);
}

#[test]
fn docker_survives_a_berthd_crash() {
    let Some((dockerd, cli)) = peers() else {
        return;
    };
    let mut d = Daemon::start();
    let dk = Dockerd::start(&dockerd, &cli, &d.sock);
    load_busybox(&dk);
    let since = docker_now();
    let id = run_d(
        &dk,
        "long",
        &[
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo started; while :; do sleep 0.1; done",
        ],
    );
    wait_for_log(&dk, "long", "started");
    let pid = inspect(&dk, "long", "{{.State.Pid}}");

    let subscribe = "/containerd.services.events.v1.Events/Subscribe";
    let before = d.log().matches(subscribe).count();
    d.kill9();
    d.restart();
    // dockerd notices the broken stream, polls Health.Check until berthd
    // answers, then subscribes again (for `moby` and `plugins.moby`).
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.log().matches(subscribe).count() < before + 2 {
        assert!(
            Instant::now() < deadline,
            "dockerd did not subscribe to berthd's events again after the restart:\n{}",
            dk.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        dk.log()
            .contains("Waiting for containerd to be ready to restart event processing"),
        "dockerd never lost its event stream:\n{}",
        dk.log()
    );
    let exits = Exits::subscribe(&d);

    let ps = ok(
        "ps",
        dk.docker(&["ps", "--no-trunc", "--format", "{{.ID}} {{.Status}}"]),
    );
    assert!(
        ps.lines().any(|l| l.starts_with(&format!("{id} Up"))),
        "{ps}"
    );
    assert_eq!(inspect(&dk, "long", "{{.State.Pid}}"), pid);
    let o = dk.docker(&["exec", "long", "sh", "-c", "echo alive; exit 4"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "alive\n");

    let t = Instant::now();
    ok("stop long", dk.docker(&["stop", "-t", "30", "long"]));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "stop after the restart took {:?} (exit event lost?)",
        t.elapsed()
    );
    assert_eq!(inspect(&dk, "long", "{{.State.ExitCode}}"), "0");
    let evs = docker_events(&dk, &since);
    let dies: Vec<&Event> = evs
        .iter()
        .filter(|e| e.id == id && e.action == "die")
        .collect();
    assert_eq!(dies.len(), 1, "{evs:#?}");
    assert_eq!(dies[0].exit_code, "0");
    let exec_dies = evs
        .iter()
        .filter(|e| e.id == id && e.action == "exec_die")
        .count();
    assert_eq!(exec_dies, 1, "{evs:#?}");
    let (inits, execs) = exits.of(&id, 1, 1);
    assert_eq!((inits, execs), (vec![0], vec![4]));

    ok("rm long", dk.docker(&["rm", "long"]));
    assert_berthd_empty(&d);
}

/// dockerd finds a restarted berthd through grpc.health.v1 (containerd's
/// healthcheck plugin): the server as a whole ("") is SERVING, and a
/// service it does not know is NotFound, as grpc-go's health server says.
#[test]
fn health_check_answers_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let d = Daemon::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut h = HealthClient::new(d.channel().await);
        let r = h
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("Health.Check")
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving);
        let e = h
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    });
}
