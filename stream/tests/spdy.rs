//! The streaming server driven over SPDY/3.1 by the crate's own SPDY client (client role), the
//! way client-go's remotecommand and portforward clients drive the kubelet.

mod common;

use berth_proto::cri;
use berth_stream::Server;
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn exec_req(cmd: &[&str], stdin: bool, tty: bool) -> cri::ExecRequest {
    cri::ExecRequest {
        container_id: "ctr-1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

async fn exec_url(server: &Server, cmd: &[&str], stdin: bool, tty: bool) -> String {
    server.exec_url(&exec_req(cmd, stdin, tty)).unwrap().url
}

#[tokio::test]
async fn v4_exec_reports_output_and_exit_code() {
    let (server, fake) = start().await;
    let url = exec_url(
        &server,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        false,
        false,
    )
    .await;
    assert!(
        url.starts_with(&format!("http://{}/exec/", server.local_addr())),
        "{url}"
    );
    let (status, headers, session) =
        spdy_upgrade(&server, &url, &["v5.channel.k8s.io", "v4.channel.k8s.io"]).await;
    assert_eq!(status, 101);
    assert!(
        headers.contains(&(
            "x-stream-protocol-version".into(),
            "v5.channel.k8s.io".into()
        )),
        "{headers:?}"
    );
    assert!(headers.contains(&("upgrade".into(), "SPDY/3.1".into())));
    let session = session.unwrap();
    let error = open(&session, "error", true).await;
    let stdout = open(&session, "stdout", false).await;
    let stderr = open(&session, "stderr", false).await;
    let (out, err, status) = tokio::join!(read_all(stdout), read_all(stderr), read_all(error));
    assert_eq!(out, b"out\n");
    assert_eq!(err, b"err\n");
    let status = json(&status);
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert_eq!(
        fake.seen.lock().unwrap()[0],
        r#"exec ctr-1 ["sh", "-c", "echo out; echo err >&2; exit 3"] tty=false"#
    );
}

#[tokio::test]
async fn stdin_is_copied_and_its_fin_is_eof() {
    let (server, _) = start().await;
    let url = exec_url(&server, &["cat"], true, false).await;
    let (_, _, session) = spdy_upgrade(&server, &url, &["v4.channel.k8s.io"]).await;
    let session = session.unwrap();
    let error = open(&session, "error", true).await;
    let mut stdin = open(&session, "stdin", false).await;
    let stdout = open(&session, "stdout", false).await;
    let stderr = open(&session, "stderr", false).await;
    // More than one 32 KiB frame and the 64 KiB SPDY window, which the peers do not enforce.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = tokio::spawn(async move {
        stdin.write_all(&big).await.unwrap();
        stdin.shutdown().await.unwrap();
        big
    });
    let (out, _, status) = tokio::join!(read_all(stdout), read_all(stderr), read_all(error));
    assert_eq!(out, writer.await.unwrap());
    assert_eq!(json(&status)["status"], "Success");
}

