//! A small ttrpc implementation: the framing containerd's shims speak over a
//! unix socket, a multiplexing client and a server dispatching to generated
//! service adapters.
//!
//! Frame: a 10-byte header (u32 BE payload length, u32 BE stream id, u8 type
//! 1=request 2=response 3=data, u8 flags) followed by the payload, at most
//! 4 MiB. Request and response payloads are the `ttrpc.Request` /
//! `ttrpc.Response` protobuf messages. Clients use odd stream ids.

use crate::pb::google::rpc::Status as RpcStatus;
use crate::pb::ttrpc::{KeyValue, Request, Response};
use bytes::Bytes;
use prost::Message;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Length of a frame header.
pub const HEADER_LEN: usize = 10;
/// Largest payload either side accepts.
pub const MAX_MESSAGE: usize = 4 << 20;
/// Frame type of a request.
pub const TYPE_REQUEST: u8 = 1;
/// Frame type of a response.
pub const TYPE_RESPONSE: u8 = 2;
/// Frame type of a stream data message (unused by unary services).
pub const TYPE_DATA: u8 = 3;

/// Status codes, re-exported for users without a direct tonic dependency.
pub use tonic::Code;

/// A boxed, sendable future, as returned by [`Service::call`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: u32,
    pub stream_id: u32,
    pub kind: u8,
    pub flags: u8,
}

impl Header {
    /// The header's wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&self.length.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        b[8] = self.kind;
        b[9] = self.flags;
        b
    }

    /// Parses wire bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            length: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            stream_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind: b[8],
            flags: b[9],
        }
    }
}

/// One frame read off the wire.
#[derive(Debug)]
pub struct Frame {
    pub header: Header,
    /// The payload, or `None` when it exceeded [`MAX_MESSAGE`] and was skipped.
    pub payload: Option<Vec<u8>>,
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
/// An oversized payload is read past (so the stream stays in sync) and
/// reported as `payload: None`.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut hb = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut hb[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "ttrpc: connection closed inside a frame header",
            ));
        }
        got += n;
    }
    let header = Header::decode(&hb);
    let len = header.length as usize;
    if len > MAX_MESSAGE {
        let skipped = tokio::io::copy(&mut r.take(len as u64), &mut tokio::io::sink()).await?;
        if skipped != len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "ttrpc: connection closed inside an oversized frame",
            ));
        }
        return Ok(Some(Frame {
            header,
            payload: None,
        }));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some(Frame {
        header,
        payload: Some(payload),
    }))
}

/// Writes one frame (header and payload in a single write).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    stream_id: u32,
    kind: u8,
    payload: &[u8],
) -> io::Result<()> {
    if payload.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "ttrpc: message of {} bytes exceeds the {MAX_MESSAGE}-byte limit",
                payload.len()
            ),
        ));
    }
    // At most MAX_MESSAGE (4 MiB): checked above.
    #[allow(clippy::cast_possible_truncation)]
    let length = payload.len() as u32;
    let header = Header {
        length,
        stream_id,
        kind,
        flags: 0,
    };
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&header.encode());
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    w.flush().await
}

/// The outcome of a failed call, carried as `google.rpc.Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    /// A status with the given code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The answer for a method this server does not implement.
    pub fn unimplemented(method: &str) -> Self {
        Self::new(Code::Unimplemented, format!("{method} is not implemented"))
    }

    /// A status from an error kind.
    pub fn from_kind(kind: crate::errdefs::Kind, message: impl Into<String>) -> Self {
        Self::new(kind.code(), message)
    }

    /// The error kind of this status.
    pub fn kind(&self) -> crate::errdefs::Kind {
        crate::errdefs::Kind::from_code(self.code)
    }

    fn to_proto(&self) -> RpcStatus {
        RpcStatus {
            code: self.code as i32,
            message: self.message.clone(),
            details: vec![],
        }
    }

    fn from_proto(s: &RpcStatus) -> Option<Self> {
        let code = Code::from_i32(s.code);
        (code != Code::Ok).then(|| Self::new(code, s.message.clone()))
    }
}

impl crate::errdefs::HasKind for Status {
    fn kind(&self) -> crate::errdefs::Kind {
        Status::kind(self)
    }
}

