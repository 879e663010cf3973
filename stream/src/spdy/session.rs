//! A SPDY/3.1 session over one byte stream: streams opened by either side, their data, resets,
//! pings and GOAWAY. Both roles are implemented (the server for the kubelet-style endpoints, the
//! client for tests and tools).
//!
//! Flow control: the Go peers (moby/spdystream) neither send nor honour WINDOW_UPDATE, so windows
//! are not enforced here either (enforcing them would stall every transfer over 64 KiB);
//! WINDOW_UPDATE and SETTINGS frames are read and ignored. Back-pressure comes from the bounded
//! per-stream queues instead: a stream whose reader stalls holds up the session's reading (as in
//! spdystream); dropping a stream discards what arrives for it.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::frame::{Codec, FLAG_FIN, Frame, FrameError, Headers, rst};
use crate::pipe::{ChanReader, ChanWriter};

/// Which end of the session this is; decides stream and ping id parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

enum Out {
    Frame(Frame),
    Shutdown,
}

struct Entry {
    data: Option<mpsc::Sender<Bytes>>,
    reply: Option<oneshot::Sender<Result<Headers, u32>>>,
    reset: Arc<AtomicBool>,
}

struct Shared {
    streams: Mutex<HashMap<u32, Entry>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Errors of a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("SPDY session is closed")]
    Closed,
    #[error("SPDY stream {0} was reset by the peer (status {1})")]
    Reset(u32, u32),
    #[error("SPDY frame")]
    Frame(#[from] FrameError),
    #[error("SPDY connection I/O")]
    Io(#[from] io::Error),
}

const QUEUE: usize = 64;

/// One SPDY session.
pub struct Session {
    role: Role,
    out: mpsc::Sender<Out>,
    shared: Arc<Shared>,
    next_id: AtomicU32,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Stream>>,
    reader: JoinHandle<()>,
    writer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    ended: CancellationToken,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// One stream of a session: reads the peer's DATA, writes ours (shutdown sends FIN).
pub struct Stream {
    id: u32,
    headers: Headers,
    reader: ChanReader,
    writer: ChanWriter<Out>,
    reset: Arc<AtomicBool>,
    out: mpsc::Sender<Out>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish()
    }
}

impl Stream {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers of the SYN_STREAM that opened it.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Accepts a stream the peer opened (SYN_REPLY).
    pub async fn reply(&self) -> Result<(), SessionError> {
        let f = Frame::SynReply {
            stream_id: self.id,
            flags: 0,
            headers: Vec::new(),
        };
        self.out
            .send(Out::Frame(f))
            .await
            .map_err(|_| SessionError::Closed)
    }

    /// Aborts the stream (RST_STREAM with `status`).
    pub async fn reset(mut self, status: u32) {
        self.writer.forget_close();
        let _ = self
            .out
            .send(Out::Frame(Frame::RstStream {
                stream_id: self.id,
                status,
            }))
            .await;
    }

    /// Whether the peer reset the stream.
    pub fn was_reset(&self) -> bool {
        self.reset.load(Ordering::Relaxed)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // The writer's own Drop sends FIN if we never shut down, so the peer sees EOF.
        self.shared.lock().remove(&self.id);
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.reader).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() == before && self.was_reset() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "stream reset",
            )));
        }
        r
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.was_reset() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "stream reset",
            )));
        }
        Pin::new(&mut self.writer).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.was_reset() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

