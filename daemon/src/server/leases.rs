//! `containerd.services.leases.v1.Leases`.

use super::boundary::namespace;
use crate::core::Core;
use crate::metadata::leases::{LeaseRecord, Resource as LeaseResource};
use crate::types::timestamp;
use berth_proto::filters::{Adaptor, Filter, label_field};
use berth_proto::services::leases::v1::leases_server::Leases;
use berth_proto::services::leases::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct LeasesService(pub Arc<Core>);

fn to_proto(id: String, rec: LeaseRecord) -> Lease {
    Lease {
        id,
        created_at: Some(timestamp(rec.created_at)),
        labels: rec.labels,
    }
}

fn resource(r: Option<Resource>) -> Result<LeaseResource, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("resource must be set"))?;
    Ok(LeaseResource {
        id: r.id,
        kind: r.r#type,
    })
}

#[tonic::async_trait]
impl Leases for LeasesService {
    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let (id, rec) = self.0.leases.create(&ns, &req.id, req.labels)?;
        Ok(Response::new(CreateResponse {
            lease: Some(to_proto(id, rec)),
        }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        self.0.leases.delete(&ns, &req.id, req.sync).await?;
        Ok(Response::new(()))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse_all(&req.into_inner().filters)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let leases = self
            .0
            .leases
            .list(&ns)?
            .into_iter()
            .map(|(id, rec)| to_proto(id, rec))
            .filter(|l| filter.matches(&Fields(l)))
            .collect();
        Ok(Response::new(ListResponse { leases }))
    }

    async fn add_resource(&self, req: Request<AddResourceRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        self.0
            .leases
            .add_resource(&ns, &req.id, resource(req.resource)?)?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        self.0
            .leases
            .delete_resource(&ns, &req.id, resource(req.resource)?)?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let ns = namespace(&req)?;
        let resources = self
            .0
            .leases
            .list_resources(&ns, &req.into_inner().id)?
            .into_iter()
            .map(|r| Resource {
                id: r.id,
                r#type: r.kind,
            })
            .collect();
        Ok(Response::new(ListResourcesResponse { resources }))
    }
}

struct Fields<'a>(&'a Lease);

impl Adaptor for Fields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "id" if path.len() == 1 => Some(self.0.id.clone()),
            "labels" => label_field(&self.0.labels, &path[1..]),
            _ => None,
        }
    }
}
