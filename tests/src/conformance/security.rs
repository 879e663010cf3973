//! Conformance cases about confinement the spec asks for: seccomp (and
//! its notifications to an agent) and AppArmor.

use super::agent::Agent;
use super::{Suite, both, check, has_line, sh, show};
use crate::ok;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What the profile allows and denies, seen by the process itself:
/// `unshare -U` works unconfined (no capability needed) but containerd's
/// profile denies unshare without CAP_SYS_ADMIN; swapon and mount are
/// denied; chroot is allowed for a process holding CAP_SYS_CHROOT.
const PROBE: &str = "grep -E '^Seccomp' /proc/self/status; \
    unshare -U true 2>&1; echo unshare=$?; \
    swapon /dev/null 2>&1; echo swapon=$?; \
    mount -t tmpfs t /mnt 2>&1; echo mount=$?; \
    chroot / true 2>&1; echo chroot=$?";

pub fn seccomp(s: &Suite) {
    let obs = both(|rt| {
        let (a, b, c) = (s.id(rt, 1), s.id(rt, 2), s.id(rt, 3));
        let plain = show(&a, &s.run(rt, &a, &[], &sh(PROBE)));
        let filtered = show(&b, &s.run(rt, &b, &["--seccomp"], &sh(PROBE)));
        // Exec processes get the container's filter too.
        s.run_detached(rt, &c, &["--seccomp"], &["sleep", "300"]);
        let mut args = vec!["tasks", "exec", "--exec-id", "e1", &c];
        args.extend(sh(PROBE));
        let exec = show(&c, &s.ctr(&args));
        s.remove(&c);
        format!("no profile:\n{plain}--seccomp:\n{filtered}--seccomp exec:\n{exec}")
    });
    check("seccomp", &obs, |o| {
        let (plain, rest) = o.split_once("--seccomp:\n").unwrap_or((o, ""));
        let (filtered, exec) = rest.split_once("--seccomp exec:\n").unwrap_or((rest, ""));
        let mut p = Vec::new();
        for (sec, want) in [
            (plain, "Seccomp:\t0"),
            (plain, "Seccomp_filters:\t0"),
            (plain, "unshare=0"),
            (plain, "chroot=0"),
            (filtered, "exit=0"),
            (filtered, "Seccomp:\t2"),
            (filtered, "Seccomp_filters:\t1"),
            (
                filtered,
                "unshare: unshare(0x10000000): Operation not permitted",
            ),
            (filtered, "unshare=1"),
            (filtered, "swapon=1"),
            (filtered, "mount=1"),
            (filtered, "chroot=0"),
            (exec, "Seccomp:\t2"),
            (exec, "Seccomp_filters:\t1"),
            (exec, "unshare=1"),
            (exec, "chroot=0"),
        ] {
            p.extend(has_line(sec, want));
        }
        p
    });
}

/// Whether AppArmor is enabled on this host, as runc judges it.
fn apparmor_enabled() -> bool {
    std::path::Path::new("/sys/kernel/security/apparmor").exists()
        && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.starts_with('Y'))
}

/// What a container with `--apparmor-profile PROFILE` shows: its exit
/// status, and for one that ran, its confinement and whether the profile
/// keeps it from reading /etc/group (the message of a refused create
/// differs between the runtimes: only whether it names AppArmor counts).
fn apparmor_run(s: &Suite, rt: super::Rt, n: u32, profile: &str) -> String {
    let id = s.id(rt, n);
    let probe = sh("cat /proc/self/attr/current; cat /etc/group > /dev/null 2>&1; echo group=$?");
    let out = s.run(rt, &id, &["--apparmor-profile", profile], &probe);
    if out.status.success() {
        show(&id, &out)
    } else {
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        format!(
            "failed ({}), names apparmor: {}\n",
            super::normalise::code(&out),
            err.contains("apparmor")
        )
    }
}

/// A profile for the enabled path: allows what busybox needs, denies
/// reading /etc/group.
const PROFILE: &str = "profile berth-conformance flags=(attach_disconnected,mediate_deleted) {\n  file,\n  capability,\n  network,\n  signal,\n  unix,\n  ptrace,\n  deny /etc/group r,\n}\n";

/// Loads (`-r`) or removes (`-R`) [`PROFILE`] with apparmor_parser.
fn apparmor_parser(parser: &std::path::Path, flag: &str) -> bool {
    let child = Command::new(parser).arg(flag).stdin(Stdio::piped()).spawn();
    let Ok(mut child) = child else {
        return false;
    };
    if let Some(mut i) = child.stdin.take()
        && std::io::Write::write_all(&mut i, PROFILE.as_bytes()).is_err()
    {
        return false;
    }
    child.wait().is_ok_and(|s| s.success())
}

