//! berthd configuration: built-in defaults, overridden by the TOML file,
//! overridden by command-line flags.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The documented default configuration, as printed by `berthd config default`.
pub const DEFAULT_TOML: &str = r#"# berthd configuration. Every key is optional; these are the defaults.
# Command-line flags (--root, --state, --address, --log-level) win over this file.
version = 1

# Persistent data: content store, metadata database, snapshots.
root = "/var/lib/berth"
# Runtime state: sockets, task bundles. Usually on tmpfs.
state = "/run/berth"

[grpc]
# The gRPC API socket (containerd v1 API). The ttrpc events socket for
# shims is this path with ".ttrpc" appended.
address = "/run/berth/berth.sock"
# Group that may use the socket (mode 0660); 0 = root only.
gid = 0

[gc]
# Delay between a deletion and the garbage collection it triggers, so
# that bursts of deletions are collected in one run.
schedule_delay_ms = 100

[log]
# error, warn, info, debug or trace (or a tracing filter directive).
level = "info"

[registry]
# Per-registry settings in containerd's layout, for every pull and push
# (berthctl, ctr's transfer service, the CRI). For a registry HOST[:PORT]
# the first existing directory of <config_path>/HOST_PORT_,
# <config_path>/HOST[:PORT] and <config_path>/_default is read:
# - hosts.toml (containerd's format): mirrors tried in the order listed,
#   then `server` (or the registry itself):
#     server = "https://registry.k8s.io"
#     [host."http://127.0.0.1:5000"]            # http:// = plain HTTP
#       capabilities = ["pull", "resolve"]      # default: pull, resolve, push
#       skip_verify = false                     # don't check its TLS certificate
#       ca = "/etc/berth/certs.d/ca.pem"        # or a list; relative to the dir
#   A tag is resolved on the first host with "resolve" and "pull" that has
#   it, which then serves the whole pull; pushes go to the first host with
#   "push". Not supported (refused by name): header, client, path prefixes.
# - without hosts.toml, the older certs.d layout: *.crt files are CA
#   certificates trusted for that registry (which then also makes a
#   localhost registry use HTTPS).
config_path = "/etc/berth/certs.d"
# Layers downloaded (or uploaded) at the same time by one pull (push).
max_concurrent_downloads = 3
# Give up on a registry connection attempt, or on a registry that stops
# sending, after this many seconds; transient failures are retried.
connect_timeout_secs = 10
read_timeout_secs = 30
retries = 3

[network]
# CNI plugin binaries, searched in this order (Debian's
# containernetworking-plugins installs to /usr/lib/cni).
cni_bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
# Networks as CNI conflists (*.conflist); berthd writes the default
# network and the networks users create here.
cni_conf_dir = "/etc/berth/cni/net.d"
# The network containers join unless told otherwise; created on first use
# (bridge berth0, 10.88.0.0/16, host-local IPAM, portmap, firewall).
default_network = "bridge"
# Give up on a CNI plugin call after this many seconds.
plugin_timeout_secs = 60

[logs]
# Containers made by berthctl (label berth.log-driver = "json-file") log
# in docker's json-file format to <root>/logs/<namespace>/<id>/<id>-json.log.
# The file is rotated once it reaches max_size bytes (0: never), keeping
# max_files files in all (1: the file is emptied instead).
max_size = 10485760
max_files = 3

