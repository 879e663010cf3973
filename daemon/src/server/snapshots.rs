//! `containerd.services.snapshots.v1.Snapshots`, namespaced, over the
//! loaded snapshotters (chosen by the request's `snapshotter` field).

use super::boundary::{ctx, namespace};
use crate::core::Core;
use crate::error::Error;
use berth_proto::services::snapshots::v1 as api;
use berth_proto::services::snapshots::v1::snapshots_server::Snapshots;
use berth_snapshotter::proxy::{info_from_proto, info_to_proto};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct SnapshotsService(pub Arc<Core>);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("snapshot task: {e}")))?
        .map_err(Status::from)
}

fn mounts(m: Vec<berth_snapshotter::Mount>) -> Vec<berth_proto::types::Mount> {
    m.into_iter().map(Into::into).collect()
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        req: Request<api::PrepareSnapshotRequest>,
    ) -> Result<Response<api::PrepareSnapshotResponse>, Status> {
        let cx = ctx(&req)?;
        let r = req.into_inner();
        let core = self.0.clone();
        let m = blocking(move || {
            core.snapshots
                .prepare(&cx, &r.snapshotter, &r.key, &r.parent, r.labels)
        })
        .await?;
        Ok(Response::new(api::PrepareSnapshotResponse {
            mounts: mounts(m),
        }))
    }

    async fn view(
        &self,
        req: Request<api::ViewSnapshotRequest>,
    ) -> Result<Response<api::ViewSnapshotResponse>, Status> {
        let cx = ctx(&req)?;
        let r = req.into_inner();
        let core = self.0.clone();
        let m = blocking(move || {
            core.snapshots
                .view(&cx, &r.snapshotter, &r.key, &r.parent, r.labels)
        })
        .await?;
        Ok(Response::new(api::ViewSnapshotResponse {
            mounts: mounts(m),
        }))
    }

    async fn mounts(
        &self,
        req: Request<api::MountsRequest>,
    ) -> Result<Response<api::MountsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let core = self.0.clone();
        let m = blocking(move || core.snapshots.mounts(&ns, &r.snapshotter, &r.key)).await?;
        Ok(Response::new(api::MountsResponse { mounts: mounts(m) }))
    }

    async fn commit(
        &self,
        req: Request<api::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let cx = ctx(&req)?;
        let r = req.into_inner();
        let core = self.0.clone();
        blocking(move || {
            core.snapshots
                .commit(&cx, &r.snapshotter, &r.name, &r.key, r.labels)
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<api::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let core = self.0.clone();
        blocking(move || core.snapshots.remove(&ns, &r.snapshotter, &r.key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<api::StatSnapshotRequest>,
    ) -> Result<Response<api::StatSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let core = self.0.clone();
        let i = blocking(move || core.snapshots.stat(&ns, &r.snapshotter, &r.key)).await?;
        Ok(Response::new(api::StatSnapshotResponse {
            info: Some(info_to_proto(i)),
        }))
    }

    async fn update(
        &self,
        req: Request<api::UpdateSnapshotRequest>,
    ) -> Result<Response<api::UpdateSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("info must be set"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let core = self.0.clone();
        let i = blocking(move || {
            core.snapshots
                .update(&ns, &r.snapshotter, info_from_proto(info), &paths)
        })
        .await?;
        Ok(Response::new(api::UpdateSnapshotResponse {
            info: Some(info_to_proto(i)),
        }))
    }

    type ListStream =
        Pin<Box<dyn Stream<Item = Result<api::ListSnapshotsResponse, Status>> + Send>>;

    async fn list(
        &self,
        req: Request<api::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let core = self.0.clone();
        let infos = blocking(move || core.snapshots.list(&ns, &r.snapshotter, &r.filters)).await?;
        let blocks: Vec<Result<api::ListSnapshotsResponse, Status>> = infos
            .chunks(100)
            .map(|c| {
                Ok(api::ListSnapshotsResponse {
                    info: c.iter().cloned().map(info_to_proto).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(blocks))))
    }

    async fn usage(
        &self,
        req: Request<api::UsageRequest>,
    ) -> Result<Response<api::UsageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let core = self.0.clone();
        let u = blocking(move || core.snapshots.usage(&ns, &r.snapshotter, &r.key)).await?;
        Ok(Response::new(api::UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, req: Request<api::CleanupRequest>) -> Result<Response<()>, Status> {
        let _ns = namespace(&req)?;
        let r = req.into_inner();
        let core = self.0.clone();
        blocking(move || core.snapshots.cleanup(&r.snapshotter)).await?;
        Ok(Response::new(()))
    }
}