#[tokio::test]
async fn tty_exec_gets_resizes() {
    let (server, _) = start().await;
    let url = exec_url(&server, &["resize-echo"], true, true).await;
    let (_, _, session) = spdy_upgrade(&server, &url, &["v4.channel.k8s.io"]).await;
    let session = session.unwrap();
    let error = open(&session, "error", true).await;
    let _stdin = open(&session, "stdin", false).await;
    let stdout = open(&session, "stdout", false).await;
    let mut resize = open(&session, "resize", false).await;
    resize
        .write_all(br#"{"Width":132,"Height":43}"#)
        .await
        .unwrap();
    let (out, status) = tokio::join!(read_all(stdout), read_all(error));
    assert_eq!(String::from_utf8(out).unwrap(), "size 132x43\n");
    assert_eq!(json(&status)["status"], "Success");
}

#[tokio::test]
async fn older_protocols_report_errors_as_text() {
    let (server, _) = start().await;
    for proto in ["v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"] {
        let url = exec_url(&server, &["sh", "-c", "exit 2"], false, false).await;
        let (status, headers, session) =
            spdy_upgrade(&server, &url, &["v9.channel.k8s.io", proto]).await;
        assert_eq!(status, 101);
        assert!(headers.contains(&("x-stream-protocol-version".into(), proto.into())));
        let session = session.unwrap();
        let error = open(&session, "error", true).await;
        let stdout = open(&session, "stdout", false).await;
        let stderr = open(&session, "stderr", false).await;
        let (_, _, msg) = tokio::join!(read_all(stdout), read_all(stderr), read_all(error));
        let msg = String::from_utf8(msg).unwrap();
        assert!(
            msg.contains("non-zero exit code") && msg.contains("exit status 2"),
            "{proto}: {msg}"
        );
    }
}

#[tokio::test]
async fn handshake_failures_and_single_use_tokens() {
    let (server, _) = start().await;
    let url = exec_url(&server, &["true"], false, false).await;
    let (status, headers, _) = spdy_upgrade(&server, &url, &["v9.channel.k8s.io"]).await;
    assert_eq!(status, 403);
    let accepted: Vec<_> = headers
        .iter()
        .filter(|(n, _)| n == "x-accepted-stream-protocol-versions")
        .collect();
    assert_eq!(accepted.len(), 5, "{headers:?}");
    // The token was used up by the failed attempt, as with the kubelet.
    let (status, _, _) = spdy_upgrade(&server, &url, &["v4.channel.k8s.io"]).await;
    assert_eq!(status, 404);
    let url = exec_url(&server, &["true"], false, false).await;
    let (status, _, _) = spdy_upgrade(&server, &url, &[]).await;
    assert_eq!(status, 400);
    let (status, _, _) = spdy_upgrade(
        &server,
        &format!("http://{}/exec/bogus", server.local_addr()),
        &["v4.channel.k8s.io"],
    )
    .await;
    assert_eq!(status, 404);
    // A token is only valid on its own endpoint.
    let url = exec_url(&server, &["true"], false, false)
        .await
        .replace("/exec/", "/attach/");
    let (status, _, _) = spdy_upgrade(&server, &url, &["v4.channel.k8s.io"]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn requests_are_validated_as_the_kubelet_does() {
    let (server, _) = start().await;
    let mut r = exec_req(&["true"], false, false);
    r.tty = true;
    assert!(
        server
            .exec_url(&r)
            .unwrap_err()
            .to_string()
            .contains("tty and stderr")
    );
    let r = cri::ExecRequest {
        stdout: false,
        stderr: false,
        ..exec_req(&["true"], false, false)
    };
    assert!(
        server
            .exec_url(&r)
            .unwrap_err()
            .to_string()
            .contains("one of stdin, stdout, or stderr")
    );
    assert!(
        server
            .exec_url(&exec_req(&[], false, false))
            .unwrap_err()
            .to_string()
            .contains("cmd")
    );
    let r = cri::ExecRequest {
        container_id: String::new(),
        ..exec_req(&["true"], false, false)
    };
    assert!(
        server
            .exec_url(&r)
            .unwrap_err()
            .to_string()
            .contains("container_id")
    );
    let a = cri::AttachRequest {
        container_id: "c".into(),
        stdin: false,
        tty: true,
        stdout: true,
        stderr: true,
    };
    assert!(matches!(
        server.attach_url(&a),
        Err(berth_stream::Error::InvalidArgument(_))
    ));
    let p = cri::PortForwardRequest {
        pod_sandbox_id: String::new(),
        port: vec![],
    };
    assert!(
        server
            .port_forward_url(&p)
            .unwrap_err()
            .to_string()
            .contains("pod_sandbox_id")
    );
    let p = cri::PortForwardRequest {
        pod_sandbox_id: POD.into(),
        port: vec![70000],
    };
    assert!(
        server
            .port_forward_url(&p)
            .unwrap_err()
            .to_string()
            .contains("70000")
    );
}

#[tokio::test]
async fn attach_over_spdy() {
    let (server, _) = start().await;
    let req = cri::AttachRequest {
        container_id: "ctr-1".into(),
        stdin: true,
        tty: false,
        stdout: true,
        stderr: true,
    };
    let url = server.attach_url(&req).unwrap().url;
    assert!(url.contains("/attach/"));
    let (_, _, session) = spdy_upgrade(&server, &url, &["v4.channel.k8s.io"]).await;
    let session = session.unwrap();
    let error = open(&session, "error", true).await;
    let mut stdin = open(&session, "stdin", false).await;
    let stdout = open(&session, "stdout", false).await;
    let stderr = open(&session, "stderr", false).await;
    stdin.write_all(b"hello\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    let (out, _, status) = tokio::join!(read_all(stdout), read_all(stderr), read_all(error));
    assert_eq!(out, b"attached\nhello\n");
    assert_eq!(json(&status)["status"], "Success");

    // A backend failure is an InternalError status.
    let req = cri::AttachRequest {
        container_id: "gone".into(),
        stdin: false,
        tty: false,
        stdout: true,
        stderr: false,
    };
    let url = server.attach_url(&req).unwrap().url;
    let (_, _, session) = spdy_upgrade(&server, &url, &["v4.channel.k8s.io"]).await;
    let session = session.unwrap();
    let error = open(&session, "error", true).await;
    let stdout = open(&session, "stdout", false).await;
    let (_, status) = tokio::join!(read_all(stdout), read_all(error));
    let status = json(&status);
    assert_eq!(status["reason"], "InternalError");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("container gone not found")
    );
}

async fn forward_pair(
    session: &berth_stream::spdy::Session,
    port: u16,
    request: &str,
    payload: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let headers = |t: &str| {
        vec![
            ("streamType".to_string(), t.to_string()),
            ("port".to_string(), port.to_string()),
            ("requestID".to_string(), request.to_string()),
        ]
    };
    let error = session.open(headers("error"), true).await.unwrap();
    let mut data = session.open(headers("data"), false).await.unwrap();
    data.write_all(payload).await.unwrap();
    data.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = data.read_to_end(&mut out).await;
    (out, read_all(error).await)
}

#[tokio::test]
async fn port_forward_over_spdy() {
    let (server, _) = start().await;
    let port = echo_server().await;
    let req = cri::PortForwardRequest {
        pod_sandbox_id: POD.into(),
        port: vec![],
    };
    let url = server.port_forward_url(&req).unwrap().url;
    let (status, headers, session) = spdy_upgrade(&server, &url, &["portforward.k8s.io"]).await;
    assert_eq!(status, 101);
    assert!(headers.contains(&(
        "x-stream-protocol-version".into(),
        "portforward.k8s.io".into()
    )));
    let session = session.unwrap();
    // Two forwarded connections at once on one session.
    let (a, b) = tokio::join!(
        forward_pair(&session, port, "0", b"first"),
        forward_pair(&session, port, "1", b"second")
    );
    assert_eq!(a, (b"echo:first".to_vec(), vec![]));
    assert_eq!(b, (b"echo:second".to_vec(), vec![]));
    // A refused connection is reported on the request's error stream; the session goes on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_, err) = forward_pair(&session, closed, "2", b"x").await;
    let err = String::from_utf8(err).unwrap();
    assert!(
        err.contains(&format!("error forwarding port {closed} to pod {POD}")),
        "{err}"
    );
    let (a, _) = forward_pair(&session, port, "3", b"again").await;
    assert_eq!(a, b"echo:again");
    // Streams without a valid port are refused.
    let bad = session
        .open(
            vec![
                ("streamType".into(), "data".into()),
                ("port".into(), "0".into()),
            ],
            false,
        )
        .await;
    assert!(bad.is_err());
}

#[tokio::test]
async fn a_vanished_client_cancels_the_exec() {
    let (server, fake) = start().await;
    let url = exec_url(&server, &["sleep", "60"], false, false).await;
    let (_, _, session) = spdy_upgrade(&server, &url, &["v4.channel.k8s.io"]).await;
    let session = session.unwrap();
    let streams = (
        open(&session, "error", true).await,
        open(&session, "stdout", false).await,
        open(&session, "stderr", false).await,
    );
    logged(&fake, "exec ctr-1").await;
    drop(streams);
    drop(session);
    logged(&fake, r#"client gone, killing ["sleep", "60"]"#).await;
}

#[tokio::test]
async fn an_idle_session_ends_and_its_exec_is_killed() {
    let (server, fake) = start_idle(Duration::from_millis(500)).await;
    let url = exec_url(&server, &["sleep", "60"], false, false).await;
    let (_, _, session) = spdy_upgrade(&server, &url, &["v4.channel.k8s.io"]).await;
    let session = session.unwrap();
    let error = open(&session, "error", true).await;
    let _out = (
        open(&session, "stdout", false).await,
        open(&session, "stderr", false).await,
    );
    let t0 = Instant::now();
    logged(&fake, "exec ctr-1").await;
    logged(&fake, r#"client gone, killing ["sleep", "60"]"#).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    // The connection is closed: the client's streams end.
    let status = tokio::time::timeout(Duration::from_secs(5), read_all(error)).await;
    assert!(status.is_ok(), "the session was left open");
}

#[tokio::test]
async fn traffic_keeps_a_session_past_the_idle_timeout() {
    let (server, fake) = start_idle(Duration::from_millis(500)).await;
    let url = exec_url(&server, &["cat"], true, false).await;
    let (_, _, session) = spdy_upgrade(&server, &url, &["v4.channel.k8s.io"]).await;
    let session = session.unwrap();
    let _error = open(&session, "error", true).await;
    let mut stdin = open(&session, "stdin", false).await;
    let mut stdout = open(&session, "stdout", false).await;
    let _stderr = open(&session, "stderr", false).await;
    // Four times the timeout, with a line each way every 200 ms.
    for i in 0..10 {
        let line = format!("line {i}\n");
        stdin.write_all(line.as_bytes()).await.unwrap();
        let mut got = vec![0u8; line.len()];
        stdout.read_exact(&mut got).await.unwrap();
        assert_eq!(got, line.as_bytes());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !fake
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("client gone")),
        "{:?}",
        fake.seen.lock().unwrap()
    );
    // Then silence ends it.
    logged(&fake, r#"client gone, killing ["cat"]"#).await;
}

#[tokio::test]
async fn ipv6_urls_bracket_the_address() {
    let fake = std::sync::Arc::new(Fake::default());
    let Ok(server) =
        Server::start("::1".parse().unwrap(), 0, std::time::Duration::ZERO, fake).await
    else {
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    };
    let url = exec_url(&server, &["true"], false, false).await;
    let port = server.local_addr().port();
    assert!(
        url.starts_with(&format!("http://[::1]:{port}/exec/")),
        "{url}"
    );
    let (status, _, session) = spdy_upgrade(&server, &url, &["v4.channel.k8s.io"]).await;
    assert_eq!(status, 101);
    let session = session.unwrap();
    let error = open(&session, "error", true).await;
    let stdout = open(&session, "stdout", false).await;
    let stderr = open(&session, "stderr", false).await;
    let (_, _, status) = tokio::join!(read_all(stdout), read_all(stderr), read_all(error));
    assert_eq!(json(&status)["status"], "Success");
}
