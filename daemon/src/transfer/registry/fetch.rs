//! Fetching one blob into the content store: resumed from a stored partial
//! upload with a range request, retried on transient failures from the
//! last byte handed over, dropped when its bytes do not match its digest.

use super::remote::Remote;
use super::request::{ProgressEvent, ProgressFn};
use crate::content::{ContentStore, Writer};
use crate::error::{Error, Result};
use crate::types::{Ctx, Descriptor, Digest, Labels};
use berth_proto::errdefs::Kind;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::errors::OciDistributionError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A blob to fetch and the ref its upload goes under.
pub(super) struct Blob {
    pub(super) desc: Descriptor,
    pub(super) reference: String,
}

impl Blob {
    pub(super) fn new(kind: &str, desc: &Descriptor) -> Blob {
        Blob {
            desc: desc.clone(),
            reference: format!("{kind}-{}", desc.digest),
        }
    }
}

/// Largest piece handed to the writer thread at once.
const CHUNK: usize = 1 << 20;
/// Least time between two progress reports of one blob.
const REPORT_EVERY: Duration = Duration::from_millis(200);

/// Fetches one blob into the content store, resuming a stored partial
/// upload with a range request, retrying transient failures from where
/// they stopped. A blob whose bytes do not match its digest is dropped.
pub(super) async fn fetch_blob(
    content: &Arc<ContentStore>,
    ctx: &Ctx,
    remote: &Remote,
    blob: &Blob,
    labels: &Labels,
    progress: &ProgressFn,
) -> Result<()> {
    let desc = &blob.desc;
    let expected = Digest::parse(&desc.digest)?;
    let name = blob.reference.clone();
    let writer = {
        let (content, ctx, name, exp) =
            (content.clone(), ctx.clone(), name.clone(), expected.clone());
        let size = desc.size;
        tokio::task::spawn_blocking(move || content.writer(&ctx, &name, size, Some(exp)))
            .await
            .map_err(|e| Error::internal(format!("open upload: {e}")))?
    };
    let writer = match writer {
        Err(e) if e.is_already_exists() => {
            // Already here: just record where else it can be found.
            let _ = super::source::add_source(
                content,
                &ctx.ns,
                &desc.digest,
                &remote.host,
                remote.reference.repository(),
            )
            .await;
            progress(ProgressEvent {
                desc: Some(desc.clone()),
                progress: desc.size,
                total: desc.size,
                ..ProgressEvent::new("exists", &name)
            });
            return Ok(());
        }
        Err(e) => return Err(e),
        Ok(w) => w,
    };
    let mut offset = writer.status().offset;
    if offset > 0 {
        tracing::info!(registry = %remote.host, "resuming {name} at byte {offset} of {}", desc.size);
        progress(ProgressEvent {
            desc: Some(desc.clone()),
            progress: offset,
            total: desc.size,
            ..ProgressEvent::new("resuming", &name)
        });
    }
    let (tx, rx) = mpsc::channel::<Cmd>(4);
    let sink = tokio::task::spawn_blocking(move || write_loop(writer, rx));
    let r = download(remote, desc, &name, &mut offset, &tx, progress).await;
    drop(tx);
    let writer = sink
        .await
        .map_err(|e| Error::internal(format!("write {name}: {e}")))??;
    r?;
    let (content2, labels2, exp2) = (content.clone(), labels.clone(), expected.clone());
    let size = desc.size;
    let committed = tokio::task::spawn_blocking(move || writer.commit(size, Some(&exp2), labels2))
        .await
        .map_err(|e| Error::internal(format!("commit {name}: {e}")))?;
    match committed {
        Ok(_) => {}
        Err(e) if e.kind() == Kind::FailedPrecondition => {
            // Wrong bytes: never keep them for a resume.
            let (ns, n) = (ctx.ns.clone(), name.clone());
            let _ = tokio::task::spawn_blocking(move || content2.abort(&ns, &n)).await;
            return Err(Error::new(
                Kind::DataLoss,
                format!(
                    "blob {} from registry {} ({}) does not match its digest or size: the registry's copy is corrupt; nothing was stored ({})",
                    desc.digest,
                    remote.host,
                    remote.reference.repository(),
                    e.chain()
                ),
            ));
        }
        Err(e) => return Err(e),
    }
    progress(ProgressEvent {
        desc: Some(desc.clone()),
        progress: desc.size,
        total: desc.size,
        ..ProgressEvent::new("complete", &name)
    });
    Ok(())
}

