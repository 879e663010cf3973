//! Conformance cases about confinement the spec asks for: seccomp and
//! AppArmor.

use super::{Suite, both, check, has_line, sh, show};
use std::process::{Command, Stdio};

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
