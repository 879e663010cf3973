//! Exec and attach sessions (Kubernetes "remotecommand") over SPDY and WebSocket.
//!
//! SPDY: the client opens one stream per standard stream, named by the `streamType` header
//! (`error`, `stdin`, `stdout`, `stderr`, `resize`); the server waits for all it expects (30 s at
//! most), runs the command, closes the output streams, writes the outcome to the error stream
//! and ends the session. WebSocket: channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize
//! (v5 adds 255 = half-close a channel). v4 and later report the outcome as a `metav1.Status`
//! JSON object (exit code in a `NonZeroExitCode` status), older versions as plain error text.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::backend::{Backend, Io, Reader, TerminalSize, Writer};
use crate::pipe::ChanReader;
use crate::spdy::{Session, frame::header, frame::rst};
use crate::ws::{Channels, Framing, Routes, Ws};

/// How long the client has to open its streams (the kubelet's default).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the last frames may take to flush when a session ends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// remotecommand protocols over SPDY, most preferred first (v5 is v4 on SPDY).
pub const SPDY_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// remotecommand WebSocket subprotocols accepted ("" = the client named none).
pub const WS_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// What runs: a new process, or the container's main one.
#[derive(Debug, Clone)]
pub enum Target {
    Exec {
        container_id: String,
        cmd: Vec<String>,
    },
    Attach {
        container_id: String,
    },
}

/// Which streams the CRI request asked for.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

enum Outcome {
    Exited(i32),
    Done,
    Failed(String),
}

async fn run(
    backend: &dyn Backend,
    target: Target,
    tty: bool,
    io: Io,
    resize: mpsc::Receiver<TerminalSize>,
) -> Outcome {
    match target {
        Target::Exec { container_id, cmd } => {
            match backend.exec(&container_id, cmd, tty, io, resize).await {
                Ok(code) => Outcome::Exited(code),
                Err(e) => Outcome::Failed(format!("error executing command in container: {e}")),
            }
        }
        Target::Attach { container_id } => {
            match backend.attach(&container_id, tty, io, resize).await {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed(format!("error attaching to container: {e}")),
            }
        }
    }
}

