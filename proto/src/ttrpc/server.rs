//! The ttrpc server: [`Service`]s (implemented by the generated adapters)
//! registered by name and served on unix sockets, each request dispatched
//! on its own task under its deadline, responses written by one writer so
//! frames never interleave.

use super::call::{Context, Status, decode};
use super::frame::{MAX_MESSAGE, TYPE_REQUEST, TYPE_RESPONSE, read_frame, write_frame};
use crate::pb::google::rpc::Status as RpcStatus;
use crate::pb::ttrpc::{Request, Response};
use bytes::Bytes;
use prost::Message;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tonic::Code;

/// A boxed, sendable future, as returned by [`Service::call`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

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

/// Binds a unix socket at `path`, replacing a stale socket file.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}
