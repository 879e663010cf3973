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
# Per-registry settings, laid out like containerd's certs.d:
# <config_path>/<host[:port]>/*.crt are CA certificates trusted for that
# registry (which then also makes a localhost registry use HTTPS).
config_path = "/etc/berth/certs.d"
# Layers downloaded (or uploaded) at the same time by one pull (push).
max_concurrent_downloads = 3
# Give up on a registry connection attempt, or on a registry that stops
# sending, after this many seconds; transient failures are retried.
connect_timeout_secs = 10
read_timeout_secs = 30
retries = 3

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
    pub runtimes: std::collections::BTreeMap<String, RuntimeEntry>,
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
}
