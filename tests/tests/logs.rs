//! Container logs berthd keeps (docker's json-file format, rotated) and
//! `berthctl logs`, and berthd's restart manager (`berth.restart`),
//! against a real berthd: output of a detached container (both streams,
//! -t, --tail, --since), readable after exit, removed with the container,
//! `logs -f` across a berthd crash, rotation, `on-failure:2` restarting
//! exactly twice, `always` coming back after a berthd restart, and a
//! container the user stopped left alone; after a host reboot the
//! policies bring back the containers that had run. Root only.

use berth_tests::*;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn daemon(config: &str) -> Option<Daemon> {
    if !require_root("running containers") {
        return None;
    }
    let d = Daemon::start_with_config(config);
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    Some(d)
}

fn ctl(d: &Daemon, args: &[&str]) -> String {
    ok(&format!("berthctl {args:?}"), d.berthctl("default", args))
}

/// `berthctl logs ARGS`: (stdout, stderr).
fn logs(d: &Daemon, args: &[&str]) -> (String, String) {
    let mut v = vec!["logs"];
    v.extend_from_slice(args);
    let out = d.berthctl("default", &v);
    assert!(out.status.success(), "logs {args:?}: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` until it holds, for at most `secs`.
fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn task(d: &Daemon, id: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&ctl(d, &["--format", "json", "tasks", "ls"])).expect("json");
    v.as_array()?.iter().find(|t| t["id"] == id).cloned()
}

fn status(d: &Daemon, id: &str) -> String {
    task(d, id).map_or("NONE".into(), |t| t["status"].as_str().unwrap().to_string())
}

fn log_dir(d: &Daemon, id: &str) -> PathBuf {
    d.root().join("logs/default").join(id)
}

fn count(text: &str, line: &str) -> usize {
    text.lines().filter(|l| *l == line).count()
}

#[test]
fn a_detached_containers_output_is_kept_read_and_removed() {
    let Some(d) = daemon("") else {
        return;
    };
    // Listed as containerd lists its gRPC plugins.
    let plugins: serde_json::Value =
        serde_json::from_str(&ctl(&d, &["--format", "json", "plugins", "ls"])).unwrap();
    let listed = plugins.as_array().unwrap().iter();
    assert_eq!(
        listed
            .filter(|p| p["type"] == "io.containerd.grpc.v1" && p["id"] == "logs")
            .count(),
        1,
        "{plugins}"
    );
    ctl(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "l1",
            "busybox",
            "sh",
            "-c",
            "echo out1; echo err1 >&2; sleep 1.2; echo out2; exec sleep 300",
        ],
    );
    eventually("out2 logged", 20, || logs(&d, &["l1"]).0.contains("out2"));
    let (out, err) = logs(&d, &["l1"]);
    assert_eq!(out, "out1\nout2\n");
    assert_eq!(err, "err1\n");
    // The file: docker's json-file lines, under berthd's root.
    let file = std::fs::read_to_string(log_dir(&d, "l1").join("l1-json.log")).unwrap();
    let first: serde_json::Value = serde_json::from_str(file.lines().next().unwrap()).unwrap();
    assert_eq!(first["log"], "out1\n");
    assert_eq!(first["stream"], "stdout");
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");

    // -t: RFC 3339 with nanoseconds before every line.
    let (out, err) = logs(&d, &["-t", "l1"]);
    let stamped: Vec<(&str, &str)> = out.lines().map(|l| l.split_once(' ').unwrap()).collect();
    assert_eq!(stamped.len(), 2);
    for (t, _) in &stamped {
        assert_eq!(t.len(), "2024-01-01T00:00:00.000000000Z".len(), "{t}");
    }
    assert_eq!(stamped[1].1, "out2");
    assert!(err.ends_with(" err1\n"), "{err}");
    // --tail counts lines of both streams; --since takes a time from -t.
    assert_eq!(
        logs(&d, &["--tail", "1", "l1"]),
        ("out2\n".into(), String::new())
    );
    assert_eq!(
        logs(&d, &["--tail", "0", "l1"]),
        (String::new(), String::new())
    );
    assert_eq!(logs(&d, &["--since", stamped[1].0, "l1"]).0, "out2\n");
    assert_eq!(logs(&d, &["--since", "1h", "l1"]).0, "out1\nout2\n");
    assert_eq!(logs(&d, &["--since", "2200-01-01T00:00:00Z", "l1"]).0, "");

    // After the task exits, and after it is deleted, the log is still read.
    ctl(&d, &["tasks", "kill", "-s", "SIGKILL", "l1"]);
    eventually("l1 stopped", 10, || status(&d, "l1") == "STOPPED");
    assert_eq!(logs(&d, &["l1"]).0, "out1\nout2\n");
    // -f on a stopped container prints what there is and ends.
    let f = output_within(
        d.berthctl_command("default", &["logs", "-f", "l1"]),
        b"",
        Duration::from_secs(10),
    )
    .expect("logs -f of a stopped container ends");
    assert_eq!(String::from_utf8_lossy(&f.stdout), "out1\nout2\n");
    ctl(&d, &["tasks", "rm", "l1"]);
    assert_eq!(logs(&d, &["l1"]).1, "err1\n");
    // Gone with the container.
    ctl(&d, &["containers", "rm", "l1"]);
    assert!(!log_dir(&d, "l1").exists());
    let e = fails(
        "logs of a removed container",
        d.berthctl("default", &["logs", "l1"]),
    );
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn logs_follow_goes_on_across_a_berthd_crash() {
    let Some(mut d) = daemon("") else {
        return;
    };
    ctl(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "f1",
            "busybox",
            "sh",
            "-c",
            "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done",
        ],
    );
    let mut child = d
        .berthctl_command("default", &["logs", "-f", "f1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logs -f");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let out = child.stdout.take().unwrap();
    let s = seen.clone();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            s.lock().unwrap().push(l);
        }
    });
    let n = || seen.lock().unwrap().len();
    eventually("lines followed", 20, || n() >= 5);
    d.crash_and_restart();
    let after = n();
    // Well past the crash: the follower reconnected and resumed.
    eventually("lines after the restart", 30, || n() >= after + 20);
    ctl(&d, &["tasks", "kill", "-s", "SIGKILL", "f1"]);
    // The task stopped: the follower ends by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "logs -f did not end after the task stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    reader.join().unwrap();
    assert!(status.success(), "{status:?}");
    let lines = seen.lock().unwrap().clone();
    // Every line once, in order, none lost or repeated at the reconnect.
    let want: Vec<String> = (0..lines.len()).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, want);
    // All the container wrote is in the log, and followed to its end.
    assert_eq!(logs(&d, &["f1"]).0.lines().count(), lines.len());
}

