//! Conformance cases about the container's processes: capabilities,
//! rlimits, user and groups, cwd and environment, exit codes, signals,
//! pause and resume, exec and terminals.

use super::normalise::mask_values;
use super::{Suite, both, check, has_line, lines, sh, show};
use serde_json::json;
use std::time::Duration;

pub fn capabilities(s: &Suite) {
    let probe = sh("grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status");
    let obs = both(|rt| {
        let (a, b, c) = (s.id(rt, 1), s.id(rt, 2), s.id(rt, 3));
        let default = show(&a, &s.run(rt, &a, &[], &probe));
        let flags = ["--cap-add", "CAP_SYS_ADMIN", "--cap-drop", "CAP_NET_RAW"];
        let changed = show(&b, &s.run(rt, &b, &flags, &probe));
        let user = show(
            &c,
            &s.berthctl_run(rt, &c, &["--rm", "--user", "1000:1000"], &probe),
        );
        format!("default:\n{default}+SYS_ADMIN -NET_RAW:\n{changed}--user 1000:\n{user}")
    });
    check("capabilities", &obs, |o| {
        let mut p = lines(&[
            "CapInh:\t0000000000000000",
            "CapAmb:\t0000000000000000",
            "NoNewPrivs:\t1",
            "Seccomp:\t0",
        ])(o);
        let parts: Vec<&str> = o.split("+SYS_ADMIN").collect();
        p.extend(has_line(parts[0], "CapEff:\t00000000a80425fb"));
        p.extend(has_line(parts[0], "CapBnd:\t00000000a80425fb"));
        let rest = parts.get(1).copied().unwrap_or("");
        p.extend(has_line(rest, "CapEff:\t00000000a82405fb"));
        p.extend(has_line(rest, "CapBnd:\t00000000a80425fb"));
        p
    });
}

pub fn rlimits(s: &Suite) {
    let probe = sh("cat /proc/self/limits");
    let patch = |spec: &mut serde_json::Value| {
        spec["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 1111, "hard": 2222},
            {"type": "RLIMIT_NPROC", "soft": 555, "hard": 666},
            {"type": "RLIMIT_MSGQUEUE", "soft": 4096, "hard": 8192},
        ]);
    };
    let obs = both(|rt| {
        let (a, b) = (s.id(rt, 1), s.id(rt, 2));
        let default = show(&a, &s.run(rt, &a, &[], &probe));
        let spec = show(&b, &s.run_patched(rt, &b, &[], &probe, &patch));
        format!("default:\n{default}spec'd:\n{spec}")
    });
    check("rlimits", &obs, |o| {
        let limit = |section: &str, name: &str| -> Option<String> {
            section.lines().find(|l| l.starts_with(name)).map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        };
        let (default, spec) = o.split_once("spec'd:").unwrap_or((o, ""));
        let mut p = Vec::new();
        for (sec, name, want) in [
            (default, "Max open files", "1024 1024"),
            (spec, "Max open files", "1111 2222"),
            (spec, "Max processes", "555 666"),
            (spec, "Max msgqueue size", "4096 8192"),
        ] {
            let got = limit(sec, name);
            if got.as_deref() != Some(want) {
                p.push(format!("{name}: {got:?}, not {want}"));
            }
        }
        p
    });
}

pub fn user_and_groups(s: &Suite) {
    let probe = sh("id; grep -E '^(Uid|Gid|Groups):' /proc/self/status");
    let patch = |spec: &mut serde_json::Value| {
        spec["process"]["user"] =
            json!({"uid": 1000, "gid": 1000, "additionalGids": [20, 10, 1000]});
    };
    let obs = both(|rt| {
        let (a, b, c) = (s.id(rt, 1), s.id(rt, 2), s.id(rt, 3));
        let default = show(&a, &s.run(rt, &a, &[], &probe));
        let nobody = show(
            &b,
            &s.berthctl_run(rt, &b, &["--rm", "--user", "65534:65534"], &probe),
        );
        let groups = show(&c, &s.run_patched(rt, &c, &[], &probe, &patch));
        format!("default:\n{default}--user 65534:65534:\n{nobody}spec'd groups:\n{groups}")
    });
    check(
        "user_and_groups",
        &obs,
        lines(&[
            "uid=0(root) gid=0(root) groups=0(root)",
            "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)",
            "uid=1000 gid=1000 groups=10,20,1000",
            "Uid:\t1000\t1000\t1000\t1000",
            "Groups:\t10 20 1000 ",
        ]),
    );
}