/// `process.apparmorProfile` (`ctr run --apparmor-profile`). runc writes
/// the profile for the next exec whether or not AppArmor is enabled; a
/// host without it refuses the write and the create fails, on both
/// runtimes. With AppArmor, a loaded profile confines the program (and a
/// profile that is not loaded fails the create).
pub fn apparmor(s: &Suite) {
    if !apparmor_enabled() {
        eprintln!(
            "SKIPPED: conformance apparmor, the enabled path (a loaded profile confining the \
             container): no AppArmor on this host; checking the disabled-host behaviour only"
        );
        let obs = both(|rt| {
            format!(
                "berth-conformance: {}",
                apparmor_run(s, rt, 1, "berth-conformance")
            )
        });
        check("apparmor", &obs, |o| {
            has_line(o, "berth-conformance: failed (1), names apparmor: true")
                .into_iter()
                .collect()
        });
        return;
    }
    let absent = both(|rt| {
        format!(
            "not loaded: {}",
            apparmor_run(s, rt, 1, "berth-no-such-profile")
        )
    });
    check("apparmor", &absent, |o| {
        has_line(o, "not loaded: failed (1), names apparmor: true")
            .into_iter()
            .collect()
    });
    let Some(parser) = crate::peer("apparmor_parser") else {
        eprintln!(
            "SKIPPED: conformance apparmor, a loaded profile: apparmor_parser is not installed"
        );
        return;
    };
    assert!(
        apparmor_parser(&parser, "-r"),
        "load the berth-conformance profile"
    );
    let loaded = both(|rt| format!("loaded: {}", apparmor_run(s, rt, 2, "berth-conformance")));
    if !apparmor_parser(&parser, "-R") {
        eprintln!("could not remove the berth-conformance AppArmor profile");
    }
    check("apparmor", &loaded, |o| {
        ["exit=0", "berth-conformance (enforce)", "group=1"]
            .iter()
            .filter_map(|l| has_line(o, l))
            .collect()
    });
}

/// The init's script: what it sees under the agent, kept for the exec to
/// show (a detached init's stdout goes nowhere), then it stays.
const NOTIFIED_INIT: &str = "{ echo init-ppid=$PPID; mkdir /tmp/init-dir 2>&1; \
    echo init-mkdir=$?; test -d /tmp/init-dir; echo init-made=$?; } >/tmp/o; \
    echo done >>/tmp/o; exec sleep 300";

/// The exec's: waits for the init's record, shows it, then its own.
const NOTIFIED_EXEC: &str = "i=0; until grep -q done /tmp/o || [ $i -ge 100 ]; do \
    i=$((i+1)); sleep 0.1; done; cat /tmp/o; echo exec-ppid=$PPID; \
    mkdir /tmp/exec-dir 2>&1; echo exec-mkdir=$?";

/// The container process state a connection brought, as text, with the
/// container's pids named by role (`<init>`, `<exec>`) and its id as
/// `<id>`; the same text from both runtimes means the same fields in the
/// same order.
fn process_state(message: &str, id: &str, init: u32) -> String {
    let v: serde_json::Value = serde_json::from_str(message).unwrap_or_default();
    let mut text = message.replace(id, "<id>");
    let mut pids = vec![(init, "<init>")];
    if let Some(p) = v["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
        && p != init
    {
        pids.push((p, "<exec>"));
    }
    for (pid, role) in pids {
        for end in [",", "}"] {
            text = text.replace(
                &format!("\"pid\":{pid}{end}"),
                &format!("\"pid\":\"{role}\"{end}"),
            );
        }
    }
    text
}

/// `SCMP_ACT_NOTIFY` with `listenerPath`: the runtime hands each process's
/// listener descriptor to an agent on the host with the container process
/// state (the init's at create, `creating`; an exec's, `running`), and the
/// container sees the agent's answers (`getppid` → 4242, `mkdir` →
/// `EDQUOT`).
pub fn seccomp_notify(s: &Suite) {
    let obs = both(|rt| {
        let id = s.id(rt, 1);
        let agent = Agent::start();
        let profile = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "listenerPath": agent.path(),
            "listenerMetadata": "berth-conformance",
            "syscalls": [
                {"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"},
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"},
            ],
        });
        let patch = move |spec: &mut Value| {
            spec["linux"]["seccomp"] = profile.clone();
        };
        s.create_patched(rt, &id, &[], &sh(NOTIFIED_INIT), &patch);
        ok(
            &format!("{}: start {id}", s.case),
            s.ctr(&["tasks", "start", "-d", "--null-io", &id]),
        );
        let init = s.task(&id).map(|(p, _)| p).unwrap_or(0);
        let mut args = vec!["tasks", "exec", "--exec-id", "e1", &id];
        args.extend(sh(NOTIFIED_EXEC));
        let exec = show(&id, &s.ctr(&args));
        s.remove(&id);
        let conns = agent.finish(Duration::from_secs(10));
        let mut o = format!("exec:\n{exec}connections: {}\n", conns.len());
        for c in conns {
            o.push_str(&format!(
                "fds={} answered={}\n{}\n",
                c.fds,
                c.answered.join(","),
                process_state(&c.message, &id, init)
            ));
        }
        o
    });
    check("seccomp_notify", &obs, |o| {
        let mut p: Vec<String> = [
            "exit=0",
            "init-ppid=4242",
            "mkdir: can't create directory '/tmp/init-dir': Disk quota exceeded",
            "init-mkdir=1",
            "init-made=1",
            "exec-ppid=4242",
            "mkdir: can't create directory '/tmp/exec-dir': Disk quota exceeded",
            "exec-mkdir=1",
            "connections: 2",
        ]
        .iter()
        .filter_map(|l| has_line(o, l))
        .collect();
        let states: Vec<&str> = o.lines().filter(|l| l.starts_with('{')).collect();
        let want = [
            r#""fds":["seccompFd"],"pid":"<init>","metadata":"berth-conformance","state":{"#,
            r#""fds":["seccompFd"],"pid":"<exec>","metadata":"berth-conformance","state":{"#,
        ];
        let status = [
            r#""status":"creating","pid":"<init>""#,
            r#""status":"running","pid":"<init>""#,
        ];
        for (i, st) in states.iter().enumerate().take(2) {
            if !st.contains(want[i]) || !st.contains(status[i]) {
                p.push(format!("connection {i}: unexpected process state {st}"));
            }
        }
        for l in o.lines().filter(|l| l.starts_with("fds=")) {
            if !l.starts_with("fds=1 ") || !l.contains("getppid") || !l.contains("mkdir") {
                p.push(format!("a connection was not served as asked: {l}"));
            }
        }
        p
    });
}

