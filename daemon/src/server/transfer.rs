//! `containerd.services.streaming.v1.Streaming` and
//! `containerd.services.transfer.v1.Transfer`: daemon-side image import and
//! export over client-opened data streams, with progress.
//!
//! A client opens a stream with `Streaming.Stream`, first sending
//! `StreamInit{id}`; the daemon answers `google.protobuf.Empty` and keeps the
//! stream registered under that id until a transfer takes it. Data flows as
//! `containerd.types.transfer.Data` messages, paced by `WindowUpdate`
//! credits from the receiving side, as in containerd.

use super::boundary::namespace;
use super::events::async_stream;
use crate::core::Core;
use crate::error::Error;
use crate::images::oci::Platform;
use crate::transfer::archive::{self, ExportOptions, ImportOptions};
use crate::transfer::registry;
use berth_proto::pb::containerd::types::transfer as tt;
use berth_proto::services::streaming::v1::StreamInit;
use berth_proto::services::streaming::v1::streaming_server::Streaming;
use berth_proto::services::transfer::v1::TransferRequest;
use berth_proto::services::transfer::v1::transfer_server::Transfer;
use berth_proto::typeurl;
use bytes::Bytes;
use prost_types::Any;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming as Inbound};

/// Credit granted to a sender at a time.
const WINDOW: i32 = 4 << 20;
/// Largest data message we send.
const MAX_DATA: usize = 1 << 20;

/// A registered stream: what the client sends, and a way to send to it.
pub struct StreamHandle {
    pub incoming: mpsc::Receiver<Any>,
    pub outgoing: mpsc::Sender<Result<Any, Status>>,
}

/// Streams opened by clients and not yet taken by a transfer.
#[derive(Clone, Default)]
pub struct Streams(Arc<Mutex<HashMap<String, StreamHandle>>>);

impl Streams {
    pub fn new() -> Self {
        Self::default()
    }

    fn take(&self, id: &str) -> Result<StreamHandle, Error> {
        self.0
            .lock()
            .map_err(|_| Error::internal("lock poisoned"))?
            .remove(id)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "stream {id:?} is not open: open it with Streaming.Stream before the transfer"
                ))
            })
    }
}

pub struct StreamingService(pub Streams);

#[tonic::async_trait]
impl Streaming for StreamingService {
    type StreamStream = Pin<Box<dyn Stream<Item = Result<Any, Status>> + Send>>;

    async fn stream(
        &self,
        req: Request<Inbound<Any>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("stream closed before StreamInit"))??;
        let init: StreamInit = typeurl::unpack(&first).ok_or_else(|| {
            Status::invalid_argument(format!(
                "first stream message must be containerd.services.streaming.v1.StreamInit, got {}",
                first.type_url
            ))
        })?;
        if init.id.is_empty() {
            return Err(Status::invalid_argument("stream id must not be empty"));
        }
        let (in_tx, in_rx) = mpsc::channel(64);
        let (out_tx, mut out_rx) = mpsc::channel::<Result<Any, Status>>(64);
        {
            let mut map = self
                .0
                .0
                .lock()
                .map_err(|_| Status::internal("lock poisoned"))?;
            if map.contains_key(&init.id) {
                return Err(Status::already_exists(format!(
                    "stream {:?} is already open",
                    init.id
                )));
            }
            map.insert(
                init.id.clone(),
                StreamHandle {
                    incoming: in_rx,
                    outgoing: out_tx.clone(),
                },
            );
        }
        let streams = self.0.clone();
        let id = init.id.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = inbound.next().await {
                if in_tx.send(msg).await.is_err() {
                    break;
                }
            }
            // Client is done sending; a stream nobody took is dropped.
            if let Ok(mut m) = streams.0.lock() {
                m.remove(&id);
            }
        });
        let ack = Any {
            type_url: "google.protobuf.Empty".to_string(),
            value: vec![],
        };
        let stream = async_stream(move |tx| async move {
            if tx.send(Ok(ack)).await.is_err() {
                return;
            }
            drop(out_tx);
            while let Some(m) = out_rx.recv().await {
                if tx.send(m).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

pub struct TransferService {
    core: Arc<Core>,
    streams: Streams,
}

impl TransferService {
    pub fn new(core: Arc<Core>, streams: Streams) -> Self {
        Self { core, streams }
    }
}

fn platforms(ps: &[berth_proto::types::Platform]) -> Vec<Platform> {
    ps.iter()
        .map(|p| Platform {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
        })
        .collect()
}

impl TransferService {
    /// Where an image store wants its images unpacked: (platform, snapshotter).
    fn unpacks(
        &self,
        u: &[tt::UnpackConfiguration],
    ) -> Result<Vec<(Option<Platform>, String)>, Status> {
        let mut out = Vec::new();
        for u in u {
            let p = u.platform.as_ref().map(|p| Platform {
                os: p.os.clone(),
                architecture: p.architecture.clone(),
                variant: p.variant.clone(),
            });
            let (name, _) = self.core.snapshots.get(&u.snapshotter)?;
            out.push((p, name));
        }
        Ok(out)
    }

    /// The registry options and credentials source a client's resolver names.
    fn resolver(
        &self,
        r: Option<&tt::RegistryResolver>,
    ) -> Result<
        (
            registry::ResolverOptions,
            Option<Arc<dyn registry::Credentials>>,
        ),
        Status,
    > {
        let Some(r) = r else {
            return Ok((registry::ResolverOptions::default(), None));
        };
        let plain_http = match r.default_scheme.as_str() {
            "" | "https" => false,
            "http" => true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "default_scheme {other:?} is not supported: use http or https"
                )));
            }
        };
        let creds: Option<Arc<dyn registry::Credentials>> = if r.auth_stream.is_empty() {
            None
        } else {
            Some(Arc::new(StreamCredentials(tokio::sync::Mutex::new(
                self.streams.take(&r.auth_stream)?,
            ))))
        };
        Ok((
            registry::ResolverOptions {
                plain_http,
                host_dir: (!r.host_dir.is_empty()).then(|| r.host_dir.clone().into()),
            },
            creds,
        ))
    }
}