impl From<Status> for tonic::Status {
    fn from(s: Status) -> Self {
        tonic::Status::new(s.code, s.message)
    }
}

/// Per-call metadata and deadline.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub metadata: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

impl Context {
    /// A context carrying the namespace header shims and daemons expect.
    pub fn with_namespace(ns: &str) -> Self {
        Self {
            metadata: vec![(crate::NAMESPACE_TTRPC_HEADER.to_string(), ns.to_string())],
            timeout: None,
        }
    }

    /// The first value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Sets a deadline for the call.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
}

/// Decodes a request payload, answering `InvalidArgument` on bad bytes.
pub fn decode<M: Message + Default>(payload: &[u8]) -> Result<M, Status> {
    M::decode(payload).map_err(|e| Status::new(Code::InvalidArgument, format!("decode: {e}")))
}

/// One ttrpc service as the server sees it (implemented by generated code).
pub trait Service: Send + Sync + 'static {
    /// The fully qualified service name, e.g. `containerd.task.v2.Task`.
    fn name(&self) -> &'static str;
    /// Runs `method` on an encoded request; returns the encoded response.
    fn call(
        &self,
        ctx: Context,
        method: &str,
        payload: Bytes,
    ) -> BoxFuture<Result<Vec<u8>, Status>>;
}

/// A ttrpc server: a set of services served on unix sockets.
#[derive(Default, Clone)]
pub struct Server {
    services: HashMap<&'static str, Arc<dyn Service>>,
}

impl Server {
    /// An empty server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service.
    pub fn register<S: Service>(mut self, service: S) -> Self {
        self.services.insert(service.name(), Arc::new(service));
        self
    }

    /// Accepts connections until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let this = Arc::new(self);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                accepted = listener.accept() => {
                    let (stream, _) = accepted?;
                    tokio::spawn(this.clone().serve_conn(stream));
                }
            }
        }
    }

    /// Serves one connection until the peer closes it.
    pub async fn serve_conn(self: Arc<Self>, stream: UnixStream) {
        let (mut rd, mut wr) = stream.into_split();
        // Responses funnel through one writer so frames never interleave.
        let (tx, mut rx) = mpsc::channel::<(u32, Vec<u8>)>(64);
        let writer = tokio::spawn(async move {
            while let Some((id, payload)) = rx.recv().await {
                if write_frame(&mut wr, id, TYPE_RESPONSE, &payload)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        loop {
            let frame = match read_frame(&mut rd).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("ttrpc: connection error: {e}");
                    break;
                }
            };
            if frame.header.kind != TYPE_REQUEST {
                continue; // streams are not used by the services we serve
            }
            let id = frame.header.stream_id;
            let tx = tx.clone();
            let Some(payload) = frame.payload else {
                let st = Status::new(
                    Code::ResourceExhausted,
                    format!(
                        "message length {} exceeds maximum message size of {MAX_MESSAGE}",
                        frame.header.length
                    ),
                );
                let _ = tx.send((id, response(Err(st)))).await;
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let out = this.dispatch(&payload).await;
                let _ = tx.send((id, response(out))).await;
            });
        }
        drop(tx);
        let _ = writer.await;
    }

    async fn dispatch(&self, payload: &[u8]) -> Result<Vec<u8>, Status> {
        let req: Request = decode(payload)?;
        let service = self.services.get(req.service.as_str()).ok_or_else(|| {
            Status::new(
                Code::Unimplemented,
                format!("service {} is not served here", req.service),
            )
        })?;
        let ctx = Context {
            metadata: req
                .metadata
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect(),
            timeout: (req.timeout_nano > 0).then(|| Duration::from_nanos(req.timeout_nano as u64)),
        };
        let timeout = ctx.timeout;
        let fut = service.call(ctx, &req.method, Bytes::from(req.payload));
        match timeout {
            Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| {
                Status::new(Code::DeadlineExceeded, format!("{} timed out", req.method))
            })?,
            None => fut.await,
        }
    }
}

