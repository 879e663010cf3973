//! One berthd per root and per socket: a second daemon refuses to start
//! and names the first one's pid, the first keeps serving, and a daemon
//! restarted right after a crash starts.

use berth_tests::*;
use std::process::Output;
use std::time::Duration;

/// Runs a second berthd beside `d` on `root` and `sock` and expects it to
/// refuse to start; answers what it said.
fn second_daemon_refuses(d: &Daemon, root: &str, sock: &std::path::Path) -> String {
    let other = d.dir.path().join("other");
    let root = if root == "same" {
        d.root()
    } else {
        other.join("root")
    };
    let cmd = d.berthd_on(&root, &other.join("state"), sock);
    let Some(Output {
        status,
        stdout,
        stderr,
    }) = output_within(cmd, b"", Duration::from_secs(30))
    else {
        panic!("the second berthd kept running for 30s beside the first");
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    assert!(!status.success(), "the second berthd succeeded: {said}");
    said
}

fn still_serves(d: &Daemon) {
    ok("images ls", d.berthctl("default", &["images", "ls", "-q"]));
    ok("leases ls", d.berthctl("default", &["leases", "ls", "-q"]));
}

#[test]
fn a_second_daemon_on_the_same_root_refuses_naming_the_first() {
    let d = Daemon::start();
    let sock = d.dir.path().join("other.sock");
    let said = second_daemon_refuses(&d, "same", &sock);
    assert!(
        said.contains(&format!("pid {}", d.pid())) && said.contains("root"),
        "the refusal names neither the first daemon's pid nor the root: {said}"
    );
    assert!(!sock.exists(), "the refused daemon left {}", sock.display());
    still_serves(&d);
}

#[test]
fn a_second_daemon_on_the_same_address_refuses_and_leaves_the_socket() {
    let d = Daemon::start();
    let said = second_daemon_refuses(&d, "other", &d.sock);
    assert!(
        said.contains(&format!("pid {}", d.pid())) && said.contains("address"),
        "the refusal names neither the first daemon's pid nor the address: {said}"
    );
    assert!(d.sock.exists(), "the refused daemon removed the socket");
    still_serves(&d);
}

#[test]
fn a_daemon_killed_and_restarted_at_once_starts() {
    let mut d = Daemon::start();
    let first = d.pid();
    d.crash_and_restart();
    assert_ne!(d.pid(), first);
    still_serves(&d);
    // And once more, the crash now racing a daemon that restored state.
    d.crash_and_restart();
    still_serves(&d);
}

/// Takes `path`'s flock as a dying daemon would still hold it.
fn hold(path: &std::path::Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, 0, "lock {}", path.display());
    f
}

#[test]
fn a_restart_waits_for_the_locks_a_dying_daemon_still_holds() {
    let mut d = Daemon::start();
    d.kill9();
    // The kernel closes a killed process's files one by one, and a shim
    // forked a moment before holds them until it executes: the new daemon
    // may find either lock still taken for a moment.
    let held = [
        hold(&d.root().join("berthd.lock")),
        hold(&d.root().join("metadata.redb")),
    ];
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(held);
    });
    d.restart();
    release.join().unwrap();
    still_serves(&d);
}