[cri]
# Serve the Kubernetes CRI v1 (RuntimeService, ImageService) on the gRPC
# socket, for the kubelet and crictl. Pods and their containers live in
# the containerd namespace "k8s.io".
enabled = true
# The image of each pod's infra container (pulled when missing).
sandbox_image = "registry.k8s.io/pause:3.10"
# Where the streaming server (exec, attach, port-forward) listens;
# port 0 picks a free port.
stream_server_address = "127.0.0.1"
stream_server_port = "0"
# A streaming session whose connection carries nothing either way for
# this long is ended, its exec killed (as the kubelet's and containerd's
# option); a duration such as "4h", "30m" or "1h30m", "0" for never.
stream_idle_timeout = "4h"
# Container log lines longer than this many bytes are split into
# partial lines (0 or less: never split).
max_container_log_line_size = 16384
# Never give a pod process a lower OOM score than berthd's own (as
# containerd's option): for a berthd without CAP_SYS_RESOURCE, which
# cannot lower scores (the pod infra container asks for -998).
restrict_oom_score_adj = false
# The OCI runtime of pods: "" runs them with the shim's built-in runtime;
# a binary name or path (e.g. "runc", "crun") makes the shim drive it
# instead, as containerd's runc options `BinaryName` does.
runtime_binary = ""
# Runtime handlers (a Kubernetes RuntimeClass's `handler`), each with its
# own runtime_binary; RunPodSandbox with any other non-empty handler is
# refused. For example:
# [cri.runtimes.runc]
# runtime_binary = "runc"

# Shim binaries per runtime name. Without an entry, io.containerd.<name>.<v>
# runs containerd-shim-<name>-<v> found next to berthd or on PATH, and
# io.containerd.runc.v2 (ctr's default) runs berth's own shim. To use
# containerd's runc shim instead:
# [runtimes."io.containerd.runc.v2"]
# shim = "/usr/bin/containerd-shim-runc-v2"
"#;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub version: u32,
    pub root: PathBuf,
    pub state: PathBuf,
    pub grpc: Grpc,
    pub gc: GcConfig,
    pub log: Log,
    pub registry: RegistryConfig,
    pub network: NetworkConfig,
    pub logs: LogsConfig,
    pub cri: CriConfig,
    pub runtimes: std::collections::BTreeMap<String, RuntimeEntry>,
}

/// The Kubernetes CRI service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriConfig {
    pub enabled: bool,
    pub sandbox_image: String,
    pub stream_server_address: String,
    /// A string, as containerd's `stream_server_port`.
    pub stream_server_port: String,
    /// A duration string, as containerd's; see [`CriConfig::stream_idle_timeout`].
    pub stream_idle_timeout: String,
    pub max_container_log_line_size: i64,
    pub restrict_oom_score_adj: bool,
    pub runtime_binary: String,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub runtimes: std::collections::BTreeMap<String, CriRuntime>,
}

/// A CRI runtime handler (what a Kubernetes RuntimeClass names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriRuntime {
    /// As `[cri] runtime_binary`: "" is the shim's built-in runtime.
    pub runtime_binary: String,
}

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig {
            enabled: true,
            sandbox_image: "registry.k8s.io/pause:3.10".into(),
            stream_server_address: "127.0.0.1".into(),
            stream_server_port: "0".into(),
            stream_idle_timeout: "4h".into(),
            max_container_log_line_size: 16384,
            restrict_oom_score_adj: false,
            runtime_binary: String::new(),
            runtimes: Default::default(),
        }
    }
}

impl CriConfig {
    /// The runtime binary of pods run with runtime handler `handler` (""
    /// is the default handler); None for a handler not configured.
    pub fn runtime_binary_of(&self, handler: &str) -> Option<&str> {
        if handler.is_empty() {
            return Some(&self.runtime_binary);
        }
        self.runtimes
            .get(handler)
            .map(|r| r.runtime_binary.as_str())
    }

    /// Every runtime handler with its runtime binary: the default one ("")
    /// first, then the configured ones by name.
    pub fn handlers(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once(("", self.runtime_binary.as_str())).chain(
            self.runtimes
                .iter()
                .map(|(name, r)| (name.as_str(), r.runtime_binary.as_str())),
        )
    }

    /// Why this section cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if self.runtimes.contains_key("") {
            return Some(
                "cri.runtimes: a handler needs a name (the default handler \"\" is [cri] itself)"
                    .into(),
            );
        }
        if self.sandbox_image.is_empty() {
            return Some("cri.sandbox_image must be set".into());
        }
        if self.stream_server_port.parse::<u16>().is_err() {
            return Some(format!(
                "cri.stream_server_port: {:?} is not a port number (0-65535)",
                self.stream_server_port
            ));
        }
        self.stream_idle_timeout().err()
    }

    /// `stream_idle_timeout` as a duration ("0": none, zero).
    pub fn stream_idle_timeout(&self) -> Result<std::time::Duration, String> {
        let s = self.stream_idle_timeout.trim();
        if s == "0" {
            return Ok(std::time::Duration::ZERO);
        }
        humantime::parse_duration(s).map_err(|e| {
            format!(
                "cri.stream_idle_timeout: {:?} is not a duration ({e}); write e.g. \"4h\", \"30m\" or \"0\" for none",
                self.stream_idle_timeout
            )
        })
    }
}