fn response(out: Result<Vec<u8>, Status>) -> Vec<u8> {
    let resp = match out {
        Ok(payload) => Response {
            status: Some(RpcStatus::default()),
            payload,
        },
        Err(st) => Response {
            status: Some(st.to_proto()),
            payload: vec![],
        },
    };
    resp.encode_to_vec()
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Result<Response, Status>>>>>;

struct ClientInner {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    next_id: AtomicU32,
    pending: Pending,
    closed: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A ttrpc client over one connection; clones share it, calls multiplex.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl Client {
    /// Dials a unix socket; `addr` may carry a `unix://` prefix.
    pub async fn connect(addr: &str) -> io::Result<Client> {
        let stream = UnixStream::connect(socket_path(addr)).await?;
        Ok(Self::new(stream))
    }

    /// Wraps a connected stream (spawns the response reader).
    pub fn new(stream: UnixStream) -> Client {
        let (mut rd, wr) = stream.into_split();
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (p, c) = (pending.clone(), closed.clone());
        let reader = tokio::spawn(async move {
            loop {
                let frame = match read_frame(&mut rd).await {
                    Ok(Some(f)) => f,
                    _ => break,
                };
                if frame.header.kind != TYPE_RESPONSE {
                    continue;
                }
                let waiter = p
                    .lock()
                    .ok()
                    .and_then(|mut m| m.remove(&frame.header.stream_id));
                let Some(waiter) = waiter else { continue };
                let out = match frame.payload {
                    None => Err(Status::new(
                        Code::ResourceExhausted,
                        format!(
                            "response of {} bytes exceeds the limit",
                            frame.header.length
                        ),
                    )),
                    Some(b) => decode::<Response>(&b),
                };
                let _ = waiter.send(out);
            }
            c.store(true, Ordering::SeqCst);
            // Fail every call still waiting: the connection is gone.
            if let Ok(mut m) = p.lock() {
                for (_, w) in m.drain() {
                    let _ = w.send(Err(closed_status()));
                }
            }
        });
        Client {
            inner: Arc::new(ClientInner {
                writer: tokio::sync::Mutex::new(wr),
                next_id: AtomicU32::new(1),
                pending,
                closed,
                reader,
            }),
        }
    }

    /// True once the connection has been closed by either side.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Makes one unary call.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        ctx: Context,
        service: &str,
        method: &str,
        req: &Req,
    ) -> Result<Resp, Status> {
        if self.is_closed() {
            return Err(closed_status());
        }
        let id = self.inner.next_id.fetch_add(2, Ordering::SeqCst);
        let request = Request {
            service: service.to_string(),
            method: method.to_string(),
            payload: req.encode_to_vec(),
            // Saturates: a timeout past 2262 is no timeout in practice.
            timeout_nano: ctx
                .timeout
                .map_or(0, |t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX)),
            metadata: ctx
                .metadata
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        };
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.inner.pending.lock() {
            m.insert(id, tx);
        }
        let sent = {
            let mut w = self.inner.writer.lock().await;
            write_frame(&mut *w, id, TYPE_REQUEST, &request.encode_to_vec()).await
        };
        if let Err(e) = sent {
            if let Ok(mut m) = self.inner.pending.lock() {
                m.remove(&id);
            }
            return Err(Status::new(
                Code::Unavailable,
                format!("ttrpc: send failed: {e}"),
            ));
        }
        let wait = async { rx.await.unwrap_or_else(|_| Err(closed_status())) };
        let resp = match ctx.timeout {
            Some(t) => match tokio::time::timeout(t, wait).await {
                Ok(r) => r,
                Err(_) => {
                    if let Ok(mut m) = self.inner.pending.lock() {
                        m.remove(&id);
                    }
                    return Err(Status::new(
                        Code::DeadlineExceeded,
                        format!("{service}/{method}: no answer within {t:?}"),
                    ));
                }
            },
            None => wait.await,
        }?;
        if let Some(st) = resp.status.as_ref().and_then(Status::from_proto) {
            return Err(st);
        }
        decode(&resp.payload)
    }
}

fn closed_status() -> Status {
    Status::new(Code::Unavailable, "ttrpc: connection closed")
}

/// The filesystem path in a `unix://` address (or the address itself).
pub fn socket_path(addr: &str) -> &str {
    addr.strip_prefix("unix://").unwrap_or(addr)
}

