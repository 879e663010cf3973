//! The Kubernetes CRI v1 runtime (pods and their containers) over berthd's
//! own stores. Pods and containers are containerd container records in
//! namespace [`NAMESPACE`] (so `ctr -n k8s.io c ls` shows them) with the
//! CRI metadata as an extension (`store`); tasks run through the task
//! service, networks through the network manager.
//!
//! Only `server/cri_*.rs` and the wiring in `daemon` use this module; it
//! takes the narrow handles it needs, never the whole `Core`.

pub mod container;
pub mod container_create;
pub mod container_exit;
pub mod events;
pub mod exec;
pub mod images;
pub mod sandbox;
pub mod sandbox_files;
pub mod sandbox_image;
pub mod sandbox_spec;
pub mod sandbox_status;
pub mod seccomp_default;
pub mod security;
pub mod spec;
pub mod spec_mounts;
pub mod stats;
pub mod status;
pub mod store;
pub mod stream;

use crate::config::{CriConfig, NetworkConfig, RegistryConfig};
use crate::containers::Containers;
use crate::events::Exchange;
use crate::logs::LogStore;
use crate::network::{NetworkManager, TaskNetworks};
use crate::runtime::Tasks;
use crate::snapshots::Snapshots;
use crate::transfer::stores::ImageStores;
use std::path::PathBuf;
use std::sync::Arc;

pub use store::NAMESPACE;

/// The handles the CRI service works with.
pub struct Handles {
    pub containers: Arc<Containers>,
    /// Content, images, leases and the unpacker (pulls, image lookups).
    pub images: ImageStores,
    pub snapshots: Arc<Snapshots>,
    pub tasks: Arc<Tasks>,
    pub networks: Arc<NetworkManager>,
    pub task_networks: Arc<TaskNetworks>,
    pub logs: Arc<LogStore>,
    pub events: Arc<Exchange>,
    pub registry: RegistryConfig,
    pub network: NetworkConfig,
    /// berthd's root and state directories (pod files live below state).
    pub root: PathBuf,
    pub state: PathBuf,
}

/// The CRI runtime service.
pub struct CriService {
    pub containers: Arc<Containers>,
    pub images: ImageStores,
    pub snapshots: Arc<Snapshots>,
    pub tasks: Arc<Tasks>,
    pub networks: Arc<NetworkManager>,
    pub task_networks: Arc<TaskNetworks>,
    pub logs: Arc<LogStore>,
    pub events: Arc<Exchange>,
    pub registry: RegistryConfig,
    pub network: NetworkConfig,
    pub root: PathBuf,
    pub state: PathBuf,
    pub config: CriConfig,
    pub store: store::Store,
    /// Live state of the containers (events, held stdin FIFOs).
    pub cstate: events::ContainerState,
    /// The streaming server of Exec/Attach/PortForward sessions, or why
    /// it could not start (set by `start_streaming_or_report`).
    pub stream: std::sync::OnceLock<std::result::Result<berth_stream::Server, String>>,
}

impl CriService {
    pub fn new(h: Handles, config: CriConfig) -> Arc<CriService> {
        Arc::new(CriService {
            store: store::Store::new(h.containers.clone()),
            containers: h.containers,
            images: h.images,
            snapshots: h.snapshots,
            tasks: h.tasks,
            networks: h.networks,
            task_networks: h.task_networks,
            logs: h.logs,
            events: h.events,
            registry: h.registry,
            network: h.network,
            root: h.root,
            state: h.state,
            config,
            cstate: events::ContainerState::default(),
            stream: std::sync::OnceLock::new(),
        })
    }

    /// Where the CRI keeps per-pod files (`/etc/*`, `/dev/shm`) on the host.
    pub fn pods_dir(&self) -> PathBuf {
        self.state.join("cri").join("pods")
    }
}