pub fn cwd_and_env(s: &Suite) {
    let probe = sh("echo cwd=$(pwd); ls -ld . | cut -c1-10; env | sort; umask");
    let obs = both(|rt| {
        let (a, b, c) = (s.id(rt, 1), s.id(rt, 2), s.id(rt, 3));
        let default = show(&a, &s.run(rt, &a, &[], &probe));
        let flags = [
            "--cwd",
            "/tmp",
            "--env",
            "FOO=bar",
            "--env",
            "PATH=/bin:/sbin",
        ];
        let set = show(&b, &s.run(rt, &b, &flags, &probe));
        let missing = show(&c, &s.run(rt, &c, &["--cwd", "/made/by/runtime"], &probe));
        format!("default:\n{default}--cwd /tmp --env:\n{set}--cwd missing:\n{missing}")
    });
    check("cwd_and_env", &obs, |o| {
        let mut p = lines(&[
            "cwd=/",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "cwd=/tmp",
            "FOO=bar",
            "PATH=/bin:/sbin",
            "cwd=/made/by/runtime",
            "0022",
        ])(o);
        // ctr sets neither: a runtime must not make them up.
        for v in ["HOSTNAME=", "TERM="] {
            if o.lines().any(|l| l.starts_with(v)) {
                p.push(format!("{v} set without a terminal or hostname env"));
            }
        }
        p
    });
}

pub fn exit_codes(s: &Suite) {
    let obs = both(|rt| {
        let mut o = String::new();
        for (n, cmd) in [
            (1, &["sh", "-c", "exit 0"][..]),
            (2, &["sh", "-c", "exit 7"]),
            // PID 1 cannot SIGKILL itself from inside its namespace.
            (3, &["sh", "-c", "kill -KILL $$; echo survived"]),
            (4, &["sh", "-c", "nosuchcmd"]),
        ] {
            let id = s.id(rt, n);
            o.push_str(&format!(
                "{cmd:?}: {}",
                show(&id, &s.run(rt, &id, &[], cmd))
            ));
        }
        // Not runnable at all: ctr fails; the message is the runtime's own,
        // so only its gist is compared.
        for (n, cmd) in [(5, "nosuchcmd"), (6, "/etc/passwd")] {
            let id = s.id(rt, n);
            let out = s.run(rt, &id, &[], &[cmd]);
            let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
            let gist = ["not found", "no such file", "permission denied"]
                .iter()
                .find(|g| err.contains(*g))
                .copied()
                .unwrap_or("<other>");
            o.push_str(&format!(
                "{cmd}: exit={} error={gist}\n",
                out.status.code().unwrap_or(-1)
            ));
            // Whether ctr could remove it races with the task's exit when
            // Start failed; the phase that refused is compared below.
            if s.ctr(&["containers", "info", &id]).status.success() {
                s.remove(&id);
            }
        }
        // The phase that refuses what cannot run: runc checks that the
        // program exists and may be executed at create, so create fails and
        // no task is left to clean up.
        for (n, cmd) in [(8, "nosuchcmd"), (9, "/etc/passwd")] {
            let id = s.id(rt, n);
            s.create_patched(rt, &id, &[], &[cmd], &|_| {});
            o.push_str(&format!("{cmd}: {}\n", s.create_and_start(&id)));
            s.remove(&id);
        }
        // SIGKILL from outside.
        let id = s.id(rt, 7);
        let child =
            s.spawn_until_ready(rt, &id, &sh("echo ready; while true; do sleep 0.05; done"));
        crate::ok("kill", s.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]));
        let out = child.wait_with_output().expect("ctr run");
        o.push_str(&format!(
            "SIGKILL: exit={}\n",
            out.status.code().unwrap_or(-1)
        ));
        o
    });
    check(
        "exit_codes",
        &obs,
        lines(&[
            "[\"sh\", \"-c\", \"exit 0\"]: exit=0",
            "[\"sh\", \"-c\", \"exit 7\"]: exit=7",
            "survived",
            "[\"sh\", \"-c\", \"nosuchcmd\"]: exit=127",
            "nosuchcmd: exit=1 error=not found",
            "/etc/passwd: exit=1 error=permission denied",
            "nosuchcmd: create refused",
            "/etc/passwd: create refused",
            "SIGKILL: exit=137",
        ]),
    );
}

