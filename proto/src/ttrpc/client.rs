//! The ttrpc client: one connection whose clones share it, calls
//! multiplexed by stream id (odd, as clients use), a reader task that
//! hands each response to its caller and fails them all when the
//! connection goes.

use super::call::{Context, Status, decode};
use super::frame::{TYPE_REQUEST, TYPE_RESPONSE, read_frame, write_frame};
use crate::pb::ttrpc::{KeyValue, Request, Response};
use prost::Message;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::oneshot;
use tonic::Code;

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
