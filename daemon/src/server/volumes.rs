//! `berth.services.volumes.v1.Volumes`: named volumes (see `crate::volumes`).

use super::boundary::namespace;
use crate::core::Core;
use crate::types::timestamp;
use berth_proto::pb::berth::services::volumes::v1::volumes_server::Volumes;
use berth_proto::pb::berth::services::volumes::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct VolumesService(pub Arc<Core>);

fn to_proto(v: crate::volumes::Volume) -> Volume {
    Volume {
        name: v.name,
        mountpoint: v.mountpoint.to_string_lossy().into_owned(),
        labels: v.record.labels,
        created_at: Some(timestamp(v.record.created_at)),
    }
}

/// Runs blocking filesystem work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("volume operation panicked: {e}")))?
        .map_err(Status::from)
}

#[tonic::async_trait]
impl Volumes for VolumesService {
    async fn create(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let store = self.0.volumes.clone();
        let (v, created) = blocking(move || store.create(&ns, &req.name, req.labels)).await?;
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(to_proto(v)),
            created,
        }))
    }

    async fn get(
        &self,
        req: Request<GetVolumeRequest>,
    ) -> Result<Response<GetVolumeResponse>, Status> {
        let ns = namespace(&req)?;
        let name = req.into_inner().name;
        let store = self.0.volumes.clone();
        let v = blocking(move || store.get(&ns, &name)).await?;
        Ok(Response::new(GetVolumeResponse {
            volume: Some(to_proto(v)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let ns = namespace(&req)?;
        let store = self.0.volumes.clone();
        let vs = blocking(move || store.list(&ns)).await?;
        Ok(Response::new(ListVolumesResponse {
            volumes: vs.into_iter().map(to_proto).collect(),
        }))
    }

    async fn delete(&self, req: Request<DeleteVolumeRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let name = req.into_inner().name;
        let store = self.0.volumes.clone();
        blocking(move || store.delete(&ns, &name)).await?;
        Ok(Response::new(()))
    }

    async fn prune(
        &self,
        req: Request<PruneVolumesRequest>,
    ) -> Result<Response<PruneVolumesResponse>, Status> {
        let ns = namespace(&req)?;
        let store = self.0.volumes.clone();
        let (deleted, reclaimed_bytes) = blocking(move || store.prune(&ns)).await?;
        Ok(Response::new(PruneVolumesResponse {
            deleted,
            reclaimed_bytes,
        }))
    }
}