/// Binds a unix socket at `path`, replacing a stale socket file.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::containerd::services::events::ttrpc::v1::{ForwardRequest, events_ttrpc};
    use crate::pb::containerd::types::Envelope;

    #[test]
    fn header_layout_matches_hand_made_bytes() {
        let h = Header {
            length: 0x0102_0304,
            stream_id: 5,
            kind: TYPE_RESPONSE,
            flags: 0,
        };
        assert_eq!(h.encode(), [1, 2, 3, 4, 0, 0, 0, 5, 2, 0]);
        assert_eq!(Header::decode(&h.encode()), h);
    }

    #[tokio::test]
    async fn reads_a_hand_made_request_frame() {
        // Request{service:"s", method:"m", payload:[0x08,0x01]} encoded by hand.
        let body: Vec<u8> = vec![0x0a, 1, b's', 0x12, 1, b'm', 0x1a, 2, 0x08, 0x01];
        let len = u8::try_from(body.len()).unwrap();
        let mut wire = vec![0, 0, 0, len, 0, 0, 0, 3, 1, 0];
        wire.extend_from_slice(&body);
        let mut r = wire.as_slice();
        let f = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(f.header.stream_id, 3);
        assert_eq!(f.header.kind, TYPE_REQUEST);
        let req = Request::decode(f.payload.unwrap().as_slice()).unwrap();
        assert_eq!((req.service.as_str(), req.method.as_str()), ("s", "m"));
        assert_eq!(req.payload, vec![0x08, 0x01]);
        assert!(read_frame(&mut r).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_and_oversized_frames() {
        let mut r: &[u8] = &[0, 0, 0];
        assert!(read_frame(&mut r).await.is_err());
        let len = u32::try_from(MAX_MESSAGE + 1).unwrap();
        let mut wire = len.to_be_bytes().to_vec();
        wire.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
        wire.resize(HEADER_LEN + MAX_MESSAGE + 1, 7);
        let mut r = wire.as_slice();
        let f = read_frame(&mut r).await.unwrap().unwrap();
        assert!(f.payload.is_none());
        let mut sink = Vec::new();
        assert!(
            write_frame(&mut sink, 1, TYPE_REQUEST, &vec![0; MAX_MESSAGE + 1])
                .await
                .is_err()
        );
    }

    struct Sink(tokio::sync::mpsc::UnboundedSender<(String, Option<String>)>);

    impl events_ttrpc::Events for Sink {
        async fn forward(&self, ctx: Context, req: ForwardRequest) -> Result<(), Status> {
            let topic = req.envelope.map(|e| e.topic).unwrap_or_default();
            if topic == "/bad" {
                return Err(Status::new(Code::InvalidArgument, "bad topic"));
            }
            let _ = self.0.send((topic, ctx.get("k").map(str::to_string)));
            Ok(())
        }
    }

    #[tokio::test]
    async fn client_server_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = bind(&path).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let server = Server::new().register(events_ttrpc::EventsServer(Arc::new(Sink(tx))));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let srv = tokio::spawn(server.serve(listener, async {
            let _ = stop_rx.await;
        }));
        let client = events_ttrpc::EventsClient::new(
            Client::connect(&format!("unix://{}", path.display()))
                .await
                .unwrap(),
        );
        let mut ctx = Context::default();
        ctx.metadata.push(("k".into(), "v".into()));
        let req = ForwardRequest {
            envelope: Some(Envelope {
                topic: "/tasks/exit".into(),
                ..Default::default()
            }),
        };
        client.forward(ctx.clone(), &req).await.unwrap();
        assert_eq!(
            rx.recv().await.unwrap(),
            ("/tasks/exit".to_string(), Some("v".to_string()))
        );
        let bad = ForwardRequest {
            envelope: Some(Envelope {
                topic: "/bad".into(),
                ..Default::default()
            }),
        };
        let err = client.forward(ctx.clone(), &bad).await.unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        // An unknown method of a known service answers Unimplemented.
        let err = client
            .inner()
            .call::<_, ()>(ctx.clone(), events_ttrpc::SERVICE, "Nope", &())
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Unimplemented);
        let err = client
            .inner()
            .call::<_, ()>(ctx, "no.such.Service", "X", &())
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Unimplemented);
        let _ = stop_tx.send(());
        srv.await.unwrap().unwrap();
    }
}