/// How berthd talks to image registries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    pub config_path: PathBuf,
    pub max_concurrent_downloads: usize,
    pub connect_timeout_secs: u64,
    pub read_timeout_secs: u64,
    pub retries: u32,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            config_path: "/etc/berth/certs.d".into(),
            max_concurrent_downloads: 3,
            connect_timeout_secs: 10,
            read_timeout_secs: 30,
            retries: 3,
        }
    }
}

/// Where berthd finds CNI plugins and networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_conf_dir: PathBuf,
    pub default_network: String,
    pub plugin_timeout_secs: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            cni_conf_dir: "/etc/berth/cni/net.d".into(),
            default_network: "bridge".into(),
            plugin_timeout_secs: 60,
        }
    }
}

impl NetworkConfig {
    /// Why this section cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if self.cni_bin_dirs.is_empty() {
            return Some("network.cni_bin_dirs is empty: CNI plugins could not be found".into());
        }
        if let Some(d) = self.cni_bin_dirs.iter().find(|d| !d.is_absolute()) {
            return Some(format!(
                "network.cni_bin_dirs: {} is not an absolute path",
                d.display()
            ));
        }
        if !self.cni_conf_dir.is_absolute() {
            return Some(format!(
                "network.cni_conf_dir: {} is not an absolute path",
                self.cni_conf_dir.display()
            ));
        }
        if !valid_network_name(&self.default_network) {
            return Some(format!(
                "network.default_network: {:?} is not a valid network name \
                 (letters, digits, '_', '.', '-'; starting with a letter or digit; at most 64)",
                self.default_network
            ));
        }
        if self.plugin_timeout_secs == 0 {
            return Some("network.plugin_timeout_secs must be at least 1".into());
        }
        None
    }
}

/// A network name: also a file name and a CNI network name.
pub fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Configuration of one runtime name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeEntry {
    /// The shim binary to run.
    pub shim: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grpc {
    pub address: PathBuf,
    pub gid: u32,
}

/// Rotation of the json-file logs berthd keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    pub max_size: u64,
    pub max_files: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            max_size: 10 << 20,
            max_files: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    pub schedule_delay_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: 1,
            root: "/var/lib/berth".into(),
            state: "/run/berth".into(),
            grpc: Grpc::default(),
            gc: GcConfig::default(),
            log: Log::default(),
            registry: RegistryConfig::default(),
            network: NetworkConfig::default(),
            logs: LogsConfig::default(),
            cri: CriConfig::default(),
            runtimes: Default::default(),
        }
    }
}

impl Default for Grpc {
    fn default() -> Self {
        Grpc {
            address: "/run/berth/berth.sock".into(),
            gid: 0,
        }
    }
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            schedule_delay_ms: 100,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("config {path}: version {version} is not supported (this berthd reads version 1)")]
    Version { path: PathBuf, version: u32 },
    #[error("config {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

