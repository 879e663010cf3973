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
    #[command(subcommand, visible_alias = "i")]
    Images(Images),
    /// Manage leases.
    #[command(subcommand)]
    Leases(Leases),
    /// Manage snapshots.
    Snapshots(SnapshotsArgs),
    /// Run a container from an image.
    Run(RunArgs),
    /// Manage containers (metadata).
    #[command(subcommand, visible_alias = "c")]
    Containers(Containers),
    /// Manage tasks (running containers).
    #[command(subcommand, visible_alias = "t")]
    Tasks(Tasks),
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
    /// A certs.d-style directory (<dir>/<host:port>/*.crt) for the daemon to use.
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

/// `berthctl run [OPTIONS] IMAGE [COMMAND] [ARG...]`, docker's grammar:
/// options only before IMAGE; everything after it is the command, hyphens
/// and all (`run busybox ls -l`).
#[derive(Args, Debug, Clone)]
#[command(
    override_usage = "berthctl run [OPTIONS] IMAGE [COMMAND] [ARG...]",
    after_help = "The container is named by --name (or a generated 12-hex-digit name, printed with -d); \
                  that name is its containerd container ID, used by every later command."
)]
pub struct RunArgs {
    /// Name of the container, which is also its containerd ID
    /// ([a-zA-Z0-9][a-zA-Z0-9_.-]*; generated when absent).
    #[arg(long, value_parser = parse_name)]
    pub name: Option<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Start the container, print its name and return.
    #[arg(short, long)]
    pub detach: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Keep stdin open and forward it.
    #[arg(short, long)]
    pub interactive: bool,
    /// Environment variable: KEY=VALUE, or KEY to pass this shell's value
    /// (left out when unset, as docker does).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Extra mounts: type=bind,src=/a,dst=/b,options=rbind:ro
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Memory limit: bytes, or with a unit b, k, m, g, t (1024-based, e.g. 64m);
    /// at least 6m, as docker requires.
    #[arg(
        short = 'm',
        long = "memory",
        visible_alias = "memory-limit",
        value_name = "BYTES",
        value_parser = parse_memory
    )]
    pub memory_limit: Option<i64>,
    /// CPU quota, in CPUs (0.01 up to this host's CPU count, e.g. 0.5).
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<f64>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long, value_parser = parse_pids_limit, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// User as uid[:gid].
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", visible_alias = "cwd")]
    pub cwd: Option<String>,
    /// Hostname (default: the container's name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Share the host's network namespace.
    #[arg(long)]
    pub net_host: bool,
    /// Container labels (key=value).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Runtime name.
    #[arg(long, default_value = "io.containerd.runc.v2")]
    pub runtime: String,
    /// Have the shim drive this runc-compatible binary (runc, crun) instead
    /// of its built-in runtime, like ctr's --runc-binary.
    #[arg(long)]
    pub runc_binary: Option<String>,
    /// Platform of the image to run (default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// IMAGE, then the command and its arguments (default: the image's).
    /// One list, so that option parsing stops at IMAGE as docker's does:
    /// everything after it, options included, belongs to the command.
    #[arg(
        value_name = "IMAGE [COMMAND] [ARG...]",
        required = true,
        trailing_var_arg = true
    )]
    pub argv: Vec<String>,
}

impl RunArgs {
    /// The image to run.
    pub fn image(&self) -> &str {
        &self.argv[0]
    }

    /// The command given after the image (empty: the image's).
    pub fn command(&self) -> &[String] {
        &self.argv[1..]
    }
}

/// `--name`: docker's rule for container names.
pub fn parse_name(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid container name {s:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-]* is allowed"
        ))
    }
}

/// docker's minimum memory limit: below it the container cannot start.
const MIN_MEMORY: i64 = 6 << 20;

/// `--memory`: docker's byte sizes (`RAMInBytes`): a number with an optional
/// 1024-based unit b/k/m/g/t/p, optionally followed by `b` or `ib`. Written
/// here because the size crates default to 1000-based units or a different
/// suffix grammar, and docker's is the one users type.
pub fn parse_memory(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u32 = match unit.trim() {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(format!("{s:?} is not a size (e.g. 64m, 1g, 1048576)")),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 64m, 1g, 1048576)"))?;
    let bytes = (n * 1024f64.powi(mult as i32)).floor();
    if bytes >= i64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    // In 0..i64::MAX and integral: checked above.
    #[allow(clippy::cast_possible_truncation)]
    let bytes = bytes as i64;
    if bytes < MIN_MEMORY {
        return Err(format!("{s:?} is below the minimum memory limit of 6m"));
    }
    Ok(bytes)
}

