//! A descriptor berthd inherits without close-on-exec (a shell's, the
//! test harness's `flock` on its lock file) never reaches the shims and
//! plugins it starts: a shim outlives berthd, and would hold the file (and
//! a lock on it) for as long as its container runs.

use berth_tests::*;
use std::os::fd::AsRawFd;

#[test]
fn shims_do_not_inherit_berthds_descriptors() {
    if !require_root("running containers") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("inherited-marker");
    let f = std::fs::File::create(&marker).expect("marker");
    // What a shell or flock hands down: a descriptor without FD_CLOEXEC.
    // SAFETY: clears a flag on a descriptor this test owns.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFD, 0) };
    assert_eq!(r, 0, "clear FD_CLOEXEC");
    let d = Daemon::start();
    drop(f);
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    let out = d.berthctl(
        "default",
        &["run", "-d", "--name", "fdtest", "busybox", "sleep", "30"],
    );
    assert!(out.status.success(), "{out:?}");
    let shims = guard::shims_serving(&d.sock);
    assert!(!shims.is_empty(), "no shim serves the daemon");
    for pid in shims {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("shim fds");
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            assert_ne!(
                target,
                marker,
                "shim {pid} holds berthd's inherited descriptor {:?}",
                fd.file_name()
            );
        }
    }
    let out = d.berthctl("default", &["rm", "-f", "fdtest"]);
    assert!(out.status.success(), "{out:?}");
}
