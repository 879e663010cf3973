//! The HTTP server: issues URLs for CRI requests and upgrades the client's connection.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::cri;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header as h};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;

use crate::backend::Backend;
use crate::error::Error;
use crate::idle::Idle;
use crate::portforward as pf;
use crate::remotecommand::{self as rc, Opts, Target};
use crate::spdy::{Role, Session};
use crate::tokens::{Cache, Pending};

type Body = Full<Bytes>;

struct Inner {
    backend: Arc<dyn Backend>,
    cache: Cache,
    /// A session with no traffic this long ends (zero: never).
    idle_timeout: Duration,
}

/// A running streaming server; stops accepting when dropped (open sessions run to their end).
pub struct Server {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn invalid(msg: &str) -> Error {
    Error::InvalidArgument(msg.to_string())
}

fn check_stdio(
    container_id: &str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<(), Error> {
    if container_id.is_empty() {
        return Err(invalid("missing required container_id"));
    }
    if tty && stderr {
        return Err(invalid("tty and stderr cannot both be true"));
    }
    if !stdin && !stdout && !stderr {
        return Err(invalid("one of stdin, stdout, or stderr must be set"));
    }
    Ok(())
}

impl Server {
    /// Listens on `addr:port` (port 0 = a free port) and serves streaming sessions with `backend`;
    /// a session whose connection is idle for `idle_timeout` ends (zero: never).
    pub async fn start(
        addr: IpAddr,
        port: u16,
        idle_timeout: Duration,
        backend: Arc<dyn Backend>,
    ) -> Result<Self, Error> {
        let listener = TcpListener::bind((addr, port))
            .await
            .map_err(|source| Error::Bind { addr, port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, port, source })?;
        let inner = Arc::new(Inner {
            backend,
            cache: Cache::default(),
            idle_timeout,
        });
        let task = tokio::spawn(accept_loop(listener, inner.clone()));
        Ok(Self { addr, inner, task })
    }

    /// The address the server listens on (the actual port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self, kind: &str, pending: Pending) -> Result<String, Error> {
        let token = self
            .inner
            .cache
            .insert(pending)
            .ok_or(Error::TooManyPending)?;
        Ok(format!("http://{}/{kind}/{token}", self.addr))
    }

    /// Validates an `Exec` request as the kubelet does and returns its single-use URL.
    pub fn exec_url(&self, req: &cri::ExecRequest) -> Result<cri::ExecResponse, Error> {
        check_stdio(
            &req.container_id,
            req.stdin,
            req.stdout,
            req.stderr,
            req.tty,
        )?;
        if req.cmd.is_empty() {
            return Err(invalid("cmd must not be empty"));
        }
        Ok(cri::ExecResponse {
            url: self.url("exec", Pending::Exec(req.clone()))?,
        })
    }

    /// Validates an `Attach` request and returns its single-use URL.
    pub fn attach_url(&self, req: &cri::AttachRequest) -> Result<cri::AttachResponse, Error> {
        check_stdio(
            &req.container_id,
            req.stdin,
            req.stdout,
            req.stderr,
            req.tty,
        )?;
        Ok(cri::AttachResponse {
            url: self.url("attach", Pending::Attach(req.clone()))?,
        })
    }

    /// Validates a `PortForward` request and returns its single-use URL.
    pub fn port_forward_url(
        &self,
        req: &cri::PortForwardRequest,
    ) -> Result<cri::PortForwardResponse, Error> {
        if req.pod_sandbox_id.is_empty() {
            return Err(invalid("missing required pod_sandbox_id"));
        }
        if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Error::InvalidArgument(format!(
                "port {p} is out of range 1-65535"
            )));
        }
        Ok(cri::PortForwardResponse {
            url: self.url("portforward", Pending::PortForward(req.clone()))?,
        })
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // E.g. out of descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "stream server accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, Infallible>(handle(inner, req)) }
            });
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "stream server connection");
            }
        });
    }
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        h::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn has_token(headers: &HeaderMap, name: h::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Client protocols in its order of preference, from all values of `name` (comma-separated).
fn offered(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != http::Method::GET && req.method() != http::Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let mut parts = req.uri().path().trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let pending = match inner.cache.consume(token) {
        Some(p) => p,
        None => return text(StatusCode::NOT_FOUND, "404 page not found"),
    };
    let matches = matches!(
        (kind, &pending),
        ("exec", Pending::Exec(_))
            | ("attach", Pending::Attach(_))
            | ("portforward", Pending::PortForward(_))
    );
    if !matches {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    }
    let ws = req
        .headers()
        .get(h::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && has_token(req.headers(), h::CONNECTION, "upgrade");
    if ws {
        upgrade_ws(inner, req, pending)
    } else {
        upgrade_spdy(inner, req, pending)
    }
}

fn upgrade_spdy(inner: Arc<Inner>, req: Request<Incoming>, pending: Pending) -> Response<Body> {
    let supported: &[&str] = match pending {
        Pending::PortForward(_) => &pf::SPDY_PROTOCOLS,
        _ => &rc::SPDY_PROTOCOLS,
    };
    let client = offered(req.headers(), "x-stream-protocol-version");
    if client.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: header X-Stream-Protocol-Version does not exist in request",
        );
    }
    let Some(protocol) = client
        .iter()
        .find(|c| supported.contains(&c.as_str()))
        .cloned()
    else {
        let mut r = text(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports {client:?}, server accepts {supported:?}"
            ),
        );
        for s in supported {
            r.headers_mut().append(
                "x-accepted-stream-protocol-versions",
                HeaderValue::from_static(s),
            );
        }
        return r;
    };
    if !has_token(req.headers(), h::CONNECTION, "upgrade")
        || !has_token(req.headers(), h::UPGRADE, "spdy/3.1")
    {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        );
    }
    tracing::debug!(protocol = %protocol, path = %req.uri().path(), "SPDY/3.1 upgrade");
    let upgrade = hyper::upgrade::on(req);
    let proto = protocol.clone();
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => Idle::new(TokioIo::new(io), inner.idle_timeout),
            Err(e) => return tracing::debug!(error = %e, "SPDY upgrade"),
        };
        let session = Session::new(io, Role::Server);
        let backend = inner.backend.clone();
        match command(pending) {
            Ok((opts, target)) => rc::serve_spdy(session, &proto, opts, target, backend).await,
            Err(r) => pf::serve_spdy(session, r.pod_sandbox_id, backend).await,
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(h::CONNECTION, HeaderValue::from_static("Upgrade"));
    hs.insert(h::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if let Ok(v) = HeaderValue::from_str(&protocol) {
        hs.insert("x-stream-protocol-version", v);
    }
    r
}

fn upgrade_ws(inner: Arc<Inner>, req: Request<Incoming>, pending: Pending) -> Response<Body> {
    let Some(key) = req
        .headers()
        .get(h::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let client = offered(req.headers(), "sec-websocket-protocol");
    let tunnel = |c: &str| {
        c.strip_prefix(pf::TUNNEL_PREFIX)
            .is_some_and(|p| pf::SPDY_PROTOCOLS.contains(&p))
    };
    let chosen = match pending {
        Pending::PortForward(_) => client
            .iter()
            .find(|c| tunnel(c) || pf::WS_PROTOCOLS.contains(&c.as_str())),
        _ => client
            .iter()
            .find(|c| rc::WS_PROTOCOLS.contains(&c.as_str())),
    };
    let protocol = match (chosen, client.is_empty()) {
        (Some(p), _) => p.clone(),
        (None, true) => String::new(),
        (None, false) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("requested protocol(s) are not supported: {client:?}"),
            );
        }
    };
    if let Pending::PortForward(r) = &pending
        && !tunnel(&protocol)
        && (r.port.is_empty() || r.port.len() > 127)
    {
        return text(
            StatusCode::BAD_REQUEST,
            "port forwarding over WebSocket channels needs 1 to 127 ports in the request",
        );
    }
    tracing::debug!(protocol = %protocol, path = %req.uri().path(), "WebSocket upgrade");
    let upgrade = hyper::upgrade::on(req);
    let proto = protocol.clone();
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => Idle::new(TokioIo::new(io), inner.idle_timeout),
            Err(e) => return tracing::debug!(error = %e, "WebSocket upgrade"),
        };
        let ws = WebSocketStream::from_raw_socket(io, WsRole::Server, None).await;
        let backend = inner.backend.clone();
        match command(pending) {
            Ok((opts, target)) => rc::serve_ws(ws, &proto, opts, target, backend).await,
            Err(r) if tunnel(&proto) => {
                let session = Session::new(crate::ws::tunnel(ws), Role::Server);
                pf::serve_spdy(session, r.pod_sandbox_id, backend).await
            }
            Err(r) => {
                let ports = r
                    .port
                    .iter()
                    .filter_map(|p| u16::try_from(*p).ok())
                    .collect();
                pf::serve_ws(ws, &proto, ports, r.pod_sandbox_id, backend).await
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(h::CONNECTION, HeaderValue::from_static("Upgrade"));
    hs.insert(h::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        hs.insert(h::SEC_WEBSOCKET_ACCEPT, v);
    }
    if !protocol.is_empty()
        && let Ok(v) = HeaderValue::from_str(&protocol)
    {
        hs.insert(h::SEC_WEBSOCKET_PROTOCOL, v);
    }
    r
}

/// The streams and target of an exec or attach session, as both
/// transports serve them; a port-forward request is handed back.
fn command(p: Pending) -> Result<(Opts, Target), cri::PortForwardRequest> {
    match p {
        Pending::Exec(r) => Ok((
            Opts {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                tty: r.tty,
            },
            Target::Exec {
                container_id: r.container_id,
                cmd: r.cmd,
            },
        )),
        Pending::Attach(r) => Ok((
            Opts {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                tty: r.tty,
            },
            Target::Attach {
                container_id: r.container_id,
            },
        )),
        Pending::PortForward(r) => Err(r),
    }
}