/// Asks the client for credentials over its auth stream (containerd's
/// `AuthRequest` / `AuthResponse`).
struct StreamCredentials(tokio::sync::Mutex<StreamHandle>);

impl registry::Credentials for StreamCredentials {
    fn get<'a>(
        &'a self,
        host: &'a str,
        reference: &'a str,
    ) -> futures::future::BoxFuture<'a, crate::error::Result<Option<(String, String)>>> {
        Box::pin(async move {
            let mut h = self.0.lock().await;
            let ask = tt::AuthRequest {
                host: host.to_string(),
                reference: reference.to_string(),
                wwwauthenticate: Vec::new(),
            };
            let gone = || Error::unavailable("the client closed its credentials stream");
            h.outgoing
                .send(Ok(typeurl::pack(&ask)))
                .await
                .map_err(|_| gone())?;
            let msg = tokio::time::timeout(std::time::Duration::from_secs(60), h.incoming.recv())
                .await
                .map_err(|_| {
                    Error::new(
                        berth_proto::errdefs::Kind::DeadlineExceeded,
                        format!("the client did not answer the credentials request for {host} within 60s"),
                    )
                })?
                .ok_or_else(gone)?;
            let resp: tt::AuthResponse = typeurl::unpack(&msg).ok_or_else(|| {
                Error::invalid(format!(
                    "expected containerd.types.transfer.AuthResponse on the credentials stream, got {}",
                    msg.type_url
                ))
            })?;
            Ok(match tt::AuthType::try_from(resp.auth_type) {
                Ok(tt::AuthType::Credentials) => Some((resp.username, resp.secret)),
                // A refresh token or a ready header: sent as a bearer token.
                Ok(tt::AuthType::Refresh | tt::AuthType::Header) => {
                    Some((String::new(), resp.secret))
                }
                _ => None,
            })
        })
    }
}

/// Turns registry progress into `Progress` messages on the client's stream.
/// Await the returned handle after the last clone of the function is
/// dropped, so every report reaches the client before the transfer answers.
fn progress_fn(
    out: Option<mpsc::Sender<Result<Any, Status>>>,
) -> (registry::ProgressFn, Option<tokio::task::JoinHandle<()>>) {
    let Some(out) = out else {
        return (Arc::new(|_| {}), None);
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<registry::ProgressEvent>();
    let forward = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let msg = tt::Progress {
                event: p.event,
                name: p.name,
                parents: p.parents,
                progress: p.progress,
                total: p.total,
                desc: p.desc.map(Into::into),
            };
            if out.send(Ok(typeurl::pack(&msg))).await.is_err() {
                return;
            }
        }
    });
    let f: registry::ProgressFn = Arc::new(move |p| {
        let _ = tx.send(p);
    });
    (f, Some(forward))
}