/// `--cpus`: from 0.01 up to the CPUs this host has (as docker checks).
pub fn parse_cpus(s: &str) -> Result<f64, String> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus_in_range(s, n)
}

fn cpus_in_range(s: &str, ncpu: usize) -> Result<f64, String> {
    let c: f64 = s
        .trim()
        .parse()
        .ok()
        .filter(|c: &f64| c.is_finite())
        .ok_or_else(|| format!("{s:?} is not a number of CPUs (e.g. 0.5)"))?;
    if !(0.01..=ncpu as f64).contains(&c) {
        return Err(format!(
            "{s} is out of range: from 0.01 to {ncpu}, as there are only {ncpu} CPUs available"
        ));
    }
    Ok(c)
}

/// `--pids-limit`: a positive number, or -1 for no limit.
pub fn parse_pids_limit(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(-1) => Ok(-1),
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{s:?}: give a positive number of processes, or -1 for no limit"
        )),
    }
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
}

#[derive(Subcommand, Debug)]
pub enum Tasks {
    /// List tasks.
    #[command(visible_alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Start a created task.
    Start { id: String },
    /// Signal a task (SIGTERM by default).
    Kill {
        id: String,
        /// Signal name or number.
        #[arg(short, long, default_value = "SIGTERM")]
        signal: String,
        /// Signal every process of the task.
        #[arg(short, long)]
        all: bool,
        /// Signal this exec process instead.
        #[arg(long)]
        exec_id: Option<String>,
    },
    /// Run another process in a task.
    Exec {
        /// Exec id (default: generated).
        #[arg(long)]
        exec_id: Option<String>,
        #[arg(short, long)]
        tty: bool,
        #[arg(short, long)]
        interactive: bool,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(long)]
        env: Vec<String>,
        #[arg(long, short = 'u')]
        user: Option<String>,
        /// Start it and return.
        #[arg(short, long)]
        detach: bool,
        id: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Processes of a task.
    Ps { id: String },
    /// Resource usage of a task.
    Metrics { id: String },
    /// Freeze a task.
    Pause { id: String },
    /// Thaw a task.
    Resume { id: String },
    /// Delete stopped tasks.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Kill the task first if it runs.
        #[arg(short, long)]
        force: bool,
    },
    /// Attach to a running task's output (and input).
    Attach { id: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut v = vec!["berthctl", "run"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.command {
            Command::Run(r) => Ok(r),
            c => panic!("parsed as {c:?}"),
        }
    }

    fn refused(args: &[&str]) -> String {
        run(args).expect_err("accepted").to_string()
    }

    #[test]
    fn image_then_command_not_an_id() {
        let r = run(&["--rm", "local/busybox", "echo", "hi"]).unwrap();
        assert_eq!(r.image(), "local/busybox");
        assert_eq!(r.command(), ["echo", "hi"]);
        assert!(r.rm);
        assert_eq!(r.name, None);
        let r = run(&["busybox"]).unwrap();
        assert!(r.command().is_empty());
    }

    #[test]
    fn everything_after_image_is_the_command() {
        let r = run(&["busybox", "ls", "-l", "--rm", "-d", "--name", "x"]).unwrap();
        assert_eq!(r.command(), ["ls", "-l", "--rm", "-d", "--name", "x"]);
        assert!(!r.rm && !r.detach);
        assert_eq!(r.name, None);
        // Even a known option right after IMAGE is the command's.
        let r = run(&["busybox", "--rm"]).unwrap();
        assert_eq!(r.command(), ["--rm"]);
        assert!(!r.rm);
        let r = run(&["-d", "busybox", "sh", "-c", "echo -n x"]).unwrap();
        assert_eq!(r.command(), ["sh", "-c", "echo -n x"]);
        assert!(r.detach);
    }

    #[test]
    fn docker_short_forms() {
        let r = run(&[
            "-e", "A=1", "--env", "B", "-w", "/tmp", "-u", "1:2", "-m", "64m", "-dit", "--name",
            "web.1", "busybox", "top",
        ])
        .unwrap();
        assert_eq!(r.env, ["A=1", "B"]);
        assert_eq!(r.cwd.as_deref(), Some("/tmp"));
        assert_eq!(r.user.as_deref(), Some("1:2"));
        assert_eq!(r.memory_limit, Some(64 << 20));
        assert!(r.detach && r.interactive && r.tty);
        assert_eq!(r.name.as_deref(), Some("web.1"));
        // The old long spellings still work.
        let r = run(&["--memory-limit", "67108864", "--cwd", "/x", "bb", "true"]).unwrap();
        assert_eq!(r.memory_limit, Some(67_108_864));
        assert_eq!(r.cwd.as_deref(), Some("/x"));
        let r = run(&["--memory=1g", "--pids-limit", "-1", "bb"]).unwrap();
        assert_eq!(r.memory_limit, Some(1 << 30));
        assert_eq!(r.pids_limit, Some(-1));
    }

    #[test]
    fn names_are_validated() {
        for ok in ["a", "web", "Web_1.x-y", "0abc"] {
            assert_eq!(parse_name(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "-x", "_x", ".x", "a/b", "a b", "é", "a:b"] {
            assert!(parse_name(bad).is_err(), "{bad:?} accepted");
        }
        let e = refused(&["--name", "a/b", "busybox"]);
        assert!(e.contains("--name") && e.contains("a/b"), "{e}");
    }

    #[test]
    fn generated_names_are_valid_and_differ() {
        let a = crate::run::generate_name();
        let b = crate::run::generate_name();
        assert_eq!(a.len(), 12);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(parse_name(&a).as_deref(), Ok(a.as_str()));
        assert_ne!(a, b);
    }

    #[test]
    fn memory_units() {
        let cases = [
            ("6m", 6 << 20),
            ("64m", 64 << 20),
            ("64M", 64 << 20),
            ("64mb", 64 << 20),
            ("64MiB", 64 << 20),
            ("1g", 1 << 30),
            ("1.5g", 3 << 29),
            ("10000k", 10_000 << 10),
            ("67108864", 67_108_864),
            ("67108864b", 67_108_864),
            ("2t", 2 << 40),
        ];
        for (s, want) in cases {
            assert_eq!(parse_memory(s), Ok(want), "{s}");
        }
        for bad in ["", "m", "64x", "-1", "1..2m", "64 mm", "nan", "inf"] {
            assert!(parse_memory(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn zero_and_absurd_limits_are_usage_errors_naming_the_flag() {
        for (args, flag) in [
            (&["--memory-limit", "0", "bb"][..], "--memory"),
            (&["-m", "1k", "bb"][..], "--memory"),
            (&["-m", "99999999p", "bb"][..], "--memory"),
            (&["--cpus", "0", "bb"][..], "--cpus"),
            (&["--cpus", "100000", "bb"][..], "--cpus"),
            (&["--cpus", "x", "bb"][..], "--cpus"),
            (&["--pids-limit", "0", "bb"][..], "--pids-limit"),
            (&["--pids-limit", "-2", "bb"][..], "--pids-limit"),
        ] {
            let e = run(args).expect_err("accepted");
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}"
            );
            assert!(e.to_string().contains(flag), "{args:?}: {e}");
        }
        // The message docker users know, with this host's count.
        assert_eq!(cpus_in_range("0.5", 2), Ok(0.5));
        assert_eq!(cpus_in_range("2", 2), Ok(2.0));
        let e = cpus_in_range("3", 2).unwrap_err();
        assert!(e.contains("from 0.01 to 2"), "{e}");
        assert!(cpus_in_range("0.001", 2).is_err());
    }

    #[test]
    fn unknown_options_before_image_are_refused() {
        let e = run(&["--bogus", "busybox"]).expect_err("accepted");
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        // -p/--net/-v are not options yet (the networks step adds them).
        let e = run(&["-p", "80:80", "busybox"]).expect_err("accepted");
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn image_is_required() {
        let e = run(&["--rm"]).expect_err("accepted");
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }
}
