//! berthctl's docker-grammar container commands against a real berthd, as
//! a docker user types them: ps, stop (a process ignoring SIGTERM stops in
//! about the grace period), start, restart, kill, rm, wait, top, inspect,
//! exec, stats, and run's -u/--env-file/--entrypoint/--read-only/
//! --cap-add/--cap-drop/--privileged/--security-opt/--restart, with their
//! error paths. Root only.

use berth_tests::*;
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};

fn daemon() -> Option<Daemon> {
    if !require_root("running containers") {
        return None;
    }
    let d = Daemon::start();
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    Some(d)
}

fn ctl(d: &Daemon, args: &[&str]) -> Output {
    d.berthctl("default", args)
}

fn json(d: &Daemon, args: &[&str]) -> Value {
    let mut v = vec!["--format", "json"];
    v.extend_from_slice(args);
    let out = ok(&args.join(" "), ctl(d, &v));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn inspect(d: &Daemon, name: &str) -> Value {
    let out = ok("inspect", ctl(d, &["inspect", name]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v[0].clone()
}

/// `ps -a --format json`'s entry for `name`.
fn ps_entry(d: &Daemon, name: &str) -> Value {
    let all = json(d, &["ps", "-a"]);
    all.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in {all}"))
}

/// Waits until the container's shell has set its trap (it touches
/// /tmp/ready after `trap`): a signal sent before that reaches PID 1 with
/// its default action, which the kernel ignores for a namespace's init.
fn wait_ready(d: &Daemon, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctl(d, &["exec", name, "test", "-e", "/tmp/ready"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "{name} never set its trap");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort();
    v
}

/// Runs `run --rm ARGS`: its stdout, or its failure's stderr.
fn run_rm(d: &Daemon, args: &[&str]) -> Output {
    let mut v = vec!["run", "--rm"];
    v.extend_from_slice(args);
    ctl(d, &v)
}

#[test]
fn ps_stop_start_restart_kill_rm_and_wait() {
    let Some(d) = daemon() else {
        return;
    };
    let stubborn = "trap '' TERM; sleep 1000";
    ok(
        "run -d web",
        ctl(
            &d,
            &[
                "run", "-d", "--name", "web", "busybox", "sh", "-c", stubborn,
            ],
        ),
    );
    ok(
        "run -d quit",
        ctl(
            &d,
            &[
                "run", "-d", "--name", "quit", "busybox", "sh", "-c", "exit 3",
            ],
        ),
    );
    // wait prints the exit code.
    assert_eq!(ok("wait", ctl(&d, &["wait", "quit"])).trim(), "3");

    // ps: running ones only; -a all of them; -q names.
    let table = ok("ps", ctl(&d, &["ps"]));
    let head = table.lines().next().unwrap();
    for col in ["NAME", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS"] {
        assert!(head.contains(col), "{table}");
    }
    let web_row = table.lines().find(|l| l.starts_with("web ")).expect(&table);
    assert!(web_row.contains(" Up "), "{table}");
    assert!(web_row.contains("\"sh -c trap '' TERM;…\""), "{table}");
    assert!(!table.contains("quit"), "{table}");
    let all = ok("ps -a", ctl(&d, &["ps", "-a"]));
    let quit_row = all.lines().find(|l| l.starts_with("quit ")).expect(&all);
    assert!(quit_row.contains("Exited (3) "), "{all}");
    assert!(quit_row.contains(" ago"), "{all}");
    assert_eq!(ok("ps -q", ctl(&d, &["ps", "-q"])).trim(), "web");
    assert_eq!(
        lines(&ok("ps -aq", ctl(&d, &["ps", "-a", "-q"]))),
        ["quit", "web"]
    );
    let web = ps_entry(&d, "web");
    assert_eq!(web["state"], "running", "{web}");
    assert!(web["status"].as_str().unwrap().starts_with("Up "), "{web}");
    assert!(web["pid"].as_u64().unwrap() > 0, "{web}");
    assert!(web["exit_code"].is_null(), "{web}");
    assert_eq!(web["command"], format!("sh -c {stubborn}"));
    assert!(web["image"].as_str().unwrap().contains("busybox"), "{web}");
    let quit = ps_entry(&d, "quit");
    assert_eq!(quit["state"], "exited", "{quit}");
    assert_eq!(quit["exit_code"], 3, "{quit}");
    assert!(quit["pid"].is_null(), "{quit}");

    // stop -t 1 of a process ignoring SIGTERM: SIGKILL after about 1 s.
    let t = Instant::now();
    assert_eq!(
        ok("stop", ctl(&d, &["stop", "-t", "1", "web"])).trim(),
        "web"
    );
    let took = t.elapsed();
    assert!(
        took > Duration::from_millis(800) && took < Duration::from_secs(3),
        "stop -t 1 took {took:?}"
    );
    let web = ps_entry(&d, "web");
    assert_eq!(
        (web["state"].as_str(), web["exit_code"].as_u64()),
        (Some("exited"), Some(137)),
        "{web}"
    );
    let i = inspect(&d, "web");
    assert_eq!(i["labels"]["berth.stopped"], "true", "{i}");
    assert_eq!(i["host_config"]["stopped_by_user"], true, "{i}");
    // Stopping a stopped container is no error (as docker).
    ok("stop again", ctl(&d, &["stop", "web"]));

    // start: runs again, the mark cleared.
    assert_eq!(ok("start", ctl(&d, &["start", "web"])).trim(), "web");
    let i = inspect(&d, "web");
    assert_eq!(i["state"]["status"], "running", "{i}");
    assert!(i["labels"].get("berth.stopped").is_none(), "{i}");
    let pid1 = i["state"]["pid"].as_u64().unwrap();
    assert!(ok("ps", ctl(&d, &["ps", "-q"])).contains("web"));

    // restart: a new process.
    let t = Instant::now();
    ok("restart", ctl(&d, &["restart", "-t", "1", "web"]));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let i = inspect(&d, "web");
    assert_eq!(i["state"]["status"], "running", "{i}");
    assert_ne!(i["state"]["pid"].as_u64().unwrap(), pid1, "{i}");

    // kill -s: the signal reaches the container's process.
    ok(
        "run -d sig",
        ctl(
            &d,
            &[
                "run",
                "-d",
                "--name",
                "sig",
                "busybox",
                "sh",
                "-c",
                "trap 'exit 42' USR1; touch /tmp/ready; while true; do sleep 0.1; done",
            ],
        ),
    );
    wait_ready(&d, "sig");
    ok("kill -s USR1", ctl(&d, &["kill", "-s", "USR1", "sig"]));
    assert_eq!(ok("wait sig", ctl(&d, &["wait", "sig"])).trim(), "42");
    assert_eq!(inspect(&d, "sig")["labels"]["berth.stopped"], "true");
    let e = fails("kill stopped", ctl(&d, &["kill", "sig"]));
    assert!(e.contains("sig is not running"), "{e}");

    // stop -s: another signal first (the image's STOPSIGNAL otherwise).
    ok(
        "run -d quitter",
        ctl(
            &d,
            &[
                "run",
                "-d",
                "--name",
                "quitter",
                "busybox",
                "sh",
                "-c",
                "trap 'exit 9' QUIT; touch /tmp/ready; while true; do sleep 0.1; done",
            ],
        ),
    );
    wait_ready(&d, "quitter");
    let t = Instant::now();
    ok(
        "stop -s",
        ctl(&d, &["stop", "-s", "QUIT", "-t", "20", "quitter"]),
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(ps_entry(&d, "quitter")["exit_code"], 9);
    ok("rm quitter", ctl(&d, &["rm", "quitter"]));

    // rm refuses a running container, saying what to do.
    let e = fails("rm running", ctl(&d, &["rm", "web"]));
    assert!(
        e.contains("web is running") && e.contains("berthctl stop web") && e.contains("rm -f"),
        "{e}"
    );
    assert!(ok("ps", ctl(&d, &["ps", "-q"])).contains("web"));
    // rm -f: task, container and snapshot in one command.
    assert_eq!(ok("rm -f", ctl(&d, &["rm", "-f", "web"])).trim(), "web");
    ok("rm stopped", ctl(&d, &["rm", "quit", "sig"]));
    assert_eq!(ok("ps -aq", ctl(&d, &["ps", "-aq"])).trim(), "");
    assert_eq!(ok("tasks ls", ctl(&d, &["tasks", "ls", "-q"])).trim(), "");
    let snaps = ok("snapshots", ctl(&d, &["snapshots", "ls"]));
    for name in ["web", "quit", "sig"] {
        assert!(
            !snaps
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{snaps}"
        );
    }

    // Error paths say what happened.
    for args in [
        &["stop", "nosuch"][..],
        &["start", "nosuch"][..],
        &["rm", "nosuch"][..],
        &["wait", "nosuch"][..],
        &["inspect", "nosuch"][..],
        &["kill", "nosuch"][..],
    ] {
        let e = fails(&args.join(" "), ctl(&d, args));
        assert!(e.contains("no such container: nosuch"), "{args:?}: {e}");
        assert!(!e.contains("internal"), "{args:?}: {e}");
    }
    let e = fails("start -a two", ctl(&d, &["start", "-a", "a", "b"]));
    assert!(e.contains("start -a takes one container"), "{e}");
    let out = ctl(&d, &["stop", "-t", "soon", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--time"));
}

#[test]
fn start_attached_wait_and_multiple_names() {
    let Some(d) = daemon() else {
        return;
    };
    ok(
        "run -d",
        ctl(
            &d,
            &[
                "run",
                "-d",
                "--name",
                "once",
                "busybox",
                "sh",
                "-c",
                "echo hello; exit 5",
            ],
        ),
    );
    assert_eq!(ok("wait", ctl(&d, &["wait", "once"])).trim(), "5");
    // start -a: output through FIFOs, the exit code is berthctl's.
    let out = ctl(&d, &["start", "-a", "once"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    // A container with a terminal starts again too.
    ok(
        "run -dt",
        ctl(
            &d,
            &[
                "run", "-d", "-t", "--name", "tty", "busybox", "sleep", "1000",
            ],
        ),
    );
    ok("stop tty", ctl(&d, &["stop", "-t", "0", "tty"]));
    ok("start tty", ctl(&d, &["start", "tty"]));
    assert_eq!(ok("ps -q", ctl(&d, &["ps", "-q"])).trim(), "tty");
    assert_eq!(inspect(&d, "tty")["config"]["tty"], true);
    ok("rm -f tty", ctl(&d, &["rm", "-f", "tty"]));
    // Several at once, one of them missing: the others are done, exit 1.
    ok(
        "run -d two",
        ctl(
            &d,
            &["run", "-d", "--name", "two", "busybox", "sleep", "1000"],
        ),
    );
    let out = ctl(&d, &["rm", "-f", "once", "nosuch", "two"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        lines(&String::from_utf8_lossy(&out.stdout)),
        ["once", "two"]
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch: no such container"));
    assert_eq!(ok("ps -aq", ctl(&d, &["ps", "-aq"])).trim(), "");
}

#[test]
fn top_inspect_exec_and_stats() {
    let Some(d) = daemon() else {
        return;
    };
    ok(
        "run -d",
        ctl(
            &d,
            &[
                "run",
                "-d",
                "--name",
                "box",
                "-e",
                "FOO=bar",
                "--restart",
                "on-failure:2",
                "busybox",
                "sleep",
                "1000",
            ],
        ),
    );
    // top: the host's ps, only the container's processes.
    let top = ok("top", ctl(&d, &["top", "box"]));
    assert!(top.lines().next().unwrap().contains("PID"), "{top}");
    assert_eq!(top.lines().count(), 2, "{top}");
    assert!(top.contains("sleep 1000"), "{top}");
    let top = json(&d, &["top", "box", "-o", "pid,comm"]);
    assert_eq!(
        top["titles"],
        serde_json::json!(["PID", "COMMAND"]),
        "{top}"
    );
    assert_eq!(top["processes"][0][1], "sleep", "{top}");

    // inspect: labels, spec summary, state.
    let i = inspect(&d, "box");
    assert_eq!(i["name"], "box");
    assert_eq!(i["state"]["running"], true, "{i}");
    assert!(i["state"]["pid"].as_u64().unwrap() > 0, "{i}");
    assert_eq!(
        i["config"]["cmd"],
        serde_json::json!(["sleep", "1000"]),
        "{i}"
    );
    assert!(
        i["config"]["env"]
            .as_array()
            .unwrap()
            .contains(&"FOO=bar".into()),
        "{i}"
    );
    assert_eq!(i["labels"]["berth.restart"], "on-failure:2", "{i}");
    assert_eq!(i["host_config"]["restart_policy"], "on-failure:2", "{i}");
    assert!(i["state"]["started_at"].is_string(), "{i}");
    let both: Value =
        serde_json::from_str(&ok("inspect 2", ctl(&d, &["inspect", "box", "box"]))).unwrap();
    assert_eq!(both.as_array().unwrap().len(), 2);

    // exec in docker's grammar: options before the container.
    let out = ok(
        "exec",
        ctl(
            &d,
            &[
                "exec",
                "-e",
                "A=1",
                "-e",
                "FOO=over",
                "-w",
                "/tmp",
                "-u",
                "nobody",
                "box",
                "sh",
                "-c",
                "echo $A $FOO $(pwd) $(id -u):$(id -g)",
            ],
        ),
    );
    assert_eq!(out.trim(), "1 over /tmp 65534:65534");
    // One FOO in the environment, the -e one (a program's getenv takes
    // the first of duplicates).
    let env = ok(
        "exec env",
        ctl(&d, &["exec", "-e", "FOO=over", "box", "env"]),
    );
    let foo: Vec<&str> = env.lines().filter(|l| l.starts_with("FOO=")).collect();
    assert_eq!(foo, ["FOO=over"], "{env}");
    assert_eq!(
        ok(
            "exec -u n:g",
            ctl(&d, &["exec", "-u", "nobody:root", "box", "id", "-g"])
        )
        .trim(),
        "0"
    );
    assert_eq!(
        ok(
            "exec -u num",
            ctl(&d, &["exec", "-u", "1234", "box", "id", "-u"])
        )
        .trim(),
        "1234"
    );
    let out = ctl(&d, &["exec", "box", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let e = fails(
        "exec -u ghost",
        ctl(&d, &["exec", "-u", "ghost", "box", "true"]),
    );
    assert!(
        e.contains("--user \"ghost\"") && e.contains("no user"),
        "{e}"
    );
    let e = fails("exec nosuch", ctl(&d, &["exec", "nosuch", "true"]));
    assert!(e.contains("no such container: nosuch"), "{e}");

    // stats, once.
    let table = ok("stats", ctl(&d, &["stats", "--no-stream", "box"]));
    assert!(
        table.lines().next().unwrap().contains("MEM USAGE / LIMIT"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("box ")), "{table}");
    let s = json(&d, &["stats", "--no-stream"]);
    let s = &s[0];
    assert_eq!(s["name"], "box", "{s}");
    assert!(s["memory_usage"].as_u64().unwrap() > 0, "{s}");
    assert!(s["pids"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["cpu_percent"].as_f64().unwrap() >= 0.0, "{s}");
    // Live: a sample a second, until interrupted.
    let mut child = d
        .berthctl_command("default", &["--format", "json", "stats", "box"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(15));
        // SAFETY: signalling our own child by pid (at worst already reaped).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let t = Instant::now();
    for _ in 0..2 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert_eq!(v[0]["name"], "box", "{v}");
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let _ = child.kill();
    let _ = child.wait();
    drop(watchdog);

    // Not running: a clear message.
    ok("stop", ctl(&d, &["stop", "-t", "0", "box"]));
    for args in [&["exec", "box", "true"][..], &["top", "box"][..]] {
        let e = fails(&args.join(" "), ctl(&d, args));
        assert!(e.contains("box is not running"), "{args:?}: {e}");
    }
    ok("rm", ctl(&d, &["rm", "box"]));
}

#[test]
fn run_flags_for_users_env_entrypoint_and_privileges() {
    let Some(d) = daemon() else {
        return;
    };
    // -u by name, from the image's /etc/passwd and /etc/group.
    let out = ok(
        "run -u nobody",
        run_rm(&d, &["-u", "nobody", "busybox", "id"]),
    );
    assert!(
        out.contains("uid=65534") && out.contains("gid=65534"),
        "{out}"
    );
    let out = ok(
        "run -u nobody:root",
        run_rm(&d, &["-u", "nobody:root", "busybox", "id", "-g"]),
    );
    assert_eq!(out.trim(), "0");
    let e = fails(
        "run -u ghost",
        run_rm(&d, &["-u", "ghost", "busybox", "id"]),
    );
    assert!(e.contains("--user \"ghost\": no user \"ghost\""), "{e}");

    // --env-file, overridden by -e.
    let dir = tempfile::tempdir().unwrap();
    let envf = dir.path().join("env");
    std::fs::write(&envf, "# settings\nA=from-file\nB=file\n").unwrap();
    let out = ok(
        "env-file",
        run_rm(
            &d,
            &[
                "--env-file",
                envf.to_str().unwrap(),
                "-e",
                "B=flag",
                "busybox",
                "sh",
                "-c",
                "echo $A $B",
            ],
        ),
    );
    assert_eq!(out.trim(), "from-file flag");

    // --entrypoint replaces the image's.
    let out = ok(
        "entrypoint",
        run_rm(&d, &["--entrypoint", "echo", "busybox", "hi", "there"]),
    );
    assert_eq!(out.trim(), "hi there");

    // --read-only: the root filesystem refuses writes; tmpfs mounts do not.
    let e = fails(
        "read-only",
        run_rm(&d, &["--read-only", "busybox", "touch", "/x"]),
    );
    assert!(e.contains("Read-only file system"), "{e}");
    ok(
        "read-only shm",
        run_rm(&d, &["--read-only", "busybox", "touch", "/dev/shm/x"]),
    );

    // --cap-drop: chown needs CAP_CHOWN (which root has by default).
    ok(
        "chown",
        run_rm(&d, &["busybox", "chown", "1", "/etc/passwd"]),
    );
    let e = fails(
        "cap-drop",
        run_rm(
            &d,
            &[
                "--cap-drop",
                "chown",
                "busybox",
                "chown",
                "1",
                "/etc/passwd",
            ],
        ),
    );
    assert!(e.contains("Operation not permitted"), "{e}");
    // --cap-add and --privileged show in the effective set.
    let caps = |args: &[&str]| -> u64 {
        let mut v = args.to_vec();
        v.extend_from_slice(&["busybox", "grep", "CapEff", "/proc/self/status"]);
        let out = ok("caps", run_rm(&d, &v));
        u64::from_str_radix(out.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let default = caps(&[]);
    const NET_ADMIN: u64 = 1 << 12;
    const SYS_ADMIN: u64 = 1 << 21;
    assert_eq!(default & (NET_ADMIN | SYS_ADMIN), 0, "{default:x}");
    assert_eq!(caps(&["--cap-add", "NET_ADMIN"]), default | NET_ADMIN);
    let all = caps(&["--privileged"]);
    assert_eq!(all & default, default);
    assert!(all & SYS_ADMIN != 0, "{all:x}");
    let out = ok(
        "privileged mounts",
        run_rm(
            &d,
            &["--privileged", "busybox", "grep", " /sys ", "/proc/mounts"],
        ),
    );
    assert!(out.contains(" rw,"), "{out}");

    // --security-opt seccomp=PROFILE (OCI form): mkdir denied; unconfined runs.
    let profile = dir.path().join("seccomp.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let e = fails(
        "seccomp",
        run_rm(&d, &["--security-opt", &opt, "busybox", "mkdir", "/made"]),
    );
    assert!(e.contains("Operation not permitted"), "{e}");
    ok(
        "unconfined",
        run_rm(
            &d,
            &[
                "--security-opt",
                "seccomp=unconfined",
                "busybox",
                "mkdir",
                "/made",
            ],
        ),
    );

    // Bad values: usage errors naming the flag, before anything is made.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"defaultAction":"SCMP_ACT_SOMETIMES"}"#).unwrap();
    let bad_opt = format!("seccomp={}", bad.display());
    for (args, says) in [
        (&["--restart", "sometimes"][..], "--restart"),
        (&["--restart", "on-failure:x"][..], "--restart"),
        (&["--cap-add", "FLY"][..], "--cap-add"),
        (&["--cap-drop", "ALLL"][..], "--cap-drop"),
        (&["--security-opt", "apparmor=x"][..], "--security-opt"),
        (&["--security-opt", bad_opt.as_str()][..], "--security-opt"),
        (&["--env-file", "/no/such/env"][..], "--env-file"),
        (&["-u", "a:b:c"][..], "--user"),
        (&["--init"][..], "--init is not supported"),
        (&["--restart", "always"][..], "--restart and --rm"),
    ] {
        let mut v = args.to_vec();
        v.extend_from_slice(&["busybox", "true"]);
        let out = run_rm(&d, &v);
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(says), "{args:?}: {e}");
        assert!(!e.contains("internal"), "{args:?}: {e}");
    }
    // Nothing was left behind by any of the runs.
    assert_eq!(ok("ps -aq", ctl(&d, &["ps", "-aq"])).trim(), "");
    assert_eq!(
        ok("containers", ctl(&d, &["containers", "ls", "-q"])).trim(),
        ""
    );
}
