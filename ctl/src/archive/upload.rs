//! Putting blobs into the content store under a lease, as the client-side
//! import does: [`Upload`] streams one blob through `Content.Write` (the
//! daemon checks its digest), [`put_blob`] uploads one held in memory, and
//! the content facts an import checks and sets (presence, labels).

use crate::ctx::{Ctx, label_mask};
use crate::error::CtlError;
use anyhow::{Result, bail};
use berth_proto::client::with_lease;
use berth_proto::services::content::v1 as content;
use berth_proto::services::content::v1::content_client::ContentClient;
use sha2::Digest as _;
use std::collections::HashMap;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// The gRPC code of a failed call, if it failed with a status.
pub(super) fn code(e: &anyhow::Error) -> Option<tonic::Code> {
    e.downcast_ref::<tonic::Status>().map(tonic::Status::code)
}

/// One blob going up through `Content.Write`, message by message.
pub(super) struct Upload {
    tx: tokio::sync::mpsc::Sender<content::WriteContentRequest>,
    rx: tonic::Streaming<content::WriteContentResponse>,
    reference: String,
    offset: i64,
    hash: sha2::Sha256,
}

impl Upload {
    /// Starts an upload under `reference`; `None` when the daemon already
    /// has `expected` (it refuses a second writer with AlreadyExists).
    pub(super) async fn open(
        ctx: &Ctx,
        lease: &str,
        reference: &str,
        expected: Option<&str>,
        total: i64,
    ) -> Result<Option<Upload>> {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tx.send(content::WriteContentRequest {
            action: content::WriteAction::Stat as i32,
            r#ref: reference.to_string(),
            total,
            expected: expected.unwrap_or_default().to_string(),
            ..Default::default()
        })
        .await?;
        let first = async {
            let mut rx = ContentClient::new(ctx.ch.clone())
                .write(with_lease(ctx.req(ReceiverStream::new(rx)), lease))
                .await?
                .into_inner();
            rx.next()
                .await
                .ok_or_else(|| tonic::Status::unavailable("the daemon closed the upload"))??;
            Ok::<_, tonic::Status>(rx)
        };
        match first.await {
            Ok(rx) => Ok(Some(Upload {
                tx,
                rx,
                reference: reference.to_string(),
                offset: 0,
                hash: sha2::Sha256::new(),
            })),
            Err(s) if s.code() == tonic::Code::AlreadyExists && expected.is_some() => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    async fn send(&mut self, req: content::WriteContentRequest) -> Result<String> {
        self.tx
            .send(req)
            .await
            .map_err(|_| CtlError("the daemon closed the upload".into()))?;
        let r = self
            .rx
            .next()
            .await
            .ok_or_else(|| CtlError("the daemon closed the upload".into()))??;
        Ok(r.digest)
    }

    pub(super) async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hash.update(data);
        let req = content::WriteContentRequest {
            action: content::WriteAction::Write as i32,
            r#ref: self.reference.clone(),
            offset: self.offset,
            data: data.to_vec(),
            ..Default::default()
        };
        self.send(req).await?;
        self.offset += data.len() as i64;
        Ok(())
    }

    /// Commits under the digest of what was written (which must equal
    /// `expected` when given); a blob already present is success, once it
    /// is under our lease too.
    pub(super) async fn commit(
        mut self,
        ctx: &Ctx,
        lease: &str,
        expected: Option<&str>,
        labels: HashMap<String, String>,
    ) -> Result<(String, i64)> {
        let digest = format!("sha256:{}", hex::encode(self.hash.clone().finalize()));
        let req = content::WriteContentRequest {
            action: content::WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            total: self.offset,
            offset: self.offset,
            expected: expected.unwrap_or(&digest).to_string(),
            labels,
            ..Default::default()
        };
        match self.send(req).await {
            Ok(_) => Ok((digest, self.offset)),
            Err(e) if code(&e) == Some(tonic::Code::AlreadyExists) => {
                // A commit that finds the blob does not lease it (containerd
                // leases an existing blob only when a writer names its
                // digest), so the collector could take it: name it now.
                let held = format!("{}-held", self.reference);
                match Upload::open(ctx, lease, &held, Some(&digest), self.offset).await? {
                    None => Ok((digest, self.offset)),
                    Some(_) => {
                        Upload::abort(ctx, &held).await;
                        bail!(CtlError(format!(
                            "blob {digest} was removed while it was being imported: import again"
                        )))
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn abort(ctx: &Ctx, reference: &str) {
        let _ = ContentClient::new(ctx.ch.clone())
            .abort(ctx.req(content::AbortRequest {
                r#ref: reference.to_string(),
            }))
            .await;
    }
}

/// Uploads a small blob held in memory; returns its digest.
pub(super) async fn put_blob(
    ctx: &Ctx,
    lease: &str,
    data: &[u8],
    labels: HashMap<String, String>,
) -> Result<String> {
    let digest = digest_of(data);
    let reference = format!("berthctl-import-{}", uuid::Uuid::new_v4().simple());
    match Upload::open(ctx, lease, &reference, Some(&digest), data.len() as i64).await? {
        Some(mut up) => {
            up.write(data).await?;
            up.commit(ctx, lease, Some(&digest), labels).await?;
        }
        None => set_labels(ctx, &digest, labels).await?,
    }
    Ok(digest)
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Sets labels on a blob (the references that keep its children from
/// garbage collection).
pub(super) async fn set_labels(
    ctx: &Ctx,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    let mask = label_mask(&labels);
    ContentClient::new(ctx.ch.clone())
        .update(ctx.req(content::UpdateRequest {
            info: Some(content::Info {
                digest: digest.to_string(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(mask),
        }))
        .await?;
    Ok(())
}

/// True if the content store has `digest`.
pub(super) async fn present(ctx: &Ctx, digest: &str) -> Result<bool> {
    match ContentClient::new(ctx.ch.clone())
        .info(ctx.req(content::InfoRequest {
            digest: digest.to_string(),
        }))
        .await
    {
        Ok(i) => Ok(i.into_inner().info.is_some()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(s.into()),
    }
}
