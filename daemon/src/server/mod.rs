//! gRPC (and ttrpc) adapters over the in-process services of [`Core`], one
//! file per API. The only place besides `daemon` that holds the whole
//! `Core`; nothing else uses this module.
//!
//! `boundary` is the one place where daemon errors become gRPC statuses
//! and where request metadata (namespace, lease) is read; the adapters use
//! it, and this file only declares them and serves.

mod boundary;
mod containers;
mod content;
mod cri_images;
mod cri_runtime;
mod diff;
mod events;
mod images;
mod introspection;
mod leases;
mod logs;
mod namespaces;
mod networks;
mod rpclog;
mod snapshots;
mod tasks;
mod transfer;
mod version;
mod volumes;

use crate::core::Core;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

pub use cri_runtime::cri_service;
pub use introspection::plugin_list;

/// Serves the gRPC API on the unix socket `address` until `shutdown`.
pub async fn serve_grpc(
    core: Arc<Core>,
    cri: Option<Arc<crate::cri::CriService>>,
    listener: tokio::net::UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    use berth_proto::services as api;
    let streams = transfer::Streams::new();
    // The CRI's images: the runtime's own view, so that the sandbox images
    // it pulls are the image service's.
    let images = cri.as_ref().map(|c| c.cri_images.clone());
    // grpc.health.v1 as containerd serves it: the whole server ("") is
    // SERVING while it listens. Clients poll it to learn that a restarted
    // daemon is back (dockerd resubscribes to events only once it answers).
    let (_, health) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(rpclog::RpcLog))
        .add_service(health)
        .add_service(api::version::v1::version_server::VersionServer::new(
            version::VersionService,
        ))
        .add_service(
            api::introspection::v1::introspection_server::IntrospectionServer::new(
                introspection::IntrospectionService::new(core.clone()),
            ),
        )
        .add_service(
            api::namespaces::v1::namespaces_server::NamespacesServer::new(
                namespaces::NamespacesService(core.clone()),
            ),
        )
        .add_service(
            api::content::v1::content_server::ContentServer::new(content::ContentService(
                core.clone(),
            ))
            .max_decoding_message_size(16 << 20),
        )
        .add_service(api::snapshots::v1::snapshots_server::SnapshotsServer::new(
            snapshots::SnapshotsService(core.clone()),
        ))
        .add_service(api::diff::v1::diff_server::DiffServer::new(
            diff::DiffService(core.clone()),
        ))
        .add_service(
            api::containers::v1::containers_server::ContainersServer::new(
                containers::ContainersService(core.clone()),
            ),
        )
        .add_service(api::tasks::v1::tasks_server::TasksServer::new(
            tasks::TasksService(core.clone()),
        ))
        .add_service(api::images::v1::images_server::ImagesServer::new(
            images::ImagesService(core.clone()),
        ))
        .add_service(api::leases::v1::leases_server::LeasesServer::new(
            leases::LeasesService(core.clone()),
        ))
        .add_service(api::events::v1::events_server::EventsServer::new(
            events::EventsService(core.clone()),
        ))
        .add_service(
            berth_proto::pb::berth::services::networks::v1::networks_server::NetworksServer::new(
                networks::NetworksService(core.clone()),
            ),
        )
        .add_service(
            berth_proto::pb::berth::services::logs::v1::logs_server::LogsServer::new(
                logs::LogsService(core.clone()),
            ),
        )
        .add_service(api::streaming::v1::streaming_server::StreamingServer::new(
            transfer::StreamingService(streams.clone()),
        ))
        .add_service(api::transfer::v1::transfer_server::TransferServer::new(
            transfer::TransferService::new(core.clone(), streams),
        ))
        .add_service(
            berth_proto::pb::berth::services::volumes::v1::volumes_server::VolumesServer::new(
                volumes::VolumesService(core.clone()),
            ),
        )
        .add_optional_service(images.map(|i| {
            berth_proto::cri::image_service_server::ImageServiceServer::new(
                cri_images::CriImagesService(i),
            )
        }))
        .add_optional_service(cri.map(|c| {
            berth_proto::cri::runtime_service_server::RuntimeServiceServer::new(
                cri_runtime::CriRuntime(c),
            )
        }))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
}

/// Serves the ttrpc events endpoint shims publish to.
pub async fn serve_ttrpc(
    core: Arc<Core>,
    listener: tokio::net::UnixListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use berth_proto::pb::containerd::services::events::ttrpc::v1::events_ttrpc;
    berth_proto::ttrpc::Server::new()
        .register(events_ttrpc::EventsServer(Arc::new(events::TtrpcEvents(
            core,
        ))))
        .serve(listener, shutdown)
        .await
}

/// Binds a unix socket with the given mode; a stale socket at `path` is
/// cleared first under the daemon's lock (`instance::clear_stale_socket`).
pub fn bind(path: &Path, mode: u32, gid: Option<u32>) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    // A directory we create only lets clients through to the socket; an
    // existing one (maybe /tmp) is the admin's.
    if let Some(dir) = path.parent() {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o711)
            .create(dir)?;
    }
    // No removal first: a socket at `path` is another process's (the
    // daemon cleared a crashed one's under its lock).
    let l = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(g) = gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(g)))
            .map_err(std::io::Error::from)?;
    }
    Ok(l)
}