enum Cmd {
    Data(Bytes),
    Restart,
}

/// The upload's writer, on a blocking thread: disk writes and hashing stay
/// off the async workers.
fn write_loop(mut w: Writer, mut rx: mpsc::Receiver<Cmd>) -> Result<Writer> {
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            Cmd::Data(b) => w.write(&b)?,
            Cmd::Restart => w.truncate()?,
        }
    }
    Ok(w)
}

/// Streams the blob from `offset` to its end into the writer, retrying
/// transient failures from the last byte handed over.
async fn download(
    remote: &Remote,
    desc: &Descriptor,
    name: &str,
    offset: &mut i64,
    tx: &mpsc::Sender<Cmd>,
    progress: &ProgressFn,
) -> Result<()> {
    let what = format!("download {}", desc.digest);
    let layer = oci_client::manifest::OciDescriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.clone(),
        size: desc.size,
        ..Default::default()
    };
    let closed = || Error::internal("the blob writer stopped");
    let mut attempt = 0u32;
    let mut last_report = Instant::now();
    loop {
        if desc.size > 0 && *offset >= desc.size {
            return Ok(());
        }
        let failure: OciDistributionError = 'attempt: {
            let resp = remote
                .client
                .pull_blob_stream_partial(&remote.reference, &layer, *offset as u64, None)
                .await;
            let mut stream = match resp {
                Ok(BlobResponse::Partial(s)) => s.stream,
                Ok(BlobResponse::Full(s)) => {
                    // The registry ignored the range: start over.
                    if *offset > 0 {
                        tx.send(Cmd::Restart).await.map_err(|_| closed())?;
                        *offset = 0;
                    }
                    s.stream
                }
                Err(e) => break 'attempt e,
            };
            let mut buf = BytesMut::with_capacity(CHUNK);
            loop {
                match stream.next().await {
                    Some(Ok(b)) => {
                        buf.extend_from_slice(&b);
                        if buf.len() >= CHUNK {
                            let n = buf.len() as i64;
                            tx.send(Cmd::Data(buf.split().freeze()))
                                .await
                                .map_err(|_| closed())?;
                            *offset += n;
                            attempt = 0;
                        }
                        if last_report.elapsed() >= REPORT_EVERY {
                            last_report = Instant::now();
                            progress(ProgressEvent {
                                desc: Some(desc.clone()),
                                progress: *offset + buf.len() as i64,
                                total: desc.size,
                                ..ProgressEvent::new("downloading", name)
                            });
                        }
                    }
                    Some(Err(e)) => {
                        // Keep what arrived before the failure.
                        if !buf.is_empty() {
                            let n = buf.len() as i64;
                            tx.send(Cmd::Data(buf.split().freeze()))
                                .await
                                .map_err(|_| closed())?;
                            *offset += n;
                        }
                        if let Some(d) = e
                            .get_ref()
                            .and_then(|i| i.downcast_ref::<oci_client::errors::DigestError>())
                        {
                            return Err(Error::new(
                                Kind::DataLoss,
                                format!(
                                    "blob {} from registry {}: {d}: the registry's copy is corrupt",
                                    desc.digest, remote.host
                                ),
                            ));
                        }
                        break 'attempt OciDistributionError::IoError(e);
                    }
                    None => {
                        if !buf.is_empty() {
                            let n = buf.len() as i64;
                            tx.send(Cmd::Data(buf.split().freeze()))
                                .await
                                .map_err(|_| closed())?;
                            *offset += n;
                        }
                        if desc.size > 0 && *offset < desc.size {
                            break 'attempt OciDistributionError::IoError(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                format!(
                                    "the registry ended the blob after {} of {} bytes",
                                    *offset, desc.size
                                ),
                            ));
                        }
                        return Ok(());
                    }
                }
            }
        };
        if !remote.should_retry(attempt, &failure) {
            return Err(remote.error(&what, &failure));
        }
        attempt += 1;
        let wait = super::remote::backoff(attempt);
        tracing::debug!(registry = %remote.host, "{what}: {failure}; resuming at {} in {wait:?}", *offset);
        tokio::time::sleep(wait).await;
    }
}