/// Calls newer than containerd's default profile (`ctr run --seccomp`):
/// `mseal` (462, newer than this libseccomp) and a number no kernel has
/// answer ENOSYS under runc (its -ENOSYS stub), not the profile's EPERM;
/// a call the profile names and denies still gets EPERM.
pub fn seccomp_new_syscalls(s: &Suite) {
    let Some(probe) = crate::syscall_probe() else {
        return;
    };
    let mount = format!(
        "type=bind,src={},dst=/probe,options=rbind:ro",
        probe.display()
    );
    let obs = both(|rt| {
        let a = s.id(rt, 1);
        let flags = ["--seccomp", "--mount", &mount];
        let cmd = ["/probe", "nr:462", "nr:1000", "keyctl", "getpid"];
        show(&a, &s.run(rt, &a, &flags, &cmd))
    });
    check(
        "seccomp_new_syscalls",
        &obs,
        super::lines(&[
            "exit=0",
            "nr:462=ENOSYS",
            "nr:1000=ENOSYS",
            "keyctl=EPERM",
            "getpid=0",
        ]),
    );
}

/// Profiles both runtimes refuse at create, whether the shim sees it
/// (`SCMP_ACT_NOTIFY` without `listenerPath`, on `write`, as the default
/// action) or libseccomp does, in the container's first process (a flag
/// Debian 12's libseccomp 2.5 lacks; runc 1.1.5 takes no flags at all).
pub fn seccomp_refused(s: &Suite) {
    let notify =
        |names: &[&str]| serde_json::json!([{"names": names, "action": "SCMP_ACT_NOTIFY"}]);
    let profiles = [
        (
            "notify without listenerPath",
            serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW", "syscalls": notify(&["getppid"]),
            }),
        ),
        (
            "notify on write",
            serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent.sock",
                "syscalls": notify(&["getppid", "write"]),
            }),
        ),
        (
            "notify by default",
            serde_json::json!({
                "defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/nonexistent.sock",
            }),
        ),
        (
            "listener not there",
            serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent.sock",
                "syscalls": notify(&["getppid"]),
            }),
        ),
        (
            "waitkill flag",
            serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            }),
        ),
    ];
    let obs = both(|rt| {
        let mut o = String::new();
        for (n, (what, profile)) in (1..).zip(profiles.iter()) {
            let id = s.id(rt, n);
            let profile = profile.clone();
            let patch = move |spec: &mut Value| spec["linux"]["seccomp"] = profile.clone();
            s.create_patched(rt, &id, &[], &["true"], &patch);
            o.push_str(&format!("{what}: {}\n", s.create_and_start(&id)));
            s.remove(&id);
        }
        o
    });
    check("seccomp_refused", &obs, |o| {
        o.lines()
            .filter(|l| !l.ends_with(": create refused"))
            .map(|l| format!("not refused at create: {l}"))
            .collect()
    });
}
