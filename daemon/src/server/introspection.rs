//! `containerd.services.introspection.v1.Introspection`: the plugins this
//! daemon really runs, and the server's persistent identity.

use crate::core::Core;
use berth_proto::filters::{Adaptor, Filter};
use berth_proto::services::introspection::v1::introspection_server::Introspection;
use berth_proto::services::introspection::v1::*;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct IntrospectionService {
    core: Arc<Core>,
}

impl IntrospectionService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

fn plugin(kind: &str, id: &str, requires: &[&str], exports: &[(&str, String)]) -> Plugin {
    Plugin {
        r#type: kind.to_string(),
        id: id.to_string(),
        requires: requires.iter().map(|s| s.to_string()).collect(),
        platforms: vec![],
        exports: exports
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<HashMap<_, _>>(),
        capabilities: vec![],
        init_err: None,
    }
}

/// The plugins this daemon runs, in containerd's type/id vocabulary.
pub fn plugin_list(core: &Core) -> Vec<Plugin> {
    let root = core.root.display().to_string();
    let mut v = vec![
        plugin(
            "io.containerd.content.v1",
            "content",
            &[],
            &[("root", format!("{root}/content"))],
        ),
        plugin(
            "io.containerd.metadata.v1",
            "redb",
            &["io.containerd.content.v1"],
            &[("path", format!("{root}/metadata.redb"))],
        ),
        plugin("io.containerd.event.v1", "exchange", &[], &[]),
        plugin(
            "io.containerd.gc.v1",
            "scheduler",
            &["io.containerd.metadata.v1"],
            &[],
        ),
        plugin(
            "io.containerd.lease.v1",
            "manager",
            &["io.containerd.metadata.v1"],
            &[],
        ),
        plugin("io.containerd.streaming.v1", "manager", &[], &[]),
        plugin(
            "io.containerd.transfer.v1",
            "local",
            &["io.containerd.lease.v1", "io.containerd.metadata.v1"],
            &[],
        ),
    ];
    let host = crate::images::oci::Platform::host();
    for name in core.snapshots.names() {
        let mut p = plugin(
            "io.containerd.snapshotter.v1",
            &name,
            &["io.containerd.metadata.v1"],
            &[("root", format!("{root}/snapshots/{name}"))],
        );
        p.platforms.push(berth_proto::types::Platform {
            os: host.os.clone(),
            architecture: host.architecture.clone(),
            variant: host.variant.clone(),
            ..Default::default()
        });
        v.push(p);
    }
    v.push(plugin(
        "io.containerd.differ.v1",
        "walking",
        &["io.containerd.metadata.v1"],
        &[],
    ));
    for id in [
        "version",
        "snapshots",
        "diff",
        "containers",
        "tasks",
        "introspection",
        "namespaces",
        "content",
        "images",
        "leases",
        "events",
        "streaming",
        "transfer",
        "healthcheck",
    ] {
        v.push(plugin("io.containerd.grpc.v1", id, &[], &[]));
    }
    // berth's own APIs (berth.services.networks.v1, berth.services.volumes.v1,
    // berth.services.logs.v1), gRPC services like containerd's.
    v.push(plugin("io.containerd.grpc.v1", "networks", &[], &[]));
    v.push(plugin("io.containerd.grpc.v1", "volumes", &[], &[]));
    v.push(plugin("io.containerd.grpc.v1", "logs", &[], &[]));
    v.push(plugin("io.containerd.ttrpc.v1", "events", &[], &[]));
    v
}

struct Fields<'a>(&'a Plugin);

impl Adaptor for Fields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path.first()?.as_str(), path.len()) {
            ("type", 1) => Some(self.0.r#type.clone()),
            ("id", 1) => Some(self.0.id.clone()),
            ("capabilities", 2) => self
                .0
                .capabilities
                .contains(&path[1])
                .then(|| path[1].clone()),
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl Introspection for IntrospectionService {
    async fn plugins(
        &self,
        req: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        let filter = Filter::parse_all(&req.into_inner().filters)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let plugins = plugin_list(&self.core)
            .into_iter()
            .filter(|p| filter.matches(&Fields(p)))
            .collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    async fn server(&self, _: Request<()>) -> Result<Response<ServerResponse>, Status> {
        let pidns = std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino());
        Ok(Response::new(ServerResponse {
            uuid: self.core.uuid.clone(),
            pid: u64::from(std::process::id()),
            pidns,
            deprecations: vec![],
        }))
    }

    async fn plugin_info(
        &self,
        req: Request<PluginInfoRequest>,
    ) -> Result<Response<PluginInfoResponse>, Status> {
        let req = req.into_inner();
        if req.options.is_some() {
            return Err(Status::unimplemented(format!(
                "plugin info options are not supported for {}.{}",
                req.r#type, req.id
            )));
        }
        let plugin = plugin_list(&self.core)
            .into_iter()
            .find(|p| p.r#type == req.r#type && p.id == req.id)
            .ok_or_else(|| {
                Status::not_found(format!("plugin {}.{}: not found", req.r#type, req.id))
            })?;
        Ok(Response::new(PluginInfoResponse {
            plugin: Some(plugin),
            extra: None,
        }))
    }
}