#[test]
fn logs_rotate_at_max_size_keeping_max_files() {
    let Some(d) = daemon("[logs]\nmax_size = 2048\nmax_files = 3\n") else {
        return;
    };
    ctl(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "r1",
            "busybox",
            "sh",
            "-c",
            "seq 1 400",
        ],
    );
    eventually("r1 exited", 20, || status(&d, "r1") == "STOPPED");
    let path = log_dir(&d, "r1").join("r1-json.log");
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    assert!(rotated(1).exists() && rotated(2).exists());
    assert!(!rotated(3).exists(), "at most max_files files");
    for n in [1, 2] {
        let len = std::fs::metadata(rotated(n)).unwrap().len();
        // Rotated at the first line that reaches max_size.
        assert!((2048..2048 + 100).contains(&len), ".{n}: {len} bytes");
    }
    // What is kept reads oldest first with no gap, up to the last line;
    // the oldest lines were dropped.
    let out = logs(&d, &["r1"]).0;
    let nums: Vec<u32> = out.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(*nums.last().unwrap(), 400);
    assert!(nums[0] > 1, "nothing dropped: {}", nums[0]);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{out}");
    assert_eq!(logs(&d, &["--tail", "3", "r1"]).0, "398\n399\n400\n");
}

/// The restart count berthd keeps in the container's labels.
fn restart_count(d: &Daemon, id: &str) -> u32 {
    let info: serde_json::Value =
        serde_json::from_str(&ctl(d, &["containers", "info", id])).expect("info json");
    let labels = &info["labels"];
    labels["berth.restart-count"]
        .as_str()
        .map_or(0, |v| v.parse().unwrap())
}

#[test]
fn on_failure_2_restarts_exactly_twice() {
    let Some(d) = daemon("") else {
        return;
    };
    ctl(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "of",
            "--restart",
            "on-failure:2",
            "busybox",
            "sh",
            "-c",
            "echo run; exit 3",
        ],
    );
    eventually("two restarts", 20, || restart_count(&d, "of") == 2);
    eventually("the third run ended", 10, || {
        status(&d, "of") == "STOPPED" && count(&logs(&d, &["of"]).0, "run") == 3
    });
    // Backoff is 100 ms, then 200 ms: a third restart would have happened.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&logs(&d, &["of"]).0, "run"), 3, "{}", d.log());
    assert_eq!(restart_count(&d, "of"), 2);
    assert_eq!(task(&d, "of").unwrap()["exit_status"], 3);
    // A start by hand begins the count again, as docker's does: two more.
    ctl(&d, &["start", "of"]);
    eventually("two more restarts", 20, || {
        count(&logs(&d, &["of"]).0, "run") == 6 && status(&d, "of") == "STOPPED"
    });
    assert_eq!(restart_count(&d, "of"), 2);

    // A success is not a failure: no restart.
    ctl(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "ok",
            "--label",
            "berth.restart=on-failure",
            "busybox",
            "sh",
            "-c",
            "echo run",
        ],
    );
    eventually("ok exited", 10, || status(&d, "ok") == "STOPPED");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&logs(&d, &["ok"]).0, "run"), 1);
}

