//! `containerd.services.content.v1.Content`, including the resumable,
//! bidirectional `Write` protocol.

use super::boundary::{ctx, namespace, paths};
use super::events::async_stream;
use crate::content::{Info as Stored, Status as IngestStatus, Writer};
use crate::core::Core;
use crate::error::Error;
use crate::types::{Digest, timestamp};
use berth_proto::services::content::v1::content_server::Content;
use berth_proto::services::content::v1::*;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status as GrpcStatus, Streaming};

type GrpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, GrpcStatus>> + Send>>;

/// Read chunk size, and the most data sent in one `List` reply.
const CHUNK: usize = 1 << 20;

pub struct ContentService(pub Arc<Core>);

fn info_to_proto(i: Stored) -> Info {
    Info {
        digest: i.digest,
        size: i.record.size,
        created_at: Some(timestamp(i.record.created_at)),
        updated_at: Some(timestamp(i.record.updated_at)),
        labels: i.record.labels,
    }
}

fn status_to_proto(s: IngestStatus) -> Status {
    Status {
        started_at: Some(timestamp(s.started_at)),
        updated_at: Some(timestamp(s.updated_at)),
        r#ref: s.reference,
        offset: s.offset,
        total: s.total,
        expected: s.expected,
    }
}

fn digest(s: &str) -> Result<Digest, GrpcStatus> {
    Digest::parse(s)
        .map_err(|e| GrpcStatus::invalid_argument(format!("{s:?} failed validation: {e}")))
}

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, GrpcStatus> {
        let ns = namespace(&req)?;
        let d = digest(&req.into_inner().digest)?;
        let info = self.0.content.info(&ns, &d)?;
        Ok(Response::new(InfoResponse {
            info: Some(info_to_proto(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, GrpcStatus> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let info = req
            .info
            .ok_or_else(|| GrpcStatus::invalid_argument("info must be set"))?;
        let d = digest(&info.digest)?;
        let updated = self
            .0
            .content
            .update(&ns, &d, &info.labels, &paths(req.update_mask))?;
        Ok(Response::new(UpdateResponse {
            info: Some(info_to_proto(updated)),
        }))
    }

    type ListStream = GrpcStream<ListContentResponse>;

    async fn list(
        &self,
        req: Request<ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, GrpcStatus> {
        let ns = namespace(&req)?;
        let infos = self.0.content.list(&ns, &req.into_inner().filters)?;
        // Sent in blocks of 100, as containerd does.
        let blocks: Vec<Result<ListContentResponse, GrpcStatus>> = infos
            .chunks(100)
            .map(|c| {
                Ok(ListContentResponse {
                    info: c.iter().cloned().map(info_to_proto).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(blocks))))
    }

    async fn delete(&self, req: Request<DeleteContentRequest>) -> Result<Response<()>, GrpcStatus> {
        let ns = namespace(&req)?;
        let d = digest(&req.into_inner().digest)?;
        self.0.content.delete(&ns, &d)?;
        Ok(Response::new(()))
    }

    type ReadStream = GrpcStream<ReadContentResponse>;

    async fn read(
        &self,
        req: Request<ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, GrpcStatus> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let d = digest(&req.digest)?;
        let (file, total) = self.0.content.open_blob(&ns, &d)?;
        let offset = req.offset.max(0);
        if offset > total {
            return Err(GrpcStatus::out_of_range(format!(
                "read past object length {total} bytes (offset {offset})"
            )));
        }
        let size = if req.size <= 0 || offset + req.size > total {
            total - offset
        } else {
            req.size
        };
        let mut file = tokio::fs::File::from_std(file);
        let stream = async_stream(move |tx| async move {
            if let Err(e) = file.seek(std::io::SeekFrom::Start(offset as u64)).await {
                let _ = tx
                    .send(Err(GrpcStatus::internal(format!("seek {d}: {e}"))))
                    .await;
                return;
            }
            let mut at = offset;
            let end = offset + size;
            while at < end {
                let want = usize::try_from(end - at).map_or(CHUNK, |n| n.min(CHUNK));
                let mut buf = vec![0u8; want];
                if let Err(e) = file.read_exact(&mut buf).await {
                    let _ = tx
                        .send(Err(GrpcStatus::data_loss(format!("read {d}: {e}"))))
                        .await;
                    return;
                }
                if tx
                    .send(Ok(ReadContentResponse {
                        offset: at,
                        data: buf,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
                at += want as i64;
            }
        });
        Ok(Response::new(stream))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, GrpcStatus> {
        let ns = namespace(&req)?;
        let r = req.into_inner().r#ref;
        let st = self
            .0
            .content
            .status(&ns, &r)
            .map_err(|e| e.context(format!("could not get status for ref {r:?}")))?;
        Ok(Response::new(StatusResponse {
            status: Some(status_to_proto(st)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, GrpcStatus> {
        let ns = namespace(&req)?;
        let statuses = self
            .0
            .content
            .list_statuses(&ns, &req.into_inner().filters)?
            .into_iter()
            .map(status_to_proto)
            .collect();
        Ok(Response::new(ListStatusesResponse { statuses }))
    }

    type WriteStream = GrpcStream<WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, GrpcStatus> {
        let ctx = ctx(&req)?;
        let mut inbound = req.into_inner();
        let core = self.0.clone();
        let stream = async_stream(move |tx| async move {
            let out = write_session(&core, &ctx, &mut inbound, &tx).await;
            if let Err(e) = out {
                if e.code() != tonic::Code::AlreadyExists {
                    tracing::debug!("content write failed: {}", e.message());
                }
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(stream))
    }

    async fn abort(&self, req: Request<AbortRequest>) -> Result<Response<()>, GrpcStatus> {
        let ns = namespace(&req)?;
        self.0.content.abort(&ns, &req.into_inner().r#ref)?;
        Ok(Response::new(()))
    }
}

/// One `Write` stream: the first message names the ref; then any number of
/// STAT/WRITE messages; COMMIT ends it. Blocking file work runs on the
/// blocking pool.
async fn write_session(
    core: &Arc<Core>,
    ctx: &crate::types::Ctx,
    inbound: &mut Streaming<WriteContentRequest>,
    tx: &tokio::sync::mpsc::Sender<Result<WriteContentResponse, GrpcStatus>>,
) -> Result<(), GrpcStatus> {
    let Some(mut req) = inbound.next().await.transpose()? else {
        return Ok(());
    };
    if req.r#ref.is_empty() {
        return Err(GrpcStatus::invalid_argument(
            "first message must have a reference",
        ));
    }
    let reference = req.r#ref.clone();
    let mut total = req.total;
    let mut expected = if req.expected.is_empty() {
        None
    } else {
        Some(digest(&req.expected)?)
    };
    let writer = {
        let (c, cx, r, e) = (
            core.clone(),
            ctx.clone(),
            reference.clone(),
            expected.clone(),
        );
        blocking(move || c.content.writer(&cx, &r, total, e)).await
    };
    let mut writer: Writer = match writer {
        Ok(w) => w,
        Err(e) if e.is_already_exists() => {
            return Err(GrpcStatus::already_exists(format!(
                "blob with expected digest {} exists",
                req.expected
            )));
        }
        Err(e) => return Err(e.into()),
    };
    loop {
        let action = req.action;
        let mut msg = WriteContentResponse {
            action,
            offset: writer.status().offset,
            ..Default::default()
        };
        if !req.expected.is_empty() {
            let d = digest(&req.expected)?;
            if core.content.info(&ctx.ns, &d).is_ok() {
                drop(writer);
                let _ = core.content.abort(&ctx.ns, &reference);
                return Err(GrpcStatus::already_exists(format!(
                    "blob with expected digest {d} exists"
                )));
            }
            expected = Some(d);
        }
        if req.total > 0 {
            total = req.total;
            writer.set_total(total);
        }
        match WriteAction::try_from(action).unwrap_or(WriteAction::Stat) {
            WriteAction::Stat => {
                let st = writer.status();
                msg.digest = writer.digest().to_string();
                msg.started_at = Some(timestamp(st.started_at));
                msg.updated_at = Some(timestamp(st.updated_at));
                msg.total = total;
            }
            WriteAction::Write | WriteAction::Commit => {
                let current = writer.status().offset;
                if req.offset > 0 && req.offset != current {
                    return Err(GrpcStatus::out_of_range(format!(
                        "write @{} must occur at current offset {current}",
                        req.offset
                    )));
                }
                let data = std::mem::take(&mut req.data);
                let commit = action == WriteAction::Commit as i32;
                let labels = std::mem::take(&mut req.labels);
                let exp = expected.clone();
                let (w, digest_or_err, offset) = blocking(move || {
                    let mut w = writer;
                    if req.offset == 0 && current > 0 {
                        w.truncate()?;
                    }
                    if !data.is_empty() {
                        w.write(&data)?;
                    }
                    let offset = w.status().offset;
                    if commit {
                        let r = w
                            .commit(total, exp.as_ref(), labels)
                            .and_then(|(d, created)| {
                                if created {
                                    Ok(d)
                                } else {
                                    Err(Error::already_exists(format!(
                                        "content {d}: already exists"
                                    )))
                                }
                            });
                        return Ok::<_, Error>((None, Some(r), offset));
                    }
                    let d = w.digest();
                    Ok((Some(w), Some(Ok(d)), offset))
                })
                .await?;
                msg.offset = offset;
                match digest_or_err {
                    Some(Ok(d)) => msg.digest = d.to_string(),
                    Some(Err(e)) => return Err(e.into()),
                    None => {}
                }
                match w {
                    Some(w) => writer = w,
                    None => {
                        // Committed: answer and end the stream.
                        let _ = tx.send(Ok(msg)).await;
                        return Ok(());
                    }
                }
            }
        }
        if tx.send(Ok(msg)).await.is_err() {
            return Ok(());
        }
        match inbound.next().await.transpose()? {
            Some(r) => req = r,
            None => return Ok(()),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("blocking task: {e}")))?
}
