//! containerd's Snapshots gRPC API over one [`Snapshotter`], keys as given.
//! This is what a `proxy_plugins` snapshotter serves: containerd has already
//! namespaced the keys, and the `snapshotter` field of requests names the
//! plugin on containerd's side, so it is not interpreted here.

use crate::contract::{Info, Kind, Snapshotter};
use crate::error::Error;
use berth_proto::errdefs;
use berth_proto::services::snapshots::v1 as api;
use berth_proto::services::snapshots::v1::snapshots_server::Snapshots;
use berth_proto::time::timestamp;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Converts to the wire kind.
pub fn kind_to_proto(k: Kind) -> api::Kind {
    match k {
        Kind::View => api::Kind::View,
        Kind::Active => api::Kind::Active,
        Kind::Committed => api::Kind::Committed,
    }
}

/// Converts to the wire info; `name`/`parent` may be rewritten by the caller.
pub fn info_to_proto(i: Info) -> api::Info {
    api::Info {
        name: i.name,
        parent: i.parent,
        kind: kind_to_proto(i.kind) as i32,
        created_at: Some(timestamp(i.created_at)),
        updated_at: Some(timestamp(i.updated_at)),
        labels: i.labels,
    }
}

/// Converts a wire info (for Update: only name and labels matter).
pub fn info_from_proto(i: api::Info) -> Info {
    Info {
        name: i.name,
        parent: i.parent,
        kind: Kind::Active,
        created_at: 0,
        updated_at: 0,
        labels: i.labels,
    }
}

/// The one place snapshotter errors become statuses.
pub fn status(e: Error) -> Status {
    errdefs::to_status(&e)
}

/// Runs blocking snapshotter work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("snapshotter task: {e}")))?
        .map_err(status)
}

/// The service.
pub struct ProxyService {
    sn: Arc<dyn Snapshotter>,
}

impl ProxyService {
    pub fn new(sn: Arc<dyn Snapshotter>) -> Self {
        Self { sn }
    }
}

fn mounts(m: Vec<crate::mount::Mount>) -> Vec<berth_proto::types::Mount> {
    m.into_iter().map(Into::into).collect()
}

#[tonic::async_trait]
impl Snapshots for ProxyService {
    async fn prepare(
        &self,
        req: Request<api::PrepareSnapshotRequest>,
    ) -> Result<Response<api::PrepareSnapshotResponse>, Status> {
        let r = req.into_inner();
        let sn = self.sn.clone();
        let m = blocking(move || sn.prepare(&r.key, &r.parent, r.labels)).await?;
        Ok(Response::new(api::PrepareSnapshotResponse {
            mounts: mounts(m),
        }))
    }

    async fn view(
        &self,
        req: Request<api::ViewSnapshotRequest>,
    ) -> Result<Response<api::ViewSnapshotResponse>, Status> {
        let r = req.into_inner();
        let sn = self.sn.clone();
        let m = blocking(move || sn.view(&r.key, &r.parent, r.labels)).await?;
        Ok(Response::new(api::ViewSnapshotResponse {
            mounts: mounts(m),
        }))
    }

    async fn mounts(
        &self,
        req: Request<api::MountsRequest>,
    ) -> Result<Response<api::MountsResponse>, Status> {
        let r = req.into_inner();
        let sn = self.sn.clone();
        let m = blocking(move || sn.mounts(&r.key)).await?;
        Ok(Response::new(api::MountsResponse { mounts: mounts(m) }))
    }

    async fn commit(
        &self,
        req: Request<api::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let sn = self.sn.clone();
        blocking(move || sn.commit(&r.name, &r.key, r.labels)).await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<api::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let sn = self.sn.clone();
        blocking(move || sn.remove(&r.key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<api::StatSnapshotRequest>,
    ) -> Result<Response<api::StatSnapshotResponse>, Status> {
        let r = req.into_inner();
        let sn = self.sn.clone();
        let i = blocking(move || sn.stat(&r.key)).await?;
        Ok(Response::new(api::StatSnapshotResponse {
            info: Some(info_to_proto(i)),
        }))
    }

    async fn update(
        &self,
        req: Request<api::UpdateSnapshotRequest>,
    ) -> Result<Response<api::UpdateSnapshotResponse>, Status> {
        let r = req.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("info must be set"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let sn = self.sn.clone();
        let i = blocking(move || sn.update(info_from_proto(info), &paths)).await?;
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
        let r = req.into_inner();
        let sn = self.sn.clone();
        let infos = blocking(move || sn.walk(&r.filters)).await?;
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
        let r = req.into_inner();
        let sn = self.sn.clone();
        let u = blocking(move || sn.usage(&r.key)).await?;
        Ok(Response::new(api::UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, _: Request<api::CleanupRequest>) -> Result<Response<()>, Status> {
        let sn = self.sn.clone();
        blocking(move || sn.cleanup()).await?;
        Ok(Response::new(()))
    }
}