/// The `metav1.Status` JSON of v4+ error streams.
fn status_json(outcome: &Outcome) -> Vec<u8> {
    let v = match outcome {
        Outcome::Exited(0) | Outcome::Done => {
            serde_json::json!({"metadata": {}, "status": "Success"})
        }
        Outcome::Exited(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {msg}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The plain text of pre-v4 error streams (nothing on success).
fn status_text(outcome: &Outcome) -> Option<Vec<u8>> {
    match outcome {
        Outcome::Exited(0) | Outcome::Done => None,
        Outcome::Exited(code) => Some(
            format!("command terminated with non-zero exit code: exit status {code}").into_bytes(),
        ),
        Outcome::Failed(msg) => Some(format!("Internal error occurred: {msg}").into_bytes()),
    }
}

/// Decodes the resize stream (a sequence of JSON objects) into `tx` until EOF.
pub async fn pump_resizes(mut r: impl AsyncRead + Unpin, tx: mpsc::Sender<TerminalSize>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
        let mut used = 0;
        loop {
            match it.next() {
                Some(Ok(size)) => {
                    used = it.byte_offset();
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => return, // garbage: stop resizing, as the kubelet does
                None => break,
            }
        }
        buf.drain(..used);
    }
}

fn resize_channel(source: Option<Reader>) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(16);
    if let Some(r) = source {
        tokio::spawn(pump_resizes(r, tx));
    }
    rx
}

/// Serves one exec/attach over an upgraded SPDY session with the negotiated `protocol`.
pub async fn serve_spdy(
    session: Session,
    protocol: &str,
    opts: Opts,
    target: Target,
    backend: Arc<dyn Backend>,
) {
    let version = match protocol {
        "v5.channel.k8s.io" | "v4.channel.k8s.io" => 4,
        "v3.channel.k8s.io" => 3,
        "v2.channel.k8s.io" => 2,
        _ => 1,
    };
    let resizable = opts.tty && version >= 3;
    let expected = 1 + [opts.stdin, opts.stdout, opts.stderr, resizable]
        .iter()
        .filter(|b| **b)
        .count();
    let (mut error, mut stdin, mut stdout, mut stderr, mut resize) = (None, None, None, None, None);
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    let mut received = 0;
    while received < expected {
        let s = tokio::select! {
            s = session.accept() => s,
            _ = &mut deadline => {
                tracing::warn!("timed out waiting for client to create streams");
                None
            }
        };
        let Some(s) = s else {
            session.shutdown(FLUSH_TIMEOUT).await;
            return;
        };
        tracing::debug!(id = s.id(), headers = ?s.headers(), "remotecommand stream");
        let slot = match header(s.headers(), "streamtype") {
            Some("error") => &mut error,
            Some("stdin") => &mut stdin,
            Some("stdout") => &mut stdout,
            Some("stderr") => &mut stderr,
            Some("resize") if version >= 3 => &mut resize,
            other => {
                tracing::debug!(stream_type = ?other, "unexpected remotecommand stream");
                s.reset(rst::PROTOCOL_ERROR).await;
                continue;
            }
        };
        if slot.is_some() || s.reply().await.is_err() {
            s.reset(rst::PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(s);
        received += 1;
    }
    if version == 1 {
        // channel.k8s.io never carried stdin data (kept as the kubelet does).
        stdin = None;
    }
    let boxed_r = |s: Option<crate::spdy::Stream>| s.map(|s| Box::pin(s) as Reader);
    let boxed_w = |s: Option<crate::spdy::Stream>| s.map(|s| Box::pin(s) as Writer);
    let io = Io {
        stdin: boxed_r(stdin),
        stdout: boxed_w(stdout),
        stderr: if opts.tty { None } else { boxed_w(stderr) },
        gone: session.ended(),
    };
    let resize = resize_channel(if opts.tty { boxed_r(resize) } else { None });
    let outcome = run(backend.as_ref(), target, opts.tty, io, resize).await;
    if let Some(mut e) = error {
        let msg = if version >= 4 {
            Some(status_json(&outcome))
        } else {
            status_text(&outcome)
        };
        if let Some(msg) = msg {
            let _ = e.write_all(&msg).await;
        }
        let _ = e.shutdown().await;
    }
    session.shutdown(FLUSH_TIMEOUT).await;
}

/// Serves one exec/attach over an upgraded WebSocket with the negotiated subprotocol.
pub async fn serve_ws(
    ws: Ws,
    protocol: &str,
    opts: Opts,
    target: Target,
    backend: Arc<dyn Backend>,
) {
    let framing = Framing::of(protocol);
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(64);
    let (resize_tx, resize_rx) = mpsc::channel::<Bytes>(16);
    let routes: Routes = vec![
        opts.stdin.then_some(stdin_tx),
        None,
        None,
        None,
        opts.tty.then_some(resize_tx),
    ];
    let ch = Channels::start(ws, framing, routes);
    // An empty message on the lowest writable channel tells the client the session is up.
    let first = if opts.stdout {
        1
    } else if opts.stderr {
        2
    } else {
        3
    };
    ch.send(first, &[]).await;
    let io = Io {
        stdin: opts
            .stdin
            .then(|| Box::pin(ChanReader::new(stdin_rx)) as Reader),
        stdout: opts.stdout.then(|| Box::pin(ch.writer(1)) as Writer),
        stderr: (opts.stderr && !opts.tty).then(|| Box::pin(ch.writer(2)) as Writer),
        gone: ch.ended(),
    };
    let resize = resize_channel(
        opts.tty
            .then(|| Box::pin(ChanReader::new(resize_rx)) as Reader),
    );
    let outcome = run(backend.as_ref(), target, opts.tty, io, resize).await;
    let v4 = protocol.starts_with("v4.") || protocol.starts_with("v5.");
    let msg = if v4 {
        Some(status_json(&outcome))
    } else {
        status_text(&outcome)
    };
    if let Some(msg) = msg {
        ch.send(3, &msg).await;
    }
    ch.close(FLUSH_TIMEOUT).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_objects() {
        let ok: serde_json::Value =
            serde_json::from_slice(&status_json(&Outcome::Exited(0))).unwrap();
        assert_eq!(ok, serde_json::json!({"metadata": {}, "status": "Success"}));
        let bad: serde_json::Value =
            serde_json::from_slice(&status_json(&Outcome::Exited(3))).unwrap();
        assert_eq!(bad["status"], "Failure");
        assert_eq!(bad["reason"], "NonZeroExitCode");
        assert_eq!(
            bad["details"]["causes"][0],
            serde_json::json!({"reason": "ExitCode", "message": "3"})
        );
        let err: serde_json::Value =
            serde_json::from_slice(&status_json(&Outcome::Failed("boom".into()))).unwrap();
        assert_eq!(
            (err["reason"].as_str(), err["code"].as_i64()),
            (Some("InternalError"), Some(500))
        );
        assert_eq!(status_text(&Outcome::Done), None);
        assert!(
            String::from_utf8(status_text(&Outcome::Exited(2)).unwrap())
                .unwrap()
                .contains("exit status 2")
        );
    }

    #[tokio::test]
    async fn resize_stream_is_parsed_across_reads() {
        let (mut w, r) = tokio::io::duplex(64);
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(pump_resizes(r, tx));
        w.write_all(br#"{"Width":80,"Height":24}{"Wid"#)
            .await
            .unwrap();
        assert_eq!(
            rx.recv().await,
            Some(TerminalSize {
                width: 80,
                height: 24
            })
        );
        w.write_all(br#"th":100,"Height":50}"#).await.unwrap();
        assert_eq!(
            rx.recv().await,
            Some(TerminalSize {
                width: 100,
                height: 50
            })
        );
        drop(w);
        assert_eq!(rx.recv().await, None);
        task.await.unwrap();
    }
}