/// Waits (briefly) until the last progress report went out.
async fn flush(forward: Option<tokio::task::JoinHandle<()>>) {
    if let Some(h) = forward {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), h).await;
    }
}

/// Sends progress to the client's progress stream, if it opened one.
struct ProgressSink(Option<mpsc::Sender<Result<Any, Status>>>);

impl ProgressSink {
    fn send(&self, event: &str, name: &str) {
        if let Some(tx) = &self.0 {
            let p = tt::Progress {
                event: event.to_string(),
                name: name.to_string(),
                ..Default::default()
            };
            let _ = tx.blocking_send(Ok(typeurl::pack(&p)));
        }
    }
}

#[tonic::async_trait]
impl Transfer for TransferService {
    async fn transfer(&self, req: Request<TransferRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let ctx = crate::types::Ctx::new(ns.clone());
        let req = req.into_inner();
        let (src, dst) = match (&req.source, &req.destination) {
            (Some(s), Some(d)) => (s, d),
            _ => {
                return Err(Status::invalid_argument(
                    "transfer needs a source and a destination",
                ));
            }
        };
        let progress = match req.options.as_ref().map(|o| o.progress_stream.as_str()) {
            Some(id) if !id.is_empty() => Some(self.streams.take(id)?.outgoing),
            _ => None,
        };
        if let (Some(src), Some(dst)) = (
            typeurl::unpack::<tt::ImageImportStream>(src),
            typeurl::unpack::<tt::ImageStore>(dst),
        ) {
            let unpack = self.unpacks(&dst.unpacks)?;
            let mut opts = ImportOptions {
                unpack,
                index_name: (!dst.name.is_empty()).then(|| dst.name.clone()),
                labels: dst.labels.clone(),
                all_platforms: dst.all_metadata,
                platform: platforms(&dst.platforms).into_iter().next(),
                ..Default::default()
            };
            for r in &dst.extra_references {
                if r.add_digest {
                    opts.digests = true;
                }
                if r.is_prefix || r.add_digest {
                    opts.base_name = Some(r.name.clone());
                }
            }
            let handle = self.streams.take(&src.stream)?;
            let reader = receive(handle);
            let stores = self.core.image_stores();
            let images = tokio::task::spawn_blocking(move || {
                let sink = ProgressSink(progress);
                let mut reader = reader;
                let mut report = |event: &str, name: &str| sink.send(event, name);
                archive::import(&stores, &ctx, &mut reader, &opts, &mut report)
            })
            .await
            .map_err(|e| Status::internal(format!("import task: {e}")))??;
            tracing::info!(namespace = %ns, count = images.len(), "imported images");
            return Ok(Response::new(()));
        }
        if let (Some(src), Some(dst)) = (
            typeurl::unpack::<tt::ImageStore>(src),
            typeurl::unpack::<tt::ImageExportStream>(dst),
        ) {
            let mut names = Vec::new();
            if !src.name.is_empty() {
                names.push(src.name.clone());
            }
            names.extend(src.extra_references.iter().map(|r| r.name.clone()));
            if names.is_empty() {
                return Err(Status::invalid_argument(
                    "export needs at least one image name",
                ));
            }
            let images = names
                .iter()
                .map(|n| self.core.images.get(&ns, n))
                .collect::<Result<Vec<_>, _>>()?;
            let mut ps = platforms(&dst.platforms);
            ps.extend(platforms(&src.platforms));
            let opts = ExportOptions {
                platforms: ps,
                all_platforms: dst.all_platforms,
                skip_docker_manifest: dst.skip_compatibility_manifest,
            };
            let handle = self.streams.take(&dst.stream)?;
            let content = self.core.content.clone();
            tokio::task::spawn_blocking(move || {
                let sink = ProgressSink(progress);
                let mut w = Sender::new(handle);
                archive::export(&content, &ns, &images, &mut w, &opts)?;
                for i in &images {
                    sink.send("exported", &i.name);
                }
                Ok::<_, Error>(())
            })
            .await
            .map_err(|e| Status::internal(format!("export task: {e}")))??;
            return Ok(Response::new(()));
        }
        if let (Some(src), Some(dst)) = (
            typeurl::unpack::<tt::OciRegistry>(src),
            typeurl::unpack::<tt::ImageStore>(dst),
        ) {
            let (resolver, creds) = self.resolver(src.resolver.as_ref())?;
            let unpack = self.unpacks(&dst.unpacks)?;
            let req = registry::PullRequest {
                reference: src.reference.clone(),
                name: dst.name.clone(),
                platforms: platforms(&dst.platforms),
                all_platforms: dst.all_metadata,
                unpack,
                labels: dst.labels.clone(),
                resolver,
            };
            let (pf, forward) = progress_fn(progress);
            let r = registry::pull(
                &self.core.image_stores(),
                &self.core.registry,
                &ns,
                req,
                creds,
                pf,
            )
            .await;
            flush(forward).await;
            let img = r?;
            tracing::info!(namespace = %ns, image = %img.name, digest = %img.record.target.digest, "pulled");
            return Ok(Response::new(()));
        }
        if let (Some(src), Some(dst)) = (
            typeurl::unpack::<tt::ImageStore>(src),
            typeurl::unpack::<tt::OciRegistry>(dst),
        ) {
            let (resolver, creds) = self.resolver(dst.resolver.as_ref())?;
            let req = registry::PushRequest {
                name: src.name.clone(),
                reference: dst.reference.clone(),
                platforms: platforms(&src.platforms),
                resolver,
            };
            let (pf, forward) = progress_fn(progress);
            let r = registry::push(
                &self.core.content,
                &self.core.images,
                &self.core.registry,
                &ns,
                req,
                creds,
                pf,
            )
            .await;
            flush(forward).await;
            let d = r?;
            tracing::info!(namespace = %ns, reference = %dst.reference, digest = %d.digest, "pushed");
            return Ok(Response::new(()));
        }
        Err(Status::invalid_argument(format!(
            "unsupported transfer from {} to {}",
            src.type_url, dst.type_url
        )))
    }
}

