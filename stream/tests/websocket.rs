//! The streaming server driven by a WebSocket client (tokio-tungstenite), as client-go's
//! WebSocket executor (`v5.channel.k8s.io`) and port-forward tunnel do.

mod common;

use std::collections::BTreeMap;

use berth_proto::cri;
use berth_stream::spdy::{Role, Session};
use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    url: &str,
    protocol: &str,
) -> Result<(Client, Option<String>), tokio_tungstenite::tungstenite::Error> {
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    if !protocol.is_empty() {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    Ok((ws, chosen))
}

fn bin(channel: u8, data: &[u8]) -> Message {
    let mut v = vec![channel];
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// Every message per channel (binary framing) until the server closes; also the close code and
/// the first message received.
async fn collect(ws: &mut Client) -> (BTreeMap<u8, Vec<u8>>, Option<u16>, Option<Vec<u8>>) {
    let (mut chans, mut first) = (BTreeMap::new(), None);
    while let Some(msg) = ws.next().await {
        match msg.unwrap() {
            Message::Binary(b) => {
                first.get_or_insert_with(|| b.to_vec());
                chans
                    .entry(b[0])
                    .or_insert_with(Vec::new)
                    .extend_from_slice(&b[1..]);
            }
            Message::Close(c) => return (chans, c.map(|c| u16::from(c.code)), first),
            _ => {}
        }
    }
    (chans, None, first)
}

fn exec(server: &berth_stream::Server, cmd: &[&str], stdin: bool, tty: bool) -> String {
    let req = cri::ExecRequest {
        container_id: "ctr-1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    };
    server.exec_url(&req).unwrap().url
}

#[tokio::test]
async fn v5_exec_with_stdin_close_signal() {
    let (server, _) = start().await;
    let url = exec(&server, &["cat"], true, false);
    let (mut ws, chosen) = connect(&url, "v5.channel.k8s.io, v4.channel.k8s.io")
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("v5.channel.k8s.io"));
    ws.send(bin(0, b"hello ")).await.unwrap();
    ws.send(bin(0, b"world")).await.unwrap();
    // v5: half-close stdin, which is what makes cat finish.
    ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
        .await
        .unwrap();
    let (chans, close, first) = collect(&mut ws).await;
    assert_eq!(
        first,
        Some(vec![1]),
        "an empty stdout message announces the session"
    );
    assert_eq!(chans[&1], b"hello world");
    assert_eq!(json(&chans[&3])["status"], "Success");
    assert_eq!(close, Some(1000));
}

#[tokio::test]
async fn v4_exec_exit_code_and_stderr() {
    let (server, _) = start().await;
    let url = exec(
        &server,
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
        false,
        false,
    );
    let (mut ws, chosen) = connect(&url, "v4.channel.k8s.io").await.unwrap();
    assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
    let (chans, close, _) = collect(&mut ws).await;
    assert_eq!(chans[&1], b"out\n");
    assert_eq!(chans[&2], b"err\n");
    let status = json(&chans[&3]);
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "7");
    assert_eq!(close, Some(1000));
}

#[tokio::test]
async fn tty_resize_on_channel_4() {
    let (server, _) = start().await;
    let url = exec(&server, &["resize-echo"], true, true);
    let (mut ws, _) = connect(&url, "v5.channel.k8s.io").await.unwrap();
    ws.send(bin(4, br#"{"Width":100,"Height":30}"#))
        .await
        .unwrap();
    let (chans, _, _) = collect(&mut ws).await;
    assert_eq!(chans[&1], b"size 100x30\n");
    assert!(!chans.contains_key(&2));
}

#[tokio::test]
async fn base64_and_legacy_channel_protocols() {
    let (server, _) = start().await;
    let url = exec(
        &server,
        &["sh", "-c", "printf 'a\\001b'; exit 1"],
        false,
        false,
    );
    let (mut ws, chosen) = connect(&url, "v4.base64.channel.k8s.io").await.unwrap();
    assert_eq!(chosen.as_deref(), Some("v4.base64.channel.k8s.io"));
    let mut texts = Vec::new();
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            texts.push(t.to_string());
        }
    }
    assert_eq!(texts[0], "1", "empty base64 message on stdout first");
    assert!(texts.contains(&"1YQFi".to_string()), "{texts:?}");
    assert!(texts.iter().any(|t| t.starts_with('3')), "{texts:?}");

    // channel.k8s.io (pre-v4): errors are plain text.
    let url = exec(&server, &["sh", "-c", "exit 4"], false, false);
    let (mut ws, _) = connect(&url, "channel.k8s.io").await.unwrap();
    let (chans, _, _) = collect(&mut ws).await;
    assert!(String::from_utf8_lossy(&chans[&3]).contains("exit status 4"));

    let url = exec(&server, &["true"], false, false);
    match connect(&url, "v9.channel.k8s.io").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!(
            "unsupported subprotocol accepted: {:?}",
            other.map(|(_, p)| p)
        ),
    }
}

