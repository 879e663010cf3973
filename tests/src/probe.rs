//! `syscall-probe` (tests/fixtures/syscall-probe.c): a static program that
//! makes system calls and prints what each answered, bind-mounted into
//! busybox containers to compare seccomp profiles across runtimes. Built
//! with the host's C compiler once per run (a peer: missing, the test is
//! SKIPPED).

use crate::paths::{repo_root, target_dir};
use crate::peers::peer;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The probe's path, built if its source is newer; `None` without `cc`.
pub fn syscall_probe() -> Option<PathBuf> {
    static PROBE: OnceLock<Option<PathBuf>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let cc = peer("cc")?;
            let src = repo_root().join("tests/fixtures/syscall-probe.c");
            let out = target_dir().join("berth-syscall-probe");
            let lock = target_dir().join("berth-syscall-probe.lock");
            // Shared by concurrent test binaries: built under a lock, into a
            // temporary name, then renamed.
            let script = format!(
                "[ {out} -nt {src} ] || {{ {cc} -static -O2 -Wall -o {out}.tmp {src} && mv {out}.tmp {out}; }}",
                out = out.display(),
                src = src.display(),
                cc = cc.display(),
            );
            let st = Command::new("flock")
                .arg(&lock)
                .args(["sh", "-c", &script])
                .status()
                .expect("run flock cc");
            assert!(st.success(), "building {} failed", out.display());
            Some(out)
        })
        .clone()
}
