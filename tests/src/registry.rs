//! A real registry for tests: Debian's `docker-registry` (distribution 2.8)
//! on 127.0.0.1, a free port, a temporary storage directory, optionally
//! with htpasswd basic auth or bearer tokens from [`TokenServer`]; and a TCP proxy in front of it that can slow
//! the registry's answers down or stop them, to interrupt transfers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::token::TokenServer;
use crate::token::{ISSUER, SERVICE};

enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Token(&'a TokenServer),
}

/// A running `docker-registry`; killed (and its files removed) on drop.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Registry {
    /// Starts an anonymous registry.
    pub fn start(binary: &Path) -> Registry {
        Self::start_with(binary, Auth::None, None)
    }

    /// Starts a registry that wants `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_auth(binary: &Path, user: &str, password: &str) -> Registry {
        Self::start_with(binary, Auth::Basic(user, password), None)
    }

    /// Starts a registry that wants bearer tokens from `tokens`.
    pub fn start_with_token(binary: &Path, tokens: &TokenServer) -> Registry {
        Self::start_with(binary, Auth::Token(tokens), None)
    }

    /// Starts a registry serving HTTPS with this PEM certificate and key.
    pub fn start_with_tls(binary: &Path, cert: &Path, key: &Path) -> Registry {
        Self::start_with(binary, Auth::None, Some((cert, key)))
    }

    fn start_with(binary: &Path, auth: Auth, tls: Option<(&Path, &Path)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("store").display()
        );
        // Under `http:`, which the base config ends with.
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        match auth {
            Auth::None => {}
            Auth::Basic(user, password) => {
                let hash = bcrypt::hash(password, 5).expect("bcrypt");
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            Auth::Token(t) => config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                t.realm(),
                t.cert().display()
            )),
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new(binary)
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let r = Registry { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("docker-registry did not listen within 20s:\n{}", r.log());
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps the bytes of blob `digest`.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("store/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the registry process: a
    /// registry that stops answering, with its connections left open.
    pub fn freeze(&self, frozen: bool) {
        let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.freeze(false);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to a local port whose answers can be throttled.
pub struct Proxy {
    pub port: u16,
    /// Bytes per second from the server to the client; 0 = unlimited.
    rate: Arc<AtomicU64>,
    /// Connections still to be refused with a 503.
    failing: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// What a refused connection gets: a registry that is briefly down.
const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbusy, later";

impl Proxy {
    /// Proxies `127.0.0.1:<new port>` to 127.0.0.1:`to`.
    pub fn start(to: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = l.local_addr().expect("addr").port();
        l.set_nonblocking(true).expect("nonblocking");
        let rate = Arc::new(AtomicU64::new(0));
        let failing = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, f, s) = (rate.clone(), failing.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if f.load(Ordering::Relaxed) > 0 {
                            let (f, r) = (f.clone(), r.clone());
                            std::thread::spawn(move || refuse_or_pass(client, to, &f, r));
                            continue;
                        }
                        let r = r.clone();
                        std::thread::spawn(move || {
                            if let Ok(server) = TcpStream::connect(("127.0.0.1", to)) {
                                splice(client, server, r);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy {
            port,
            rate,
            failing,
            stop,
        }
    }

    /// Answers the next `n` registry requests (other than the `/v2/`
    /// probe) with `503 Service Unavailable` instead of passing them on.
    pub fn fail_next(&self, n: u64) {
        self.failing.store(n, Ordering::Relaxed);
    }

    /// Limits what the server sends to `bytes_per_sec` (0 = no limit).
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// While failing: the registry's `/v2/` probe is answered as the
/// registry would (clients treat any answer there as "no auth needed"),
/// every other request gets a 503 until `failing` runs out; each such
/// connection is closed, so the next request opens a new one. Once
/// `failing` is spent, the request is passed on.
fn refuse_or_pass(mut client: TcpStream, to: u16, failing: &AtomicU64, rate: Arc<AtomicU64>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    let _ = client.set_read_timeout(None);
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    if path == "/v2/" {
        let _ = client.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDocker-Distribution-Api-Version: registry/2.0\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        return;
    }
    if failing
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        let _ = client.write_all(UNAVAILABLE);
        return;
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", to)) else {
        return;
    };
    if server.write_all(&head).is_err() {
        return;
    }
    splice(client, server, rate);
}

/// Copies both ways until each side closes; what the server sends is
/// throttled to `rate`.
fn splice(client: TcpStream, server: TcpStream, rate: Arc<AtomicU64>) {
    let (c2, s2) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    std::thread::spawn(move || pump(c2, s2, None));
    pump(server, client, Some(rate));
}

fn pump(mut from: TcpStream, mut to: TcpStream, rate: Option<Arc<AtomicU64>>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(r) = &rate {
            let bps = r.load(Ordering::Relaxed);
            if bps > 0 {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / bps as f64));
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