#[tokio::test]
async fn attach_over_websocket() {
    let (server, _) = start().await;
    let req = cri::AttachRequest {
        container_id: "ctr-1".into(),
        stdin: true,
        tty: true,
        stdout: true,
        stderr: false,
    };
    let url = server.attach_url(&req).unwrap().url;
    let (mut ws, _) = connect(&url, "v5.channel.k8s.io").await.unwrap();
    ws.send(bin(0, b"line\x04ignored")).await.unwrap();
    let (chans, _, _) = collect(&mut ws).await;
    assert_eq!(chans[&1], b"attached\nline");
    assert_eq!(json(&chans[&3])["status"], "Success");
}

#[tokio::test]
async fn port_forward_websocket_channels() {
    let (server, fake) = start().await;
    let port = echo_server().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let req = cri::PortForwardRequest {
        pod_sandbox_id: POD.into(),
        port: vec![i32::from(port), i32::from(closed)],
    };
    let url = server.port_forward_url(&req).unwrap().url;
    let (mut ws, chosen) = connect(&url, "v4.channel.k8s.io").await.unwrap();
    assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
    // The server opens with each port (u16 LE) on the port's data and error channels.
    let mut prefixes = Vec::new();
    for _ in 0..4 {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) => prefixes.push(b.to_vec()),
            other => panic!("{other:?}"),
        }
    }
    let (p, c) = (port.to_le_bytes(), closed.to_le_bytes());
    assert_eq!(
        prefixes,
        vec![
            vec![0, p[0], p[1]],
            vec![1, p[0], p[1]],
            vec![2, c[0], c[1]],
            vec![3, c[0], c[1]]
        ]
    );
    ws.send(bin(0, b"over websocket")).await.unwrap();
    let mut chans: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    while !chans.contains_key(&3) || chans.get(&0).map(Vec::len) != Some(19) {
        if let Message::Binary(b) = ws.next().await.unwrap().unwrap() {
            chans.entry(b[0]).or_default().extend_from_slice(&b[1..]);
        }
    }
    let err = String::from_utf8_lossy(&chans[&3]).to_string();
    assert!(
        err.contains(&format!("error forwarding port {closed}")),
        "{err}"
    );
    assert_eq!(chans[&0], b"echo:over websocket");
    assert!(
        fake.seen
            .lock()
            .unwrap()
            .contains(&format!("port-forward {POD} {port}"))
    );
}

#[tokio::test]
async fn port_forward_spdy_tunnelled_in_websocket() {
    let (server, _) = start().await;
    let port = echo_server().await;
    let req = cri::PortForwardRequest {
        pod_sandbox_id: POD.into(),
        port: vec![],
    };
    let url = server.port_forward_url(&req).unwrap().url;
    let (ws, chosen) = connect(&url, "SPDY/3.1+portforward.k8s.io").await.unwrap();
    assert_eq!(chosen.as_deref(), Some("SPDY/3.1+portforward.k8s.io"));
    let session = Session::new(berth_stream::ws::tunnel(ws), Role::Client);
    let headers = |t: &str| {
        vec![
            ("streamType".to_string(), t.to_string()),
            ("port".to_string(), port.to_string()),
            ("requestID".to_string(), "0".to_string()),
        ]
    };
    let error = session.open(headers("error"), true).await.unwrap();
    let mut data = session.open(headers("data"), false).await.unwrap();
    data.write_all(b"tunnelled").await.unwrap();
    data.shutdown().await.unwrap();
    let mut out = Vec::new();
    data.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"echo:tunnelled");
    assert_eq!(read_all(error).await, b"");
}

#[tokio::test]
async fn an_idle_websocket_session_ends_and_its_exec_is_killed() {
    let (server, fake) = start_idle(std::time::Duration::from_millis(500)).await;
    let url = exec(&server, &["sleep", "60"], false, false);
    let (mut ws, _) = connect(&url, "v5.channel.k8s.io").await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Binary(Bytes::from_static(&[1]))
    );
    let t0 = std::time::Instant::now();
    logged(&fake, r#"client gone, killing ["sleep", "60"]"#).await;
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    // The server closed the connection: the client's reads end.
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the session was left open");
}

#[tokio::test]
async fn a_vanished_websocket_client_cancels_the_exec() {
    let (server, fake) = start().await;
    let url = exec(&server, &["sleep", "60"], false, false);
    let (mut ws, _) = connect(&url, "v5.channel.k8s.io").await.unwrap();
    // The session is up once the server's first (empty stdout) message arrives.
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Binary(Bytes::from_static(&[1]))
    );
    drop(ws);
    logged(&fake, "client gone").await;
}
