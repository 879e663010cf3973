//! `berth.services.networks.v1.Networks`: berthd's CNI networks. They are
//! host-wide (conflists in one directory, bridges and subnets on the host),
//! so no namespace header is read; removal checks every namespace's
//! containers for [`NETWORKS_LABEL`].

use crate::core::Core;
use crate::error::{Error, Result};
use crate::network::{NETWORKS_LABEL, NetConfList, NetworkSpec, networks_in_label};
use crate::types::timestamp;
use berth_proto::pb::berth::services::networks::v1::networks_server::Networks;
use berth_proto::pb::berth::services::networks::v1::*;
use serde_json::Value;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct NetworksService(pub Arc<Core>);

/// What the API shows of a conflist.
fn to_proto(n: &NetConfList, default_network: &str) -> Network {
    let first = n.plugins.first();
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    // Gateway of the first IPAM range that names one.
    let gateway = n
        .plugins
        .iter()
        .filter_map(|p| p.get("ipam"))
        .flat_map(|ipam| {
            ipam.get("ranges")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|set| set.as_array().into_iter().flatten())
                .filter_map(|r| r.get("gateway"))
                .chain(ipam.get("gateway"))
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .next()
        .unwrap_or_default();
    // As berthd writes them: an internal bridge neither masquerades nor
    // routes by default.
    let internal = first.is_some_and(|p| {
        p.get("ipMasq").and_then(Value::as_bool) != Some(true)
            && p.get("ipam").and_then(|i| i.get("routes")).is_none()
    });
    let created_at = std::fs::metadata(&n.path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| timestamp(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)));
    Network {
        name: n.name.clone(),
        driver: s(first.and_then(|p| p.get("type"))),
        subnets: n.subnets().iter().map(ToString::to_string).collect(),
        gateway,
        internal,
        default: n.name == default_network,
        plugins: n.plugins.iter().map(|p| s(p.get("type"))).collect(),
        cni_version: n.cni_version.clone(),
        config_path: n.path.display().to_string(),
        created_at,
        config: serde_json::to_vec(&n.raw).unwrap_or_default(),
    }
}

impl NetworksService {
    /// `namespace/container` of every container whose label names `name`.
    fn users(&self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (ns, _) in self.0.namespaces.list()? {
            for c in self.0.containers.list(&ns, &[])? {
                if c.record
                    .labels
                    .get(NETWORKS_LABEL)
                    .is_some_and(|v| networks_in_label(v).any(|n| n == name))
                {
                    out.push(format!("{ns}/{}", c.id));
                }
            }
        }
        Ok(out)
    }
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl Networks for NetworksService {
    async fn create(
        &self,
        req: Request<CreateNetworkRequest>,
    ) -> Result<Response<CreateNetworkResponse>, Status> {
        let r = req.into_inner();
        let nets = &self.0.networks;
        // The default network's subnet is taken even before its first use.
        nets.ensure_default().await?;
        let n = nets
            .create(&NetworkSpec {
                name: r.name,
                subnet: opt(r.subnet),
                gateway: opt(r.gateway),
                internal: r.internal,
            })
            .await?;
        Ok(Response::new(CreateNetworkResponse {
            network: Some(to_proto(&n, nets.default_network())),
        }))
    }

    async fn get(
        &self,
        req: Request<GetNetworkRequest>,
    ) -> Result<Response<GetNetworkResponse>, Status> {
        let nets = &self.0.networks;
        let n = nets.network(&req.into_inner().name).await?;
        Ok(Response::new(GetNetworkResponse {
            network: Some(to_proto(&n, nets.default_network())),
        }))
    }

    async fn list(
        &self,
        _req: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        let nets = &self.0.networks;
        // Listed from the start, as docker lists `bridge`.
        nets.ensure_default().await?;
        let networks = nets
            .list()?
            .iter()
            .map(|n| to_proto(n, nets.default_network()))
            .collect();
        Ok(Response::new(ListNetworksResponse { networks }))
    }

    async fn delete(&self, req: Request<DeleteNetworkRequest>) -> Result<Response<()>, Status> {
        let name = req.into_inner().name;
        let nets = &self.0.networks;
        if name != nets.default_network() {
            let users = self.users(&name)?;
            if !users.is_empty() {
                return Err(Error::precondition(format!(
                    "network {name:?} is in use by container(s) {}",
                    users.join(", ")
                ))
                .into());
            }
        }
        nets.remove(&name).await?;
        Ok(Response::new(()))
    }
}
