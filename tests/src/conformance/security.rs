//! Conformance cases about confinement the spec asks for: seccomp.

use super::{Suite, both, check, has_line, sh, show};

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
