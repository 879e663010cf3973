//! Shared by the integration tests: a fake runtime behind the `Backend` seam, an echo TCP server,
//! and a small SPDY client (the crate's own framing, client role) speaking the upgrade handshake.
#![allow(dead_code)]

use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_stream::spdy::{Headers, Role, Session, Stream};
use berth_stream::{Backend, BackendError, Duplex, Io, Server, TerminalSize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The sandbox id the fake knows; port-forwards to any other fail.
pub const POD: &str = "pod-1";

/// Runs exec commands as host processes (the fake's "container" is the host), answers attach
/// with a greeting then echoes stdin, and forwards ports to 127.0.0.1. With a tty it mimics a
/// terminal's line discipline only as far as the tests need: ^D (0x04) ends stdin. The command
/// `resize-echo` prints the first terminal size it receives.
#[derive(Default)]
pub struct Fake {
    pub seen: Mutex<Vec<String>>,
}

async fn copy_stdin(
    mut from: Pin<Box<dyn AsyncRead + Send>>,
    mut to: impl AsyncWrite + Unpin,
    tty: bool,
) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &buf[..n];
        let (data, eof) = match (tty, data.iter().position(|b| *b == 4)) {
            (true, Some(i)) => (&data[..i], true),
            _ => (data, false),
        };
        if to.write_all(data).await.is_err() || eof {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn copy_out(
    mut from: impl AsyncRead + Unpin,
    to: Option<&mut Pin<Box<dyn AsyncWrite + Send>>>,
) {
    match to {
        Some(to) => {
            let _ = tokio::io::copy(&mut from, to).await;
        }
        None => {
            let _ = tokio::io::copy(&mut from, &mut tokio::io::sink()).await;
        }
    }
}

#[async_trait::async_trait]
impl Backend for Fake {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        mut io: Io,
        mut resize: mpsc::Receiver<TerminalSize>,
    ) -> Result<i32, BackendError> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("exec {container_id} {cmd:?} tty={tty}"));
        if cmd[0] == "resize-echo" {
            let size = resize.recv().await.ok_or("no resize")?;
            let out = io.stdout.as_mut().ok_or("no stdout")?;
            out.write_all(format!("size {}x{}\n", size.width, size.height).as_bytes())
                .await?;
            return Ok(0);
        }
        let mut child = tokio::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(if io.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin_task = match (io.stdin.take(), child.stdin.take()) {
            (Some(from), Some(to)) => Some(tokio::spawn(copy_stdin(from, to, tty))),
            _ => None,
        };
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let mut stdout = io.stdout.take();
        let mut stderr = io.stderr.take();
        // With a tty both outputs go to the terminal (stdout).
        let err_to = if tty { None } else { stderr.as_mut() };
        let gone = io.gone.clone();
        let wait = async {
            tokio::select! {
                status = child.wait() => status,
                _ = gone.cancelled() => {
                    self.seen.lock().unwrap().push(format!("client gone, killing {cmd:?}"));
                    child.kill().await?;
                    child.wait().await
                }
            }
        };
        let (status, _, _) =
            tokio::join!(wait, copy_out(out, stdout.as_mut()), copy_out(err, err_to));
        if let Some(t) = stdin_task {
            t.abort();
        }
        let status = status?;
        Ok(status
            .code()
            .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)))
    }

    async fn attach(
        &self,
        container_id: &str,
        tty: bool,
        mut io: Io,
        _resize: mpsc::Receiver<TerminalSize>,
    ) -> Result<(), BackendError> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("attach {container_id} tty={tty}"));
        if container_id != "ctr-1" {
            return Err(format!("container {container_id} not found").into());
        }
        let mut out = io.stdout.take().ok_or("no stdout")?;
        out.write_all(b"attached\n").await?;
        if let Some(mut stdin) = io.stdin.take() {
            let mut buf = [0u8; 4096];
            loop {
                let n = stdin.read(&mut buf).await?;
                let end = buf[..n].iter().position(|b| *b == 4 && tty);
                out.write_all(&buf[..end.unwrap_or(n)]).await?;
                if n == 0 || end.is_some() {
                    break;
                }
            }
        }
        Ok(())
    }

    async fn port_forward(
        &self,
        sandbox: &str,
        port: u16,
        mut stream: Pin<Box<dyn Duplex>>,
    ) -> Result<(), BackendError> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("port-forward {sandbox} {port}"));
        if sandbox != POD {
            return Err(format!("pod sandbox {sandbox} not found").into());
        }
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tokio::io::copy_bidirectional(&mut stream, &mut tcp).await?;
        Ok(())
    }
}

/// A TCP server on a free port that sends `echo:` on every connection, then echoes what it reads
/// as it reads it, and closes when its input ends.
pub async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = c.write_all(b"echo:").await;
                let (mut r, mut w) = c.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

pub async fn start() -> (Server, Arc<Fake>) {
    start_idle(Duration::ZERO).await
}

/// Wait until the fake has logged `what`.
pub async fn logged(fake: &Fake, what: &str) {
    for _ in 0..500 {
        if fake.seen.lock().unwrap().iter().any(|l| l.contains(what)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{what:?} not in {:?}", fake.seen.lock().unwrap());
}

/// A server whose sessions end after `idle` without traffic.
pub async fn start_idle(idle: Duration) -> (Server, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let server = Server::start("127.0.0.1".parse().unwrap(), 0, idle, fake.clone())
        .await
        .unwrap();
    (server, fake)
}

/// Status line and headers of an HTTP response read off `tcp` (nothing past the blank line).
pub async fn read_head(tcp: &mut TcpStream) -> (u16, Vec<(String, String)>) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tcp.read_u8().await.expect("response head");
        head.push(b);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// The path of a URL the server issued (`http://host:port/path`).
pub fn path(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap();
    &rest[rest.find('/').unwrap()..]
}

/// Upgrades to SPDY with the offered protocols; the status, headers and (on 101) a session.
pub async fn spdy_upgrade(
    server: &Server,
    url: &str,
    protocols: &[&str],
) -> (u16, Vec<(String, String)>, Option<Session>) {
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n",
        path(url),
        server.local_addr()
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let (status, headers) = read_head(&mut tcp).await;
    let session = (status == 101).then(|| Session::new(tcp, Role::Client));
    (status, headers, session)
}

pub fn hdr(name: &str, value: &str) -> Headers {
    vec![(name.to_string(), value.to_string())]
}

pub async fn open(session: &Session, stream_type: &str, fin: bool) -> Stream {
    session
        .open(hdr("streamType", stream_type), fin)
        .await
        .unwrap()
}

pub async fn read_all(mut s: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).await.unwrap();
    v
}

pub fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}
