//! Command-line syntax.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

mod extras;
mod lifecycle;
mod logs;
mod net;
mod resources;
mod run;
mod run_more;
#[cfg(test)]
mod testing;
mod volume;
pub use extras::*;
pub use lifecycle::*;
pub use logs::LogsArgs;
pub use net::NetArg;
pub use resources::{Leases, Tasks};
pub use run::{RunArgs, VolumeArg, VolumeSource};
pub use run_more::{EnvFile, RunMoreArgs, SecurityOpt};
pub use volume::Volume;

#[derive(Parser, Debug)]
#[command(
    name = "berthctl",
    version,
    about = "Operate a berth (or containerd) daemon"
)]
pub struct Cli {
    /// Daemon socket.
    #[arg(
        long,
        global = true,
        env = "BERTH_ADDRESS",
        default_value = "/run/berth/berth.sock"
    )]
    pub address: String,
    /// Namespace to act in.
    #[arg(
        short,
        long,
        global = true,
        env = "BERTH_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Snapshotter for images, containers and snapshots. Always sent, as
    /// ctr does: containerd requires it in every snapshot and unpack call.
    #[arg(
        long,
        global = true,
        env = "BERTH_SNAPSHOTTER",
        default_value = "overlayfs"
    )]
    pub snapshotter: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show client and daemon versions.
    Version,
    /// Manage namespaces.
    #[command(subcommand, visible_alias = "ns")]
    Namespaces(Namespaces),
    /// Manage content blobs.
    #[command(subcommand)]
    Content(Content),
    /// Manage images.
    #[command(subcommand, visible_aliases = ["i", "image"])]
    Images(Images),
    /// Manage leases.
    #[command(subcommand)]
    Leases(Leases),
    /// Manage snapshots.
    Snapshots(SnapshotsArgs),
    /// Run a container from an image.
    Run(RunArgs),
    /// Manage containers (metadata).
    #[command(subcommand, visible_aliases = ["c", "container"])]
    Containers(Containers),
    /// Manage tasks (running containers).
    #[command(subcommand, visible_alias = "t")]
    Tasks(Tasks),
    /// Print events as they happen.
    Events(EventsArgs),
    /// Manage volumes.
    #[command(subcommand, visible_alias = "volumes")]
    Volume(Volume),
    /// Show the daemon's plugins.
    #[command(subcommand)]
    Plugins(Plugins),
    /// Manage networks (CNI, host-wide: not per namespace).
    #[command(subcommand)]
    Network(Network),
    /// Print a container's output (kept by berthd for containers berthctl runs).
    Logs(LogsArgs),
    /// List containers, with their state (docker's `ps`).
    Ps(PsArgs),
    /// Stop containers: SIGTERM, then SIGKILL after a grace period.
    Stop(StopArgs),
    /// Start stopped containers again.
    Start(StartArgs),
    /// Stop containers, then start them again.
    Restart(StopArgs),
    /// Send a signal to containers (SIGKILL by default).
    Kill(KillArgs),
    /// Remove containers: task, container and snapshot.
    Rm(RmArgs),
    /// Wait until containers exit; prints their exit codes.
    Wait(NamesArgs),
    /// Show a container's processes (as ps(1) on the host sees them).
    Top(TopArgs),
    /// Show containers in detail (JSON).
    Inspect(NamesArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Live resource usage of containers.
    Stats(StatsArgs),
    /// Copy files between a container and the host.
    Cp(CpArgs),
    /// Make an image from a container's changes.
    Commit(CommitArgs),
    /// Disk usage and pruning.
    #[command(subcommand)]
    System(System),
    /// Print a shell completion script (bash, zsh or fish).
    Completion { shell: Shell },
}