pub fn signals(s: &Suite) {
    let obs = both(|rt| {
        let id = s.id(rt, 1);
        let trap = "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.05; done";
        let child = s.spawn_until_ready(rt, &id, &sh(trap));
        crate::ok("kill", s.ctr(&["tasks", "kill", &id]));
        let out = child.wait_with_output().expect("ctr run");
        let mut o = format!("trapped TERM: {}", show(&id, &out));
        // Without a handler, PID 1 does not die of SIGTERM; SIGKILL is
        // forced on it.
        let id = s.id(rt, 2);
        s.run_detached(rt, &id, &[], &["sleep", "300"]);
        crate::ok("kill", s.ctr(&["tasks", "kill", &id]));
        std::thread::sleep(Duration::from_millis(300));
        o.push_str(&format!("untrapped TERM: {:?}\n", s.status(&id)));
        crate::ok("kill", s.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]));
        s.wait_status(&id, "STOPPED");
        o.push_str(&format!("SIGKILL: {:?}\n", s.status(&id)));
        s.remove(&id);
        o
    });
    check(
        "signals",
        &obs,
        lines(&[
            "trapped TERM: exit=7",
            "got TERM",
            "untrapped TERM: Some(\"RUNNING\")",
            "SIGKILL: Some(\"STOPPED\")",
        ]),
    );
}

pub fn pause_resume(s: &Suite) {
    let counter = "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.02; done";
    let obs = both(|rt| {
        let id = s.id(rt, 1);
        s.run_detached(rt, &id, &[], &sh(counter));
        let (pid, _) = s.task(&id).expect("running");
        // Read through the init's root: no exec can run in a frozen cgroup.
        let n = || std::fs::read_to_string(format!("/proc/{pid}/root/tmp/n")).unwrap_or_default();
        let advancing = || {
            let a = n();
            std::thread::sleep(Duration::from_millis(300));
            if n() != a { "advancing" } else { "still" }
        };
        let _ = advancing();
        let mut o = String::new();
        crate::ok("pause", s.ctr(&["tasks", "pause", &id]));
        o.push_str(&format!(
            "paused: {:?} freezer={} counter={}\n",
            s.status(&id),
            s.cgroup_file("freezer", &id, "freezer.state"),
            advancing()
        ));
        crate::ok("resume", s.ctr(&["tasks", "resume", &id]));
        o.push_str(&format!(
            "resumed: {:?} freezer={} counter={}\n",
            s.status(&id),
            s.cgroup_file("freezer", &id, "freezer.state"),
            advancing()
        ));
        s.remove(&id);
        o
    });
    check(
        "pause_resume",
        &obs,
        lines(&[
            "paused: Some(\"PAUSED\") freezer=FROZEN counter=still",
            "resumed: Some(\"RUNNING\") freezer=THAWED counter=advancing",
        ]),
    );
}

pub fn exec(s: &Suite) {
    let probe = "echo pid=$$; pwd; env | sort; id; grep -E '^Cap(Eff|Bnd)' /proc/self/status; \
        for n in ipc mnt net pid uts; do [ $(readlink /proc/self/ns/$n) = $(readlink /proc/1/ns/$n) ] \
          && echo $n shared with init || echo $n NOT shared; done; \
        [ \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" ] && echo cgroup shared with init";
    let obs = both(|rt| {
        let id = s.id(rt, 1);
        s.run_detached(
            rt,
            &id,
            &["--env", "FOO=init", "--cwd", "/tmp"],
            &["sleep", "300"],
        );
        let exec = |args: &[&str]| {
            let mut a = vec!["tasks", "exec"];
            a.extend_from_slice(args);
            show(&id, &s.ctr(&a))
        };
        let mut o = String::new();
        // The pid an exec gets is whatever is free in the namespace.
        let first = exec(&["--exec-id", "e1", &id, "sh", "-c", probe]);
        if first.contains("pid=1\n") {
            o.push_str("exec is PID 1\n");
        }
        o.push_str(&format!("as init:\n{}", mask_values(&first, &["pid"])));
        let user = [
            "--exec-id",
            "e2",
            "--cwd",
            "/",
            "--user",
            "65534:65534",
            &id,
        ];
        let user: Vec<&str> = user
            .iter()
            .copied()
            .chain(sh("pwd; id; env | sort"))
            .collect();
        o.push_str(&format!("--user --cwd:\n{}", exec(&user)));
        o.push_str(&format!(
            "exit 5:\n{}",
            exec(&["--exec-id", "e3", &id, "sh", "-c", "exit 5"])
        ));
        let out = s.ctr(&["tasks", "exec", "--exec-id", "e4", &id, "nosuchcmd"]);
        let err = String::from_utf8_lossy(&out.stderr).contains("not found");
        o.push_str(&format!(
            "nosuchcmd: exit={} not-found={err}\n",
            out.status.code().unwrap_or(-1)
        ));
        o.push_str(&format!("init after: {:?}\n", s.status(&id)));
        s.remove(&id);
        o
    });
    check("exec", &obs, |o| {
        let mut p = lines(&[
            "pid=<pid>",
            "/tmp",
            "FOO=init",
            "uid=0(root) gid=0(root) groups=0(root)",
            "CapEff:\t00000000a80425fb",
            "ipc shared with init",
            "mnt shared with init",
            "net shared with init",
            "pid shared with init",
            "uts shared with init",
            "cgroup shared with init",
            "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)",
            "exit=5",
            "nosuchcmd: exit=1 not-found=true",
            "init after: Some(\"RUNNING\")",
        ])(o);
        if o.contains("exec is PID 1") {
            p.push("an exec got PID 1".into());
        }
        p
    });
}