impl Config {
    /// Loads `path`; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        let cfg: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        if cfg.version != 1 {
            return Err(ConfigError::Version {
                path: path.into(),
                version: cfg.version,
            });
        }
        if cfg.logs.max_files == 0 {
            return Err(ConfigError::Invalid {
                path: path.into(),
                msg: "logs.max_files must be at least 1 (the file being written)".into(),
            });
        }
        if let Some(msg) = cfg.network.problem().or_else(|| cfg.cri.problem()) {
            return Err(ConfigError::Invalid {
                path: path.into(),
                msg,
            });
        }
        Ok(cfg)
    }

    /// Where shims publish events: the gRPC socket path plus `.ttrpc`.
    pub fn ttrpc_address(&self) -> PathBuf {
        let mut s = self.grpc.address.clone().into_os_string();
        s.push(".ttrpc");
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults_are_the_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(parsed, Config::default());
        let empty: Config = toml::from_str("").unwrap();
        assert_eq!(empty, Config::default());
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        assert_eq!(
            Config::default().ttrpc_address(),
            PathBuf::from("/run/berth/berth.sock.ttrpc")
        );
    }

    #[test]
    fn cri_runtime_handlers_name_their_binary() {
        let cfg: Config = toml::from_str(
            "[cri]\nruntime_binary = \"crun\"\n[cri.runtimes.runc]\nruntime_binary = \"runc\"\n\
             [cri.runtimes.builtin]\n",
        )
        .unwrap();
        assert_eq!(cfg.cri.runtime_binary_of(""), Some("crun"));
        assert_eq!(cfg.cri.runtime_binary_of("runc"), Some("runc"));
        assert_eq!(cfg.cri.runtime_binary_of("builtin"), Some(""));
        assert_eq!(cfg.cri.runtime_binary_of("kata"), None);
        let all: Vec<_> = cfg.cri.handlers().collect();
        assert_eq!(all, [("", "crun"), ("builtin", ""), ("runc", "runc")]);
        assert!(toml::from_str::<Config>("[cri.runtimes.x]\nbinary = \"y\"").is_err());
    }

    #[test]
    fn stream_idle_timeout_is_a_duration() {
        let cri = |v: &str| CriConfig {
            stream_idle_timeout: v.into(),
            ..Default::default()
        };
        let secs = |v: &str| cri(v).stream_idle_timeout().map(|d| d.as_secs());
        assert_eq!(secs("4h"), Ok(4 * 3600));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("0"), Ok(0));
        let bad = cri("soon").problem().expect("refused");
        assert!(
            bad.contains("cri.stream_idle_timeout") && bad.contains("\"4h\""),
            "{bad}"
        );
    }

    #[test]
    fn installed_config_is_the_documented_one() {
        // deploy/install.sh installs this file; it must not drift.
        assert_eq!(include_str!("../../deploy/config.toml"), DEFAULT_TOML);
    }

    #[test]
    fn load_missing_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Config::load(&dir.path().join("none.toml")).unwrap(),
            Config::default()
        );
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "version = 2").unwrap();
        assert!(matches!(
            Config::load(&bad),
            Err(ConfigError::Version { .. })
        ));
        std::fs::write(&bad, "root = ").unwrap();
        assert!(matches!(Config::load(&bad), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn network_section_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        for (text, want) in [
            ("[network]\ncni_bin_dirs = []", "is empty"),
            (
                "[network]\ncni_bin_dirs = [\"bin\"]",
                "bin is not an absolute",
            ),
            (
                "[network]\ncni_conf_dir = \"net.d\"",
                "net.d is not an absolute",
            ),
            (
                "[network]\ndefault_network = \"../x\"",
                "not a valid network name",
            ),
            ("[network]\nplugin_timeout_secs = 0", "at least 1"),
            ("[cri]\nsandbox_image = \"\"", "sandbox_image must be set"),
            ("[cri]\nstream_server_port = \"x\"", "not a port number"),
            (
                "[cri.runtimes.\"\"]\nruntime_binary = \"runc\"",
                "a handler needs a name",
            ),
        ] {
            std::fs::write(&f, text).unwrap();
            let err = Config::load(&f).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { .. }), "{text}: {err}");
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
        std::fs::write(
            &f,
            "[network]\ncni_conf_dir = \"/tmp/x\"\ndefault_network = \"n1\"",
        )
        .unwrap();
        let cfg = Config::load(&f).unwrap();
        assert_eq!(cfg.network.cni_conf_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.network.default_network, "n1");
        assert!(toml::from_str::<Config>("[network]\nbogus = 1").is_err());
        assert!(
            valid_network_name("a.b-c_1") && !valid_network_name("-a") && !valid_network_name("")
        );
    }
}