#[test]
fn always_comes_back_after_a_berthd_restart_and_a_users_stop_holds() {
    let Some(mut d) = daemon("") else {
        return;
    };
    let run = |name: &str, policy: &str| {
        ctl(
            &d,
            &[
                "run",
                "-d",
                "--name",
                name,
                "--restart",
                policy,
                "busybox",
                "sh",
                "-c",
                "echo run; exec sleep 300",
            ],
        );
    };
    run("al", "always");
    run("st", "always");
    run("us", "unless-stopped");
    for id in ["al", "st", "us"] {
        eventually("running", 10, || status(&d, id) == "RUNNING");
    }
    // Stopped by the user (`kill` marks it berth.stopped): not restarted.
    for id in ["st", "us"] {
        ctl(&d, &["kill", id]);
    }
    // Killed behind berthd's back while it is down.
    let pid = task(&d, "al").unwrap()["pid"].as_i64().unwrap();
    d.kill9();
    // SAFETY: a plain kill(2) of the container's init.
    unsafe {
        libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(500));
    d.restart();
    eventually("al restarted", 20, || {
        status(&d, "al") == "RUNNING" && count(&logs(&d, &["al"]).0, "run") == 2
    });
    assert_ne!(task(&d, "al").unwrap()["pid"].as_i64().unwrap(), pid);
    assert_eq!(restart_count(&d, "al"), 1);
    // docker's rule: `always` comes back with the daemon even after a
    // user's stop, `unless-stopped` does not.
    eventually("st restarted with berthd", 20, || {
        status(&d, "st") == "RUNNING"
    });
    let info: serde_json::Value =
        serde_json::from_str(&ctl(&d, &["containers", "info", "st"])).unwrap();
    assert!(
        info["labels"].get("berth.stopped").is_none(),
        "running again: {info}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&d, "us"), "STOPPED");
    assert_eq!(count(&logs(&d, &["us"]).0, "run"), 1);
    // And while berthd runs, a user's stop holds for `always` too.
    ctl(&d, &["stop", "-t", "1", "al"]);
    eventually("al stopped", 10, || status(&d, "al") == "STOPPED");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&d, "al"), "STOPPED");
    assert_eq!(count(&logs(&d, &["al"]).0, "run"), 2);
    for id in ["al", "st", "us"] {
        let _ = d.berthctl("default", &["tasks", "rm", "-f", id]);
    }
}

#[test]
fn after_a_host_reboot_containers_that_ran_come_back_by_their_policy() {
    let Some(mut d) = daemon("") else {
        return;
    };
    let Some(ctr_bin) = peer("ctr") else {
        return;
    };
    let run = |name: &str, policy: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(policy);
        args.extend_from_slice(&["busybox", "sh", "-c", "echo run; exec sleep 300"]);
        ctl(&d, &args);
    };
    run("al", &["--restart", "always"]);
    run("st", &["--restart", "always"]);
    run("un", &["--restart", "unless-stopped"]);
    run("us", &["--restart", "unless-stopped"]);
    run("of", &["--restart", "on-failure:3"]);
    run("no", &[]);
    for id in ["al", "st", "un", "us", "of", "no"] {
        eventually("running", 10, || status(&d, id) == "RUNNING");
    }
    for id in ["st", "us"] {
        ctl(&d, &["kill", id]);
        eventually("stopped by the user", 10, || status(&d, id) == "STOPPED");
    }
    // A container with a policy that never ran (docker: not "started
    // before") is not started by a reboot.
    let out = d.ctr(
        &ctr_bin,
        "default",
        &[
            "containers",
            "create",
            "--label",
            "berth.restart=always",
            "docker.io/library/busybox:latest",
            "nv",
            "sleep",
            "300",
        ],
    );
    ok("ctr containers create nv", out);

    d.reboot();
    // The lost task counts as a failure: always, unless-stopped (not
    // stopped by the user) and on-failure come back; `always` even after
    // the user's stop, as with a daemon restart.
    for id in ["al", "st", "un", "of"] {
        eventually("restarted after the reboot", 20, || {
            status(&d, id) == "RUNNING" && count(&logs(&d, &[id]).0, "run") == 2
        });
        assert_eq!(restart_count(&d, id), 1, "{id}");
    }
    std::thread::sleep(Duration::from_secs(2));
    for id in ["us", "no", "nv"] {
        assert_eq!(status(&d, id), "NONE", "{id}: {}", d.log());
    }
    assert_eq!(count(&logs(&d, &["us"]).0, "run"), 1);
    // `rm -f` marks them stopped first: a bare task removal would be an
    // exit their policies answer.
    for id in ["al", "st", "un", "of"] {
        ctl(&d, &["rm", "-f", id]);
    }
}
