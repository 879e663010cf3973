//! A shim asked to shut down gives up its socket before it answers, and
//! never touches the path again: berthd starts the next shim of the same
//! id (`start` again after `stop`) as soon as the answer arrives, and that
//! shim must neither reuse the exiting one nor lose its own socket to it.
//! (Before, the socket went after the answer, and again when the serving
//! loop ended ~100 ms later: about one stop/start in a hundred failed with
//! "connect to shim …: No such file".)

use berth_proto::pb::containerd::task::v2 as shimapi;
use berth_proto::ttrpc::{Client, Context};
use berth_tests::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn shutdown_gives_up_the_socket_before_answering_and_never_after() {
    if !require_root("starting a shim (its binary is sealed with a mount)") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).expect("bundle");
    let daemon = dir.path().join("berthd.sock");
    let out = Command::new(bin("containerd-shim-berth-v2"))
        .args(["-namespace", "t", "-address"])
        .arg(&daemon)
        .args(["-publish-binary", "/bin/true", "-id", "x", "start"])
        .current_dir(&bundle)
        .stdin(Stdio::null())
        .output()
        .expect("run shim start");
    assert!(
        out.status.success(),
        "shim start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let sock = Path::new(address.trim_start_matches("unix://")).to_path_buf();
    let client = Client::connect(&address)
        .await
        .expect("connect to the shim");
    let ctx = Context::with_namespace("t");
    let _: shimapi::ConnectResponse = client
        .call(
            ctx.clone(),
            "containerd.task.v2.Task",
            "Connect",
            &shimapi::ConnectRequest { id: "x".into() },
        )
        .await
        .expect("Connect");
    let _: () = client
        .call(
            ctx,
            "containerd.task.v2.Task",
            "Shutdown",
            &shimapi::ShutdownRequest {
                id: "x".into(),
                now: false,
            },
        )
        .await
        .expect("Shutdown");
    assert!(
        !sock.exists(),
        "the socket must be gone when Shutdown answers"
    );
    // What the next shim of this id would bind: the exiting one must leave
    // it alone.
    std::fs::write(&sock, b"next shim").expect("stand in for the next shim's socket");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !client.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(client.is_closed(), "the shim did not exit after Shutdown");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        sock.exists(),
        "the exiting shim removed the path after answering (a new shim's socket)"
    );
    std::fs::remove_file(&sock).expect("remove the stand-in");
    guard::unmount_under(dir.path());
}
