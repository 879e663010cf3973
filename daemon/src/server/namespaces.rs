//! `containerd.services.namespaces.v1.Namespaces` (no namespace header needed).

use super::boundary::paths;
use crate::core::Core;
use berth_proto::services::namespaces::v1::namespaces_server::Namespaces;
use berth_proto::services::namespaces::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct NamespacesService(pub Arc<Core>);

#[tonic::async_trait]
impl Namespaces for NamespacesService {
    async fn get(
        &self,
        req: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let name = req.into_inner().name;
        let labels = self.0.namespaces.get(&name)?;
        Ok(Response::new(GetNamespaceResponse {
            namespace: Some(Namespace { name, labels }),
        }))
    }

    async fn list(
        &self,
        req: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let filter = berth_proto::filters::Filter::parse(&req.into_inner().filter)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let namespaces = self
            .0
            .namespaces
            .list()?
            .into_iter()
            .map(|(name, labels)| Namespace { name, labels })
            .filter(|n| filter.matches(&Fields(n)))
            .collect();
        Ok(Response::new(ListNamespacesResponse { namespaces }))
    }

    async fn create(
        &self,
        req: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let ns = req
            .into_inner()
            .namespace
            .ok_or_else(|| Status::invalid_argument("namespace must be set"))?;
        let labels = self.0.namespaces.create(&ns.name, ns.labels)?;
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(Namespace {
                name: ns.name,
                labels,
            }),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let req = req.into_inner();
        let ns = req
            .namespace
            .ok_or_else(|| Status::invalid_argument("namespace must be set"))?;
        let labels = self
            .0
            .namespaces
            .update(&ns.name, ns.labels, &paths(req.update_mask))?;
        Ok(Response::new(UpdateNamespaceResponse {
            namespace: Some(Namespace {
                name: ns.name,
                labels,
            }),
        }))
    }

    async fn delete(&self, req: Request<DeleteNamespaceRequest>) -> Result<Response<()>, Status> {
        let name = req.into_inner().name;
        let core = self.0.clone();
        let n = name.clone();
        let held = tokio::task::spawn_blocking(move || core.snapshots.ns_has_snapshots(&n))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut held: Vec<String> = held
            .iter()
            .map(|s| format!("snapshots on {s:?} snapshotter"))
            .collect();
        // Volumes live outside the database; a namespace holding them is
        // not empty either.
        if !self.0.volumes.list(&name)?.is_empty() {
            held.push("volumes".into());
        }
        self.0.namespaces.delete(&name, &held)?;
        Ok(Response::new(()))
    }
}

struct Fields<'a>(&'a Namespace);

impl berth_proto::filters::Adaptor for Fields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "name" if path.len() == 1 => Some(self.0.name.clone()),
            "labels" => berth_proto::filters::label_field(&self.0.labels, &path[1..]),
            _ => None,
        }
    }
}
