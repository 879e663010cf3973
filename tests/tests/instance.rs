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
