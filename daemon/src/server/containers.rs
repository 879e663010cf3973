//! `containerd.services.containers.v1.Containers`.

use super::boundary::{namespace, paths};
use super::events::async_stream;
use crate::containers::{Container as Stored, ContainerRecord};
use crate::core::Core;
use crate::types::{from_timestamp, timestamp};
use berth_proto::services::containers::v1::containers_server::Containers;
use berth_proto::services::containers::v1::*;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct ContainersService(pub Arc<Core>);

pub(crate) fn to_proto(c: Stored) -> Container {
    let r = c.record;
    Container {
        id: c.id,
        labels: r.labels,
        image: r.image,
        runtime: Some(container::Runtime {
            name: r.runtime,
            options: r.runtime_options.map(Into::into),
        }),
        spec: r.spec.map(Into::into),
        snapshotter: r.snapshotter,
        snapshot_key: r.snapshot_key,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        extensions: r
            .extensions
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect(),
        sandbox: r.sandbox,
    }
}

fn from_proto(c: Option<Container>) -> Result<Stored, Status> {
    let c = c.ok_or_else(|| Status::invalid_argument("container must be set"))?;
    let rt = c.runtime.unwrap_or_default();
    Ok(Stored {
        id: c.id,
        record: ContainerRecord {
            labels: c.labels,
            image: c.image,
            runtime: rt.name,
            runtime_options: rt.options.map(Into::into),
            spec: c.spec.map(Into::into),
            snapshotter: c.snapshotter,
            snapshot_key: c.snapshot_key,
            created_at: c.created_at.as_ref().map_or(0, from_timestamp),
            updated_at: c.updated_at.as_ref().map_or(0, from_timestamp),
            extensions: c
                .extensions
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect(),
            sandbox: c.sandbox,
        },
    })
}

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn get(
        &self,
        req: Request<GetContainerRequest>,
    ) -> Result<Response<GetContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let c = self.0.containers.get(&ns, &req.into_inner().id)?;
        Ok(Response::new(GetContainerResponse {
            container: Some(to_proto(c)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let ns = namespace(&req)?;
        let containers = self
            .0
            .containers
            .list(&ns, &req.into_inner().filters)?
            .into_iter()
            .map(to_proto)
            .collect();
        Ok(Response::new(ListContainersResponse { containers }))
    }

    type ListStreamStream =
        Pin<Box<dyn Stream<Item = Result<ListContainerMessage, Status>> + Send>>;

    async fn list_stream(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let ns = namespace(&req)?;
        let list = self.0.containers.list(&ns, &req.into_inner().filters)?;
        Ok(Response::new(async_stream(move |tx| async move {
            for c in list {
                let msg = ListContainerMessage {
                    container: Some(to_proto(c)),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
        })))
    }

    async fn create(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let c = from_proto(req.into_inner().container)?;
        let created = self.0.containers.create(&ns, c)?;
        Ok(Response::new(CreateContainerResponse {
            container: Some(to_proto(created)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let c = from_proto(r.container)?;
        let updated = self.0.containers.update(&ns, c, &paths(r.update_mask))?;
        Ok(Response::new(UpdateContainerResponse {
            container: Some(to_proto(updated)),
        }))
    }

    async fn delete(&self, req: Request<DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().id;
        self.0.containers.delete(&ns, &id)?;
        // The container's log goes with it (a shim still writing, its task
        // not deleted, writes on to an unlinked file).
        if let Err(e) = self.0.logs.remove(&ns, &id) {
            tracing::warn!("container {ns}/{id}: {}", e.chain());
        }
        Ok(Response::new(()))
    }
}
