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
pub mod features;
pub mod images;
pub mod images_auth;
pub mod netstats;
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
use crate::error::{Result, io_err};
use crate::events::Exchange;
use crate::network::{NetworkManager, TaskNetworks};
use crate::runtime::Tasks;
use crate::snapshots::Snapshots;
use crate::transfer::stores::ImageStores;
use berth_snapshotter::mount::private;
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
    pub events: Arc<Exchange>,
    /// How to reach registries (the image service's pulls).
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
    pub events: Arc<Exchange>,
    pub network: NetworkConfig,
    pub root: PathBuf,
    pub state: PathBuf,
    /// `<root>/cri/output`, owner-only: the output of containers the
    /// kubelet gave no log path (`output_log`).
    pub output_root: PathBuf,
    pub config: CriConfig,
    /// The CRI view of the images (ImageService; the sandbox image).
    pub cri_images: Arc<images::CriImages>,
    pub store: store::Store,
    /// Live state of the containers (events, held stdin FIFOs).
    pub cstate: events::ContainerState,
    /// What each runtime handler's runtime can do ("" is the default).
    pub features: std::collections::HashMap<String, features::Features>,
    /// The streaming server of Exec/Attach/PortForward sessions, or why
    /// it could not start (set by `start_streaming_or_report`).
    pub stream: std::sync::OnceLock<std::result::Result<berth_stream::Server, String>>,
}

impl CriService {
    /// The service; makes its owner-only output directory.
    pub fn new(h: Handles, config: CriConfig) -> Result<Arc<CriService>> {
        // The pods' files (hosts, resolv.conf, shm) and outputs are no other
        // host user's business (bind mounts reach the files inside); also
        // tightened when an older berthd left them 0755.
        let output_root = h.root.join("cri").join("output");
        for d in [h.root.join("cri"), h.state.join("cri"), output_root.clone()] {
            private::dir(&d, private::OWNER_ONLY)
                .map_err(|e| io_err(format!("create {}", d.display()), e))?;
        }
        let mut cri_images = images::CriImages::new(
            h.images.clone(),
            h.snapshots.clone(),
            h.registry,
            h.root.clone(),
        );
        // `[cri]` was validated at start, so the name parses.
        if let Err(e) = cri_images.set_sandbox_image(&config.sandbox_image) {
            tracing::warn!("[cri] sandbox_image: {}; it is not pinned", e.chain());
        }
        let features = features::probe_all(config.handlers());
        Ok(Arc::new(CriService {
            features,
            output_root,
            cri_images: Arc::new(cri_images),
            store: store::Store::new(h.containers.clone()),
            containers: h.containers,
            images: h.images,
            snapshots: h.snapshots,
            tasks: h.tasks,
            networks: h.networks,
            task_networks: h.task_networks,
            events: h.events,
            network: h.network,
            root: h.root,
            state: h.state,
            config,
            cstate: events::ContainerState::default(),
            stream: std::sync::OnceLock::new(),
        }))
    }

    /// Where the CRI keeps per-pod files (`/etc/*`, `/dev/shm`) on the host.
    pub fn pods_dir(&self) -> PathBuf {
        self.state.join("cri").join("pods")
    }
}
