//! `containerd.services.diff.v1.Diff`: apply layers to mounts, compute
//! layers from mounts.

use super::boundary::ctx;
use crate::core::Core;
use crate::error::Error;
use crate::types::Descriptor;
use berth_proto::services::diff::v1 as api;
use berth_proto::services::diff::v1::diff_server::Diff;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct DiffService(pub Arc<Core>);

fn mounts(m: Vec<berth_proto::types::Mount>) -> Vec<berth_snapshotter::Mount> {
    m.into_iter().map(Into::into).collect()
}

#[tonic::async_trait]
impl Diff for DiffService {
    async fn apply(
        &self,
        req: Request<api::ApplyRequest>,
    ) -> Result<Response<api::ApplyResponse>, Status> {
        let cx = ctx(&req)?;
        let r = req.into_inner();
        let desc: Descriptor = r
            .diff
            .ok_or_else(|| Status::invalid_argument("diff descriptor must be set"))?
            .into();
        if r.mounts.is_empty() {
            return Err(Status::invalid_argument(
                "mounts must be given to apply a layer to",
            ));
        }
        let core = self.0.clone();
        let applied = tokio::task::spawn_blocking(move || {
            crate::snapshots::diff::apply_blob(
                &core.content,
                &cx.ns,
                &desc,
                &mounts(r.mounts),
                &core.state.join("tmpmounts"),
            )
        })
        .await
        .map_err(|e| Status::internal(format!("apply task: {e}")))??;
        Ok(Response::new(api::ApplyResponse {
            applied: Some(
                Descriptor {
                    media_type: crate::images::oci::media::OCI_LAYER.to_string(),
                    digest: applied.diff_id.to_string(),
                    size: applied.size as i64,
                    annotations: HashMap::new(),
                }
                .into(),
            ),
        }))
    }

    async fn diff(
        &self,
        req: Request<api::DiffRequest>,
    ) -> Result<Response<api::DiffResponse>, Status> {
        let cx = ctx(&req)?;
        let r = req.into_inner();
        if r.right.is_empty() {
            return Err(Status::invalid_argument(
                "right (upper) mounts must be given",
            ));
        }
        let core = self.0.clone();
        let d = tokio::task::spawn_blocking(move || {
            crate::snapshots::diff::diff_mounts(
                &core.content,
                &cx,
                &mounts(r.left),
                &mounts(r.right),
                &r.media_type,
                &r.r#ref,
                r.labels,
                &core.state.join("tmpmounts"),
            )
        })
        .await
        .map_err(|e| Status::internal(format!("diff task: {e}")))?
        .map_err(|e: Error| Status::from(e))?;
        Ok(Response::new(api::DiffResponse {
            diff: Some(d.into()),
        }))
    }
}
