//! CRI streaming end to end: the URLs berthd's `Exec`, `Attach` and
//! `PortForward` RPCs return, driven over WebSocket (tokio-tungstenite, as
//! client-go's WebSocket executor and port-forward tunnel) and over SPDY/3.1
//! (berth-stream's own session in client role, as client-go's SPDY
//! executor), against real containers of a pod on the host network of a
//! private network + mount namespace. Checked: exec output, stderr and exit
//! code (v5 WebSocket status, v4 SPDY status), stdin and its v5 close
//! signal, port forwarding to a busybox `nc` listening inside the pod (bytes
//! both ways), attach to a container's `sh` (stdin in, stdout out), and
//! the rotation of the output file berthd keeps for a container without a
//! log path (what attach reads).

// Shared with cri_containers, which uses the helpers this file does not.
#[allow(dead_code)]
mod cri_support;

use berth_proto::cri::{self as c};
use berth_stream::spdy::{Role, Session, Stream};
use cri_support::*;
use futures::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Bounds every wait on the streams, so that a hang fails instead.
const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn exec_attach_port_forward() {
    if !body_here("exec_attach_port_forward") {
        return;
    }
    block_on(body());
}

async fn body() {
    let pod = Pod::start().await;
    let mut rt = pod.rt().await;
    let (ctr, _) = pod
        .run_running(&mut rt, pod.config("sleeper", &["sleep", "3600"]))
        .await;

    ws_exec(&mut rt, &ctr).await;
    ws_exec_stdin(&mut rt, &ctr).await;
    spdy_exec(&mut rt, &ctr).await;
    ws_port_forward(&pod, &mut rt).await;
    spdy_attach(&pod, &mut rt).await;
    unlogged_output_is_rotated(&pod, &mut rt).await;
}