fn new_stream(
    id: u32,
    headers: Headers,
    out: &mpsc::Sender<Out>,
    shared: &Arc<Shared>,
    local_fin: bool,
) -> (Stream, Entry) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let reset = Arc::new(AtomicBool::new(false));
    let close = (!local_fin).then(|| {
        Out::Frame(Frame::Data {
            stream_id: id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
    });
    let writer = ChanWriter::new(
        out.clone(),
        move |b: &[u8]| {
            Out::Frame(Frame::Data {
                stream_id: id,
                flags: 0,
                data: Bytes::copy_from_slice(b),
            })
        },
        close,
    );
    let stream = Stream {
        id,
        headers,
        reader: ChanReader::new(rx),
        writer,
        reset: reset.clone(),
        out: out.clone(),
        shared: shared.clone(),
    };
    (
        stream,
        Entry {
            data: Some(tx),
            reply: None,
            reset,
        },
    )
}

impl Session {
    /// Starts a session over `io` (already upgraded; nothing else reads or writes it).
    pub fn new<T>(io: T, role: Role) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(QUEUE);
        let (in_tx, in_rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            streams: Mutex::new(HashMap::new()),
        });
        let (out_tx2, shared2) = (out_tx.clone(), shared.clone());
        let ended = CancellationToken::new();
        let guard = ended.clone().drop_guard();
        let reader = tokio::spawn(async move {
            read_loop(rd, role, out_tx2, shared2, in_tx).await;
            drop(guard);
        });
        let writer = tokio::spawn(write_loop(wr, out_rx));
        Self {
            role,
            out: out_tx,
            shared,
            next_id: AtomicU32::new(if role == Role::Client { 1 } else { 2 }),
            incoming: tokio::sync::Mutex::new(in_rx),
            reader,
            writer: tokio::sync::Mutex::new(Some(writer)),
            ended,
        }
    }

    /// The next stream the peer opens, `None` once the connection has ended.
    pub async fn accept(&self) -> Option<Stream> {
        self.incoming.lock().await.recv().await
    }

    /// Opens a stream with `headers` and waits for the peer's SYN_REPLY. With `fin`, our half is
    /// closed right away (as clients do with the error stream).
    pub async fn open(&self, headers: Headers, fin: bool) -> Result<Stream, SessionError> {
        let id = self.next_id.fetch_add(2, Ordering::Relaxed);
        let (stream, mut entry) = new_stream(id, headers.clone(), &self.out, &self.shared, fin);
        let (reply_tx, reply_rx) = oneshot::channel();
        entry.reply = Some(reply_tx);
        self.shared.lock().insert(id, entry);
        let flags = if fin { FLAG_FIN } else { 0 };
        let syn = Frame::SynStream {
            stream_id: id,
            associated_id: 0,
            priority: 0,
            flags,
            headers,
        };
        self.out
            .send(Out::Frame(syn))
            .await
            .map_err(|_| SessionError::Closed)?;
        match reply_rx.await {
            Ok(Ok(_)) => Ok(stream),
            Ok(Err(status)) => Err(SessionError::Reset(id, status)),
            Err(_) => Err(SessionError::Closed),
        }
    }

    /// Sends GOAWAY, flushes what is queued and closes our side of the connection (as the
    /// kubelet does when a session is over), waiting at most `timeout` for the flush.
    pub async fn shutdown(&self, timeout: Duration) {
        let last = self.shared.lock().keys().copied().max().unwrap_or(0);
        let _ = self
            .out
            .send(Out::Frame(Frame::GoAway {
                last_good_stream_id: last,
                status: 0,
            }))
            .await;
        let _ = self.out.send(Out::Shutdown).await;
        if let Some(w) = self.writer.lock().await.take() {
            let _ = tokio::time::timeout(timeout, w).await;
        }
        self.reader.abort();
    }

    /// Cancelled once the connection has ended (the peer closed it or it failed).
    pub fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn write_loop<W: AsyncWrite>(mut wr: tokio::io::WriteHalf<W>, mut rx: mpsc::Receiver<Out>) {
    const BATCH: usize = 256 * 1024;
    let mut codec = Codec::new();
    let mut buf = Vec::new();
    let mut done = false;
    while !done {
        let Some(first) = rx.recv().await else { break };
        buf.clear();
        // Batch what is already queued into one write; a Shutdown ends the session after it.
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Out::Shutdown => done = true,
                Out::Frame(f) => {
                    if let Err(e) = codec.encode(&f, &mut buf) {
                        tracing::debug!(error = %e, "SPDY encode");
                        done = true;
                    }
                }
            }
            if !done && buf.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() && (wr.write_all(&buf).await.is_err() || wr.flush().await.is_err()) {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead>(
    mut rd: tokio::io::ReadHalf<R>,
    role: Role,
    out: mpsc::Sender<Out>,
    shared: Arc<Shared>,
    incoming: mpsc::Sender<Stream>,
) {
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut gone_away = false;
    'conn: loop {
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY decode");
                    break 'conn;
                }
            };
            match frame {
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                    ..
                } => {
                    let peer_parity = if role == Role::Server { 1 } else { 0 };
                    let known = shared.lock().contains_key(&stream_id);
                    if gone_away || known || stream_id % 2 != peer_parity || stream_id == 0 {
                        let f = Frame::RstStream {
                            stream_id,
                            status: rst::PROTOCOL_ERROR,
                        };
                        let _ = out.send(Out::Frame(f)).await;
                        continue;
                    }
                    let (stream, mut entry) = new_stream(stream_id, headers, &out, &shared, false);
                    if flags & FLAG_FIN != 0 {
                        entry.data = None;
                    }
                    shared.lock().insert(stream_id, entry);
                    if let Err(mpsc::error::SendError(s)) = incoming.send(stream).await {
                        s.reset(rst::REFUSED_STREAM).await;
                    }
                }
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                } => {
                    let mut map = shared.lock();
                    if let Some(e) = map.get_mut(&stream_id) {
                        if let Some(r) = e.reply.take() {
                            let _ = r.send(Ok(headers));
                        }
                        if flags & FLAG_FIN != 0 {
                            e.data = None;
                        }
                    }
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    let tx = shared.lock().get(&stream_id).and_then(|e| e.data.clone());
                    if let Some(tx) = tx
                        && !data.is_empty()
                    {
                        let _ = tx.send(data).await;
                    }
                    if flags & FLAG_FIN != 0
                        && let Some(e) = shared.lock().get_mut(&stream_id)
                    {
                        e.data = None;
                    }
                }
                Frame::Headers {
                    stream_id, flags, ..
                } => {
                    if flags & FLAG_FIN != 0
                        && let Some(e) = shared.lock().get_mut(&stream_id)
                    {
                        e.data = None;
                    }
                }
                Frame::RstStream { stream_id, status } => {
                    if let Some(mut e) = shared.lock().remove(&stream_id) {
                        e.reset.store(true, Ordering::Relaxed);
                        if let Some(r) = e.reply.take() {
                            let _ = r.send(Err(status));
                        }
                    }
                }
                Frame::Ping { id } => {
                    // Peers' pings have the other parity (client odd, server even): echo them.
                    let ours = if role == Role::Client { 1 } else { 0 };
                    if id % 2 != ours {
                        let _ = out.send(Out::Frame(Frame::Ping { id })).await;
                    }
                }
                Frame::GoAway { .. } => gone_away = true,
                Frame::Settings { .. } | Frame::WindowUpdate { .. } => {}
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // The connection is over: every reader sees EOF, every opener an error.
    let entries: Vec<Entry> = shared.lock().drain().map(|(_, e)| e).collect();
    drop(entries);
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