/// A blocking reader over a client's data stream; it grants the client
/// credit as it consumes.
struct Receiver {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    buf: Bytes,
}

fn receive(mut h: StreamHandle) -> Receiver {
    let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(8);
    tokio::spawn(async move {
        let mut window: i64 = 0;
        loop {
            if window < i64::from(WINDOW) / 2 {
                let upd = typeurl::pack(&tt::WindowUpdate { update: WINDOW });
                if h.outgoing.send(Ok(upd)).await.is_ok() {
                    window += i64::from(WINDOW);
                }
            }
            let Some(msg) = h.incoming.recv().await else {
                return; // end of data: dropping tx ends the reader
            };
            if let Some(d) = typeurl::unpack::<tt::Data>(&msg) {
                window -= d.data.len() as i64;
                if tx.send(Ok(Bytes::from(d.data))).await.is_err() {
                    return;
                }
            } else {
                tracing::debug!("ignoring stream message {}", msg.type_url);
            }
        }
    });
    Receiver {
        rx,
        buf: Bytes::new(),
    }
}

impl std::io::Read for Receiver {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

/// A blocking writer onto a client's data stream, sending no more than the
/// client has granted.
struct Sender {
    out: mpsc::Sender<Result<Any, Status>>,
    credits: mpsc::UnboundedReceiver<i32>,
    remaining: i64,
}

impl Sender {
    fn new(mut h: StreamHandle) -> Sender {
        let (tx, credits) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(msg) = h.incoming.recv().await {
                if let Some(u) = typeurl::unpack::<tt::WindowUpdate>(&msg)
                    && tx.send(u.update).is_err()
                {
                    return;
                }
            }
        });
        Sender {
            out: h.outgoing,
            credits,
            remaining: 0,
        }
    }
}

impl std::io::Write for Sender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        while self.remaining <= 0 {
            match self.credits.blocking_recv() {
                Some(c) => self.remaining += i64::from(c),
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "the client closed the export stream",
                    ));
                }
            }
        }
        let remaining = usize::try_from(self.remaining.max(0)).unwrap_or(usize::MAX);
        let n = data.len().min(MAX_DATA).min(remaining);
        let msg = typeurl::pack(&tt::Data {
            data: data[..n].to_vec(),
        });
        self.out.blocking_send(Ok(msg)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client closed the export stream",
            )
        })?;
        self.remaining -= n as i64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
