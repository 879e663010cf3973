//! The CNI exec protocol (spec 1.0): find a plugin binary, run it with the
//! `CNI_*` environment and a network configuration on stdin, and read its
//! result or its error. Written by hand: the Rust CNI crates are for
//! writing plugins (they read their own environment), not for runtimes.

use crate::error::{Error, Result, io_err};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The CNI version berth writes into the networks it creates.
pub const CNI_VERSION: &str = "1.0.0";

/// The four operations of the protocol (GC and STATUS are CNI 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
        }
    }
}

/// What one attachment is: the `CNI_*` values other than the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `CNI_CONTAINERID`: unique on the host (see `manager::cni_container_id`).
    pub container_id: String,
    /// `CNI_NETNS`: the bind-mounted namespace file.
    pub netns: PathBuf,
    /// `CNI_IFNAME`: the interface inside the namespace.
    pub ifname: String,
    /// `CNI_ARGS` pairs (`K=V;K=V`).
    #[serde(default)]
    pub args: Vec<(String, String)>,
}

/// The error object a plugin prints on failure (spec "Error").
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PluginError {
    #[serde(default)]
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl PluginError {
    /// The spec's well-known codes, named for the message.
    fn code_name(&self) -> &'static str {
        match self.code {
            1 => "incompatible CNI version",
            2 => "unsupported field in network configuration",
            3 => "container unknown or does not exist",
            4 => "invalid necessary environment variables",
            5 => "I/O failure",
            6 => "failed to decode content",
            7 => "invalid network config",
            11 => "try again later",
            _ => "plugin-specific error",
        }
    }
}

/// A VERSION answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub cni_version: String,
    #[serde(default)]
    pub supported_versions: Vec<String>,
}

/// Runs plugins found in a list of directories, each call bounded.
#[derive(Debug, Clone)]
pub struct Exec {
    pub bin_dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

impl Exec {
    /// The first executable file named `kind` in the bin dirs.
    pub fn find(&self, kind: &str) -> Result<PathBuf> {
        if kind.is_empty() || kind.contains('/') || kind == "." || kind == ".." {
            return Err(Error::invalid(format!(
                "CNI plugin type {kind:?} is not a plain binary name"
            )));
        }
        for dir in &self.bin_dirs {
            let p = dir.join(kind);
            if let Ok(md) = std::fs::metadata(&p) {
                use std::os::unix::fs::PermissionsExt;
                if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                    return Ok(p);
                }
            }
        }
        Err(Error::not_found(format!(
            "CNI plugin {kind:?} not found in {} (install containernetworking-plugins or set network.cni_bin_dirs)",
            self.bin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// Runs plugin `kind` for `cmd` with `config` on stdin. Returns its
    /// stdout parsed as JSON (`Value::Null` when empty, as DEL and CHECK
    /// answer), or an error carrying the plugin's code, msg and details.
    pub async fn run(
        &self,
        kind: &str,
        cmd: Command,
        att: Option<&Attachment>,
        config: &Value,
    ) -> Result<Value> {
        let bin = self.find(kind)?;
        let what = format!("CNI plugin {kind} {}", cmd.as_str());
        let mut c = tokio::process::Command::new(&bin);
        c.env("CNI_COMMAND", cmd.as_str())
            .env("CNI_PATH", join_paths(&self.bin_dirs))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A plugin that outlives its timeout is killed, not leaked.
            .kill_on_drop(true);
        if let Some(a) = att {
            c.env("CNI_CONTAINERID", &a.container_id)
                .env("CNI_NETNS", &a.netns)
                .env("CNI_IFNAME", &a.ifname)
                .env("CNI_ARGS", join_args(&a.args));
        }
        let started = std::time::Instant::now();
        let mut child =
            spawn(&mut c).map_err(|e| io_err(format!("{what}: run {}", bin.display()), e))?;
        let input = serde_json::to_vec(config)
            .map_err(|e| Error::internal(format!("{what}: encode config: {e}")))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // Written alongside the wait so a plugin that answers before reading
        // all of its input cannot block us on a full pipe.
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(r) => r.map_err(|e| io_err(format!("{what}: wait"), e))?,
            Err(_) => {
                writer.abort();
                return Err(Error::new(
                    berth_proto::errdefs::Kind::DeadlineExceeded,
                    format!(
                        "{what} did not finish within {}s (network.plugin_timeout_secs); killed it",
                        self.timeout.as_secs_f64()
                    ),
                ));
            }
        };
        let _ = writer.await;
        tracing::debug!(
            plugin = kind,
            command = cmd.as_str(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "CNI plugin call"
        );
        if !out.status.success() {
            return Err(plugin_failure(&what, &out));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| Error::internal(format!("{what}: its output is not JSON ({e}): {text}")))
    }

    /// Asks plugin `kind` which CNI versions it speaks.
    pub async fn version(&self, kind: &str) -> Result<VersionInfo> {
        let cfg = serde_json::json!({ "cniVersion": CNI_VERSION });
        let v = self.run(kind, Command::Version, None, &cfg).await?;
        serde_json::from_value(v).map_err(|e| {
            Error::internal(format!("CNI plugin {kind} VERSION: unexpected answer: {e}"))
        })
    }
}

/// Spawns, retrying briefly on ETXTBSY: a binary just installed (or
/// written by a test) can still be open for writing in a child forked
/// elsewhere in this process until that child execs.
fn spawn(c: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match c.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// The error of a plugin that exited non-zero: its JSON error if it printed
/// one, else what it wrote to stderr.
fn plugin_failure(what: &str, out: &std::process::Output) -> Error {
    let status = out.status;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match serde_json::from_slice::<PluginError>(&out.stdout) {
        Ok(e) if e.code != 0 || !e.msg.is_empty() => {
            let mut msg = format!(
                "{what} failed ({status}): code {} ({})",
                e.code,
                e.code_name()
            );
            if !e.msg.is_empty() {
                msg.push_str(": ");
                msg.push_str(&e.msg);
            }
            if !e.details.is_empty() {
                msg.push_str(&format!(" (details: {})", e.details));
            }
            let kind = match e.code {
                11 => berth_proto::errdefs::Kind::Unavailable,
                1 | 2 | 4 | 6 | 7 => berth_proto::errdefs::Kind::InvalidArgument,
                _ => berth_proto::errdefs::Kind::Unknown,
            };
            Error::new(kind, msg)
        }
        _ => {
            let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let said = [stderr, stdout]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            Error::new(
                berth_proto::errdefs::Kind::Unknown,
                format!(
                    "{what} failed ({status}) without a CNI error object: {}",
                    if said.is_empty() { "no output" } else { &said }
                ),
            )
        }
    }
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn join_args(args: &[(String, String)]) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The addresses a CNI 1.0 result assigns, for callers that need the IPs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResultView {
    #[serde(default)]
    pub ips: Vec<IpConfig>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpConfig {
    /// CIDR notation: `10.88.0.2/16`.
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
}

impl ResultView {
    /// The addresses without their prefix length.
    pub fn addresses(&self) -> Vec<std::net::IpAddr> {
        self.ips
            .iter()
            .filter_map(|ip| ip.address.split('/').next()?.parse().ok())
            .collect()
    }
}

/// Parses a result for its addresses; a result that is not CNI 1.0 shaped
/// has none.
pub fn view(result: &Value) -> ResultView {
    serde_json::from_value(result.clone()).unwrap_or_default()
}