#[derive(Subcommand, Debug, PartialEq)]
pub enum Network {
    /// Create a bridge network.
    Create {
        name: String,
        /// Subnet in CIDR form (default: the first free /24 of 10.89.0.0/16).
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address (default: the subnet's first address).
        #[arg(long)]
        gateway: Option<String>,
        /// No masquerading and no default route (no outside access).
        #[arg(long)]
        internal: bool,
    },
    /// List networks.
    #[command(visible_alias = "list")]
    Ls {
        /// Print names only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks in detail (JSON).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (no container may use them).
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every user network no container uses.
    Prune {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum Namespaces {
    /// List namespaces.
    #[command(visible_alias = "list")]
    Ls {
        /// Print names only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create a namespace.
    Create {
        name: String,
        /// Labels, as key=value.
        labels: Vec<String>,
    },
    /// Remove namespaces (they must be empty).
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set labels (key=value; key= removes).
    Label {
        name: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum Content {
    /// List blobs.
    #[command(visible_alias = "list")]
    Ls {
        /// Print digests only.
        #[arg(short, long)]
        quiet: bool,
        /// Filters (containerd syntax, e.g. labels.foo==bar).
        filters: Vec<String>,
    },
    /// Write a blob to stdout.
    Get { digest: String },
    /// Store stdin as a blob.
    Ingest {
        /// Upload reference (resumable by this name).
        #[arg(long = "ref")]
        reference: String,
        /// Expected digest; the commit fails if the bytes differ.
        #[arg(long)]
        expected_digest: Option<String>,
        /// Expected size in bytes.
        #[arg(long)]
        expected_size: Option<i64>,
        /// File to read instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Labels set with the commit (key=value), e.g.
        /// containerd.io/gc.root=… to keep an unreferenced blob from
        /// garbage collection.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Remove blobs from this namespace.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        digests: Vec<String>,
    },
    /// Set labels (key=value; key= removes).
    Label {
        digest: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum Images {
    /// List images.
    #[command(visible_alias = "list")]
    Ls {
        /// Print names only.
        #[arg(short, long)]
        quiet: bool,
        /// Filters (containerd syntax, e.g. name~=busybox).
        filters: Vec<String>,
    },
    /// Pull an image from a registry (the daemon fetches and unpacks it).
    Pull(PullArgs),
    /// Push an image to a registry (the daemon uploads it).
    Push(PushArgs),
    /// Give an image another name (docker-normalized, e.g. bb -> docker.io/library/bb:latest).
    Tag {
        source: String,
        target: String,
        /// Replace an image already named TARGET.
        #[arg(short, long)]
        force: bool,
    },
    /// Import an OCI image-layout or docker-archive tar.
    Import(ImportArgs),
    /// Export images as an OCI image-layout tar (docker-loadable).
    Export(ExportArgs),
    /// Remove images.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        /// Wait until the content they held is collected.
        #[arg(long)]
        sync: bool,
    },
    /// Set labels (key=value; key= removes).
    Label {
        name: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Show an image's record, manifest and configuration.
    Inspect { name: String },
    /// Mount an unpacked image read-only (or writable with --rw) at a path.
    Mount {
        name: String,
        target: PathBuf,
        /// Mount a writable snapshot instead of a read-only view.
        #[arg(long)]
        rw: bool,
        /// Platform to mount (default: this host's).
        #[arg(long)]
        platform: Option<String>,
    },
    /// Unmount a path mounted by `images mount` and drop its snapshot.
    Unmount { target: PathBuf },
    /// Remove dangling images (with -a: every image no container uses).
    Prune(PruneArgs),
}

/// How to reach and log in to a registry.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Talk plain HTTP to the registry (automatic for localhost and 127.0.0.1).
    #[arg(long)]
    pub plain_http: bool,
    /// Credentials as USER:PASSWORD (USER alone asks for the password);
    /// otherwise docker's config.json ($DOCKER_CONFIG or ~/.docker): its
    /// credential helper (credHelpers, credsStore), then its `auths`.
    #[arg(short, long, env = "BERTH_REGISTRY_USER", hide_env_values = true)]
    pub user: Option<String>,
    /// Also trust this CA certificate (PEM) for the registry's TLS.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// A hosts directory (<dir>/<host:port>/hosts.toml, or *.crt files) for
    /// the daemon to use instead of its [registry] config_path.
    #[arg(long)]
    pub hosts_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image reference (docker-normalized: busybox means docker.io/library/busybox:latest).
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Platform to fetch from a multi-platform image (repeatable; default: this host's).
    #[arg(long)]
    pub platform: Vec<String>,
    /// Fetch every platform of a multi-platform image.
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// Only fetch; do not unpack.
    #[arg(long)]
    pub no_unpack: bool,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Image to push, named by where it goes (e.g. 127.0.0.1:5000/bb:1; see `images tag`).
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Push only this platform's manifest of a multi-platform image.
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Archive to read ("-" for stdin).
    pub file: PathBuf,
    /// Name OCI tags as <base-name>:<tag>; import only images under it.
    #[arg(long)]
    pub base_name: Option<String>,
    /// Also keep the archive's whole index under this name.
    #[arg(long)]
    pub index_name: Option<String>,
    /// Also create <name>@<digest> images.
    #[arg(long)]
    pub digests: bool,
    /// Platform whose blobs must be present (default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Require the blobs of every platform.
    #[arg(long)]
    pub all_platforms: bool,
    /// Labels for the imported images, as key=value.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Do not unpack the images into a snapshotter.
    #[arg(long)]
    pub no_unpack: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(subcommand)]
    pub command: Snapshots,
}

#[derive(Subcommand, Debug)]
pub enum Snapshots {
    /// List snapshots.
    #[command(visible_alias = "list")]
    Ls { filters: Vec<String> },
    /// Show snapshots as a tree of parents and children.
    Tree,
    /// Show one snapshot's metadata.
    Info { key: String },
    /// Disk usage (all snapshots, or one).
    Usage { key: Option<String> },
    /// Create a writable snapshot; prints its mounts.
    Prepare {
        key: String,
        parent: Option<String>,
        /// Print the mounts as a mount command for this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Create a read-only snapshot; prints its mounts.
    View {
        key: String,
        parent: String,
        #[arg(long)]
        target: Option<String>,
    },
    /// Commit an active snapshot under a name.
    Commit { name: String, key: String },
    /// Remove snapshots.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the mount command of a snapshot for a target.
    Mounts { target: String, key: String },
    /// Set labels (key=value; key= removes).
    Label {
        key: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Output file ("-" for stdout).
    pub file: PathBuf,
    /// Images to export.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Platforms to include (default: this host's).
    #[arg(long)]
    pub platform: Vec<String>,
    /// Include every platform present.
    #[arg(long)]
    pub all_platforms: bool,
    /// Leave out the docker-compatible manifest.json.
    #[arg(long)]
    pub skip_manifest_json: bool,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Filters (e.g. topic~=/images/, namespace==default).
    pub filters: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Plugins {
    /// List plugins.
    #[command(visible_alias = "list")]
    Ls { filters: Vec<String> },
}

#[derive(Subcommand, Debug)]
pub enum Containers {
    /// List containers.
    #[command(visible_alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// Show a container's record (with its spec).
    Info { id: String },
    /// Remove containers (their tasks must be gone) and their snapshots.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Set labels (key=value; key= removes).
    Label {
        id: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Remove every stopped container.
    Prune(ForceArgs),
}
