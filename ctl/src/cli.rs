//! Command-line syntax.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

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
    #[command(subcommand, visible_alias = "i")]
    Images(Images),
    /// Manage leases.
    #[command(subcommand)]
    Leases(Leases),
    /// Manage snapshots.
    Snapshots(SnapshotsArgs),
    /// Print events as they happen.
    Events(EventsArgs),
    /// Show the daemon's plugins.
    #[command(subcommand)]
    Plugins(Plugins),
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
        /// Snapshotter the image was unpacked into.
        #[arg(long, default_value = "")]
        snapshotter: String,
        /// Mount a writable snapshot instead of a read-only view.
        #[arg(long)]
        rw: bool,
        /// Platform to mount (default: this host's).
        #[arg(long)]
        platform: Option<String>,
    },
    /// Unmount a path mounted by `images mount` and drop its snapshot.
    Unmount {
        target: PathBuf,
        #[arg(long, default_value = "")]
        snapshotter: String,
    },
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
    /// Snapshotter to unpack into (default: the daemon's).
    #[arg(long, default_value = "")]
    pub snapshotter: String,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Snapshotter to use (default: the daemon's).
    #[arg(long, global = true, default_value = "")]
    pub snapshotter: String,
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

#[derive(Subcommand, Debug)]
pub enum Leases {
    /// List leases.
    #[command(visible_alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// Create a lease; prints its id.
    Create {
        /// Lease id (generated when absent).
        #[arg(long)]
        id: Option<String>,
        /// Expire after this long (e.g. 24h; 0 = never).
        #[arg(long, short = 'x', default_value = "24h")]
        expires: String,
        /// Labels, as key=value.
        labels: Vec<String>,
    },
    /// Remove leases.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Wait until what they held is collected.
        #[arg(long)]
        sync: bool,
    },
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