/// A container without a log path writes to berthd's own file (what
/// Attach reads): rotated at 10 MiB with one older file kept, so it cannot
/// fill the disk.
async fn unlogged_output_is_rotated(pod: &Pod, rt: &mut Rt) {
    let mut config = pod.config(
        "chatty",
        &[
            "sh",
            "-c",
            "head -c 25000000 /dev/zero | tr '\\0' x | fold -w 999; echo; echo done; exec sleep 3600",
        ],
    );
    config.log_path = String::new();
    let (ctr, _) = pod.run_running(rt, config).await;
    let dir = pod.d.root().join("cri/output").join(&ctr);
    let (log, old) = (dir.join("output.log"), dir.join("output.log.1"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log).is_ok_and(|s| s.contains(" stdout F done\n")) {
        if Instant::now() > deadline {
            let files: Vec<(String, u64)> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| {
                            let n = e.file_name().to_string_lossy().into_owned();
                            (n, e.metadata().map_or(0, |m| m.len()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let text = std::fs::read(&log).unwrap_or_default();
            let tail =
                String::from_utf8_lossy(&text[text.len().saturating_sub(300)..]).into_owned();
            panic!(
                "no \"done\" in {}: files {files:?}, ends {tail:?}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    // Each file stops at the first line past 10 MiB; 25 MB made two
    // rotations, the oldest file is gone.
    for p in [&log, &old] {
        assert!(
            (1..(10 << 20) + 1100).contains(&size(p)),
            "{}: {} bytes",
            p.display(),
            size(p)
        );
    }
    assert!(!dir.join("output.log.2").exists());
    assert!(size(&old) > 10 << 20, "output.log.1 is a whole file");
}

fn exec_req(id: &str, cmd: &[&str], stdin: bool) -> c::ExecRequest {
    c::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: false,
        stdin,
        stdout: true,
        stderr: true,
    }
}

async fn exec_url(rt: &mut Rt, req: c::ExecRequest) -> String {
    rt.exec(req).await.expect("Exec").into_inner().url
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn ws_connect(url: &str, protocol: &str) -> Ws {
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).expect("header"),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().expect("ascii")),
        Some(protocol)
    );
    ws
}

fn bin(channel: u8, data: &[u8]) -> Message {
    let mut v = vec![channel];
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// Every binary message per channel until the server closes.
async fn ws_collect(ws: &mut Ws) -> BTreeMap<u8, Vec<u8>> {
    let mut chans = BTreeMap::new();
    let all = async {
        while let Some(msg) = ws.next().await {
            match msg.expect("websocket message") {
                Message::Binary(b) if !b.is_empty() => chans
                    .entry(b[0])
                    .or_insert_with(Vec::new)
                    .extend_from_slice(&b[1..]),
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(LIMIT, all)
        .await
        .expect("the session ends");
    chans
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

fn text(b: Option<&Vec<u8>>) -> String {
    String::from_utf8_lossy(b.map(Vec::as_slice).unwrap_or_default()).into_owned()
}

async fn ws_exec(rt: &mut Rt, ctr: &str) {
    let url = exec_url(
        rt,
        exec_req(ctr, &["sh", "-c", "echo out; echo err >&2; exit 3"], false),
    )
    .await;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    let chans = ws_collect(&mut ws).await;
    assert_eq!(text(chans.get(&1)), "out\n", "{chans:?}");
    assert_eq!(text(chans.get(&2)), "err\n", "{chans:?}");
    let status = json(chans.get(&3).expect("a status on the error channel"));
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
}

async fn ws_exec_stdin(rt: &mut Rt, ctr: &str) {
    let url = exec_url(rt, exec_req(ctr, &["cat"], true)).await;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    ws.send(bin(0, b"through ")).await.expect("send");
    ws.send(bin(0, b"berthd\n")).await.expect("send");
    // v5's close signal for stdin (channel 0): cat sees EOF and ends.
    ws.send(bin(255, &[0])).await.expect("send close");
    let chans = ws_collect(&mut ws).await;
    assert_eq!(text(chans.get(&1)), "through berthd\n", "{chans:?}");
    let status = json(chans.get(&3).expect("a status on the error channel"));
    assert_eq!(status["status"], "Success", "{status}");
}

/// An SPDY/3.1 session (client role) on a URL berthd issued, after the
/// HTTP upgrade offering `protocol`.
async fn spdy_connect(url: &str, protocol: &str) -> Session {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut tcp = TcpStream::connect(host).await.expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.expect("response head"));
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains(&format!("x-stream-protocol-version: {protocol}")),
        "{head}"
    );
    Session::new(tcp, Role::Client)
}

async fn open(s: &Session, kind: &str, fin: bool) -> Stream {
    s.open(vec![("streamType".to_string(), kind.to_string())], fin)
        .await
        .unwrap_or_else(|e| panic!("open {kind}: {e}"))
}

async fn read_all(mut s: Stream) -> Vec<u8> {
    let mut v = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut v))
        .await
        .expect("the stream ends")
        .expect("read");
    v
}

async fn spdy_exec(rt: &mut Rt, ctr: &str) {
    let url = exec_url(
        rt,
        exec_req(ctr, &["sh", "-c", "echo out; echo err >&2; exit 3"], false),
    )
    .await;
    let session = spdy_connect(&url, "v4.channel.k8s.io").await;
    let error = open(&session, "error", true).await;
    let stdout = open(&session, "stdout", false).await;
    let stderr = open(&session, "stderr", false).await;
    let (out, err, status) = tokio::join!(read_all(stdout), read_all(stderr), read_all(error));
    assert_eq!(String::from_utf8_lossy(&out), "out\n");
    assert_eq!(String::from_utf8_lossy(&err), "err\n");
    let status = json(&status);
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
}

/// `port` in LISTEN (0A) in the pod's /proc/net/tcp{,6}, seen from `ctr`
/// (busybox nc listens on IPv6 when it can).
async fn wait_listening(rt: &mut Rt, ctr: &str, port: u16) {
    let pattern = format!(":{port:04X} [0:]+ 0A");
    let start = Instant::now();
    loop {
        let r = exec_sync(
            rt,
            ctr,
            &["grep", "-qE", &pattern, "/proc/net/tcp", "/proc/net/tcp6"],
            5,
        )
        .await
        .expect("ExecSync");
        if r.exit_code == 0 {
            return;
        }
        if start.elapsed() > LIMIT {
            let r = exec_sync(rt, ctr, &["cat", "/proc/net/tcp", "/proc/net/tcp6"], 5).await;
            panic!("nothing listens on {port}: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ws_port_forward(pod: &Pod, rt: &mut Rt) {
    const PORT: u16 = 8081;
    // A line-echo server: busybox nc's input is what the loop writes back.
    let script = format!(
        "mkfifo /tmp/f; nc -l -p {PORT} </tmp/f | \
         while read l; do echo \"got:$l\"; done >/tmp/f; sleep 3600"
    );
    let server = pod
        .run(rt, pod.config("echo", &["sh", "-c", &script]))
        .await;
    wait_listening(rt, &server, PORT).await;
    let url = rt
        .port_forward(c::PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![i32::from(PORT)],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let mut ws = ws_connect(&url, "v4.channel.k8s.io").await;
    // Each channel opens with its port, u16 little endian.
    let p = PORT.to_le_bytes();
    let mut prefixes = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(LIMIT, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => prefixes.push(b.to_vec()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(prefixes, vec![vec![0, p[0], p[1]], vec![1, p[0], p[1]]]);
    ws.send(bin(0, b"one\n")).await.expect("send");
    ws.send(bin(0, b"two\n")).await.expect("send");
    let mut chans: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    let want = b"got:one\ngot:two\n";
    let read = async {
        while chans.get(&0).map(Vec::len).unwrap_or(0) < want.len() {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                    chans.entry(b[0]).or_default().extend_from_slice(&b[1..])
                }
                Some(Ok(_)) => {}
                other => panic!("{other:?} ({chans:?})"),
            }
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .unwrap_or_else(|_| panic!("no echo: {chans:?}"));
    assert_eq!(text(chans.get(&0)), "got:one\ngot:two\n", "{chans:?}");
    assert_eq!(text(chans.get(&1)), "", "no error: {chans:?}");
    let _ = ws.close(None).await;
}

async fn spdy_attach(pod: &Pod, rt: &mut Rt) {
    let mut config = pod.config("shell", &["sh"]);
    config.stdin = true;
    let (ctr, _) = pod.run_running(rt, config).await;
    let url = rt
        .attach(c::AttachRequest {
            container_id: ctr.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect("Attach")
        .into_inner()
        .url;
    let session = spdy_connect(&url, "v4.channel.k8s.io").await;
    let _error = open(&session, "error", true).await;
    let mut stdin = open(&session, "stdin", false).await;
    let mut stdout = open(&session, "stdout", false).await;
    let _stderr = open(&session, "stderr", false).await;
    // Output comes from the container's log as it grows: say it again
    // until the follower has caught up with a line written after it began.
    let mut out = Vec::new();
    let start = Instant::now();
    while !String::from_utf8_lossy(&out).contains("hello") {
        assert!(
            start.elapsed() < LIMIT,
            "no hello on attach stdout: {:?}\n{}",
            String::from_utf8_lossy(&out),
            pod.d.log()
        );
        stdin.write_all(b"echo hello\n").await.expect("stdin");
        let mut buf = [0u8; 256];
        if let Ok(n) = tokio::time::timeout(Duration::from_millis(500), stdout.read(&mut buf)).await
        {
            let n = n.expect("read stdout");
            assert!(n > 0, "stdout ended: {:?}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
    }
    // The shell reads what attach wrote to its stdin: it exits with our code.
    stdin.write_all(b"exit 7\n").await.expect("stdin");
    let s = wait_state(
        rt,
        &ctr,
        c::ContainerState::ContainerExited,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(s.exit_code, 7, "{s:?}");
}