/// Terminal output as lines: `\r\n` ends a line, and the `^@` the terminal
/// echoes for the end of script's (empty) input goes, wherever it lands.
fn terminal(s: &str) -> String {
    s.replace("\r\n", "\n").replace("^@", "")
}

pub fn tty(s: &Suite) {
    let Some(script) = crate::peer("script") else {
        return;
    };
    // ctr 1.6 sizes the terminal only after the process started (it sets
    // no consoleSize), so wait for the size to arrive.
    // (busybox stty says why it cannot and still exits 0: match the size.)
    let size = "for i in $(seq 100); do stty size >/tmp/sz 2>&1; \
        grep -qx '[1-9][0-9]* [1-9][0-9]*' /tmp/sz && break; sleep 0.02; done; cat /tmp/sz";
    let probe = format!(
        "tty; {size}; echo TERM=$TERM; stat -c '%N %t:%T' /dev/console $(tty); \
        grep -c ' /dev/console ' /proc/self/mountinfo; exit 3"
    );
    let obs = both(|rt| {
        let (a, b) = (s.id(rt, 1), s.id(rt, 2));
        let run = s.run_args(rt, "--rm", &["-t"], &a, &sh(&probe));
        let out = s.ctr_in_terminal(&script, (91, 27), &run);
        let mut o = format!("run -t:\n{}", terminal(&show(&a, &out)));
        s.run_detached(rt, &b, &[], &["sleep", "300"]);
        let exec: Vec<String> = ["tasks", "exec", "-t", "--exec-id", "t1", &b]
            .into_iter()
            .chain(sh(&format!("tty; {size}; echo TERM=$TERM; exit 4")))
            .map(String::from)
            .collect();
        let out = s.ctr_in_terminal(&script, (100, 30), &exec);
        o.push_str(&format!("exec -t:\n{}", terminal(&show(&b, &out))));
        s.remove(&b);
        o
    });
    check(
        "tty",
        &obs,
        lines(&[
            "exit=3",
            "/dev/pts/0",
            "27 91",
            "TERM=xterm",
            "/dev/console 88:0",
            "exit=4",
            "30 100",
        ]),
    );
}

/// A container killed by the OOM killer under its memory limit: what its
/// client sees (exit 137) and the `/tasks/oom` event the shim publishes,
/// which is how CRI reports `OOMKilled` (both runtimes' shims must watch
/// the container's cgroup).
pub fn oom(s: &Suite) {
    use berth_proto::services::events::v1 as eapi;
    use tokio_stream::StreamExt;
    let probe = sh("x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived");
    let obs = both(|rt| {
        let id = s.id(rt, 1);
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        tokio.block_on(async {
            let mut sub = eapi::events_client::EventsClient::new(s.d.channel().await)
                .subscribe(eapi::SubscribeRequest {
                    filters: vec!["topic==/tasks/oom".into()],
                })
                .await
                .expect("subscribe to events")
                .into_inner();
            let run = {
                let flags = ["--memory-limit", "16777216"];
                let args = s.run_args(rt, "--rm", &flags, &id, &probe);
                let mut cmd = s.ctr_cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
                tokio::task::spawn_blocking(move || cmd.output().expect("ctr run"))
            };
            let out = run.await.expect("ctr run");
            // The event is published before the exit; both runtimes' events
            // share the subscription, so wait for this container's.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let mut event = "none";
            while let Ok(Some(Ok(ev))) = tokio::time::timeout_at(deadline, sub.next()).await {
                let oom: berth_proto::pb::containerd::events::TaskOom =
                    berth_proto::typeurl::unpack(ev.event.as_ref().expect("an event"))
                        .expect("a TaskOom");
                if ev.namespace == super::NS && oom.container_id == id {
                    event = "published";
                    break;
                }
            }
            format!("{}oom event: {event}\n", show(&id, &out))
        })
    });
    check("oom", &obs, lines(&["exit=137", "oom event: published"]));
}
