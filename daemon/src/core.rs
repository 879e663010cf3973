//! The in-process services of one daemon, wired together. Only `daemon`
//! and the gRPC adapters in `server` hold a [`Core`]; every store and
//! service below takes just the stores it uses, so none imports this module.

use crate::config::{LogsConfig, NetworkConfig, RegistryConfig};
use crate::containers::Containers;
use crate::content::{Blobs, ContentStore};
use crate::error::{Result, io_err};
use crate::events::Exchange;
use crate::gc::Collector;
use crate::images::Images;
use crate::logs::LogStore;
use crate::metadata::Db;
use crate::metadata::leases::Leases;
use crate::metadata::namespaces::Namespaces;
use crate::metadata::trigger::GcTrigger;
use crate::network::{NetworkManager, TaskNetworks};
use crate::runtime::{RuntimeConfig, ShimManager, ShimRuntime, TaskService, Tasks};
use crate::snapshots::Snapshots;
use crate::snapshots::unpack::Unpacker;
use crate::transfer::stores::ImageStores;
use crate::volumes::Volumes;
use berth_snapshotter::mount::private;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The configuration sections the services take.
pub struct Settings {
    pub runtimes: RuntimeConfig,
    pub registry: RegistryConfig,
    pub network: NetworkConfig,
    pub logs: LogsConfig,
}

/// Everything a daemon holds.
pub struct Core {
    pub root: PathBuf,
    pub state: PathBuf,
    pub db: Arc<Db>,
    pub events: Arc<Exchange>,
    /// Asks the collector for a run.
    pub gc: GcTrigger,
    pub content: Arc<ContentStore>,
    pub images: Arc<Images>,
    pub containers: Arc<Containers>,
    pub namespaces: Namespaces,
    pub leases: Arc<Leases>,
    pub snapshots: Arc<Snapshots>,
    pub tasks: Arc<Tasks>,
    /// Unpacks images into snapshots (one, so concurrent unpacks share work).
    pub unpacker: Arc<Unpacker>,
    pub volumes: Arc<Volumes>,
    /// This installation's identity, persisted in the metadata database.
    pub uuid: String,
    /// How to reach image registries.
    pub registry: RegistryConfig,
    /// CNI networks (host-wide, not per namespace).
    pub networks: Arc<NetworkManager>,
    /// The networks of tasks (what the task service attaches and detaches).
    pub task_networks: Arc<TaskNetworks>,
    /// The settings the CRI service takes.
    pub network_config: NetworkConfig,
    /// The json-file logs of containers.
    pub logs: Arc<LogStore>,
}

impl Core {
    /// Opens the stores under `root` (creating them on first use). Must run
    /// inside a tokio runtime: the garbage collector is a task.
    pub fn open(root: &Path, state: &Path, gc_delay: Duration) -> Result<Arc<Core>> {
        Self::open_with(
            root,
            state,
            gc_delay,
            "",
            "",
            Settings {
                runtimes: RuntimeConfig::default(),
                registry: RegistryConfig::default(),
                // Networks under the state dir, never the host's /etc/cni.
                network: NetworkConfig {
                    cni_conf_dir: state.join("net.d"),
                    ..NetworkConfig::default()
                },
                logs: LogsConfig::default(),
            },
        )
    }

    /// Opens the stores, with the addresses shims are told to use and the
    /// runtime configuration.
    pub fn open_with(
        root: &Path,
        state: &Path,
        gc_delay: Duration,
        grpc_address: &str,
        ttrpc_address: &str,
        settings: Settings,
    ) -> Result<Arc<Core>> {
        let Settings {
            runtimes,
            registry,
            network,
            logs,
        } = settings;
        // Traversable but not listable, even when an admin created them
        // 0755: what lies below decides who reaches it (containerd: 0711).
        for d in [root, state] {
            private::dir(d, private::PASS_THROUGH)
                .map_err(|e| io_err(format!("create {}", d.display()), e))?;
        }
        let db = Arc::new(Db::open(&root.join("metadata.redb"))?);
        let uuid = String::from_utf8(
            db.meta_get_or_init("uuid", || uuid::Uuid::new_v4().to_string().into_bytes())?,
        )
        .unwrap_or_default();
        let blobs = Arc::new(Blobs::open(&root.join("content"))?);
        let events = Arc::new(Exchange::new());
        let snapshots = Arc::new(Snapshots::open(
            &root.join("snapshots"),
            db.clone(),
            events.clone(),
        )?);
        let (gc, requests) = GcTrigger::new();
        Arc::new(Collector::new(db.clone(), blobs.clone(), snapshots.clone()))
            .start(requests, gc_delay);
        let content = Arc::new(ContentStore::new(
            blobs,
            db.clone(),
            events.clone(),
            gc.clone(),
        ));
        let unpacker = Arc::new(Unpacker::new(
            content.clone(),
            snapshots.clone(),
            state.join("tmpmounts"),
        ));
        let containers = Arc::new(Containers::new(db.clone(), events.clone(), gc.clone()));
        let volumes = Arc::new(Volumes::open(
            &root.join("volumes"),
            db.clone(),
            containers.clone(),
        )?);
        let networks = Arc::new(NetworkManager::new(&network, state));
        let task_networks = Arc::new(TaskNetworks::new(networks.clone(), state));
        let logs = Arc::new(LogStore::new(root, logs));
        let tasks = Arc::new(
            TaskService::new(
                ShimRuntime::new(ShimManager::new(
                    state,
                    grpc_address,
                    ttrpc_address,
                    runtimes,
                )),
                containers.clone(),
                events.clone(),
            )
            .with_networks(task_networks.clone())
            .with_logs(logs.clone()),
        );
        Ok(Arc::new(Core {
            root: root.to_path_buf(),
            state: state.to_path_buf(),
            images: Arc::new(Images::new(db.clone(), events.clone(), gc.clone())),
            containers,
            volumes,
            namespaces: Namespaces::new(db.clone(), events.clone()),
            leases: Arc::new(Leases::new(db.clone(), gc.clone())),
            tasks,
            snapshots,
            unpacker,
            db,
            events,
            gc,
            content,
            uuid,
            registry,
            networks,
            task_networks,
            network_config: network,
            logs,
        }))
    }
}

impl Core {
    /// The stores an image import or pull fills.
    pub fn image_stores(&self) -> ImageStores {
        ImageStores {
            content: self.content.clone(),
            images: self.images.clone(),
            leases: self.leases.clone(),
            unpacker: self.unpacker.clone(),
        }
    }
}
