//! Shim processes: which binary serves a runtime, the bundle a shim runs
//! in, the shim's `start` and `delete` actions, and finding and dialing the
//! shims of a previous run.
//!
//! Bundles live under `<state>/io.containerd.runtime.v2.task/<ns>/<id>`;
//! a shim writes its ttrpc address to `address` there, and we record its
//! binary in `shim-binary-path` so that a restarted daemon can run the same
//! binary's `delete`.

use super::client::ShimClient;
use crate::error::{Error, Result, io_err};
use berth_proto::pb::containerd::task::v2 as shimapi;
use berth_snapshotter::mount::private;
use prost::Message;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Directory (under state) holding bundles, per namespace.
pub const BUNDLES: &str = "io.containerd.runtime.v2.task";
/// How long a shim's `start` may take.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long reconnecting to one shim may take on restart.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(3);
/// The runtime a bundle without a recorded binary is cleaned up with.
const DEFAULT_RUNTIME: &str = "io.containerd.berth.v2";

/// How runtimes map to shim binaries.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Explicit shim binary per runtime name (e.g. io.containerd.runc.v2 →
    /// /usr/bin/containerd-shim-runc-v2).
    pub shims: HashMap<String, PathBuf>,
}

/// Launches and finds shims.
pub struct ShimManager {
    state: PathBuf,
    grpc_address: String,
    ttrpc_address: String,
    runtimes: RuntimeConfig,
}

impl ShimManager {
    /// A manager keeping bundles under `state`, telling shims to publish to
    /// the daemon at these addresses.
    pub fn new(
        state: &Path,
        grpc_address: &str,
        ttrpc_address: &str,
        runtimes: RuntimeConfig,
    ) -> Self {
        Self {
            state: state.to_path_buf(),
            grpc_address: grpc_address.to_string(),
            ttrpc_address: ttrpc_address.to_string(),
            runtimes,
        }
    }

    /// The bundle directory of a task.
    pub fn bundle(&self, ns: &str, id: &str) -> PathBuf {
        self.state.join(BUNDLES).join(ns).join(id)
    }

    /// The shim binary for a runtime name.
    pub fn shim_binary(&self, runtime: &str) -> Result<PathBuf> {
        if let Some(p) = self.runtimes.shims.get(runtime) {
            return Ok(p.clone());
        }
        // io.containerd.<name>.<version> → containerd-shim-<name>-<version>;
        // runc.v2 is served by our own shim unless configured otherwise.
        let parts: Vec<&str> = runtime.split('.').collect();
        if parts.len() < 2 {
            return Err(Error::invalid(format!(
                "runtime {runtime:?} is not a valid runtime name: expected io.containerd.<name>.<version>"
            )));
        }
        let (name, ver) = (parts[parts.len() - 2], parts[parts.len() - 1]);
        let name = if name == "runc" { "berth" } else { name };
        let bin = format!("containerd-shim-{name}-{ver}");
        let mut candidates = Vec::new();
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            candidates.push(dir.join(&bin));
        }
        if let Some(paths) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&paths).map(|d| d.join(&bin)));
        }
        candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
            Error::not_found(format!(
                "runtime {runtime:?}: shim binary {bin} not found next to berthd or on PATH"
            ))
        })
    }

    /// Writes a fresh bundle holding `config.json`; returns its path.
    pub fn write_bundle(&self, ns: &str, id: &str, spec: &[u8]) -> Result<PathBuf> {
        let bundle = self.bundle(ns, id);
        if bundle.exists() {
            // Left by a task deleted while we were down.
            remove_bundle(&bundle);
        }
        // As containerd: others may pass through the task and namespace
        // directories but not list them, and cannot enter a bundle (its
        // spec holds secrets, its rootfs setuid files).
        let tasks = self.state.join(BUNDLES);
        for (d, mode) in [
            (tasks.clone(), private::PASS_THROUGH),
            (tasks.join(ns), private::PASS_THROUGH),
            (bundle.clone(), private::OWNER_ONLY),
        ] {
            private::dir(&d, mode).map_err(|e| io_err(format!("create {}", d.display()), e))?;
        }
        if let Some(gid) = remapped_root_gid(spec) {
            // As containerd: a container in a user namespace reaches its
            // rootfs through the bundle as its own root, whose host gid
            // this is; that group may pass, nobody else.
            std::os::unix::fs::chown(&bundle, None, Some(gid))
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o710))
                })
                .map_err(|e| io_err(format!("open {} to gid {gid}", bundle.display()), e))?;
        }
        private::create_file(&bundle.join("config.json"))
            .and_then(|mut f| f.write_all(spec))
            .map_err(|e| io_err("write config.json", e))?;
        Ok(bundle)
    }

    /// Runs the shim binary's `start` action in `bundle` (it forks the
    /// long-lived shim and prints its address) and dials the shim.
    pub async fn start(
        &self,
        ns: &str,
        id: &str,
        binary: &Path,
        bundle: &Path,
        opts: Option<&prost_types::Any>,
    ) -> Result<ShimClient> {
        use tokio::io::AsyncWriteExt;
        let self_exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut child = tokio::process::Command::new(binary)
            .args([
                "-namespace",
                ns,
                "-address",
                &self.grpc_address,
                "-publish-binary",
                &self_exe,
                "-id",
                id,
                "start",
            ])
            .current_dir(bundle)
            .env("TTRPC_ADDRESS", &self.ttrpc_address)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| io_err(format!("start shim {}", binary.display()), e))?;
        // The runtime options go to the shim on stdin, as containerd does.
        if let Some(mut stdin) = child.stdin.take() {
            if let Some(o) = opts {
                let _ = stdin.write_all(&o.encode_to_vec()).await;
            }
            drop(stdin);
        }
        let out = tokio::time::timeout(START_DEADLINE, child.wait_with_output())
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "shim {} did not start within 30s",
                    binary.display()
                ))
            })?
            .map_err(|e| io_err("wait for shim start", e))?;
        if !out.status.success() {
            return Err(Error::internal(format!(
                "start shim {}: {}",
                binary.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let client = ShimClient::connect(&address, ns).await?;
        let _ = std::fs::write(
            bundle.join("shim-binary-path"),
            binary.display().to_string(),
        );
        Ok(client)
    }

    /// Runs the shim binary's `delete` action (cleanup after the shim is
    /// gone) and returns the exit it saved.
    pub async fn delete(
        &self,
        binary: &Path,
        ns: &str,
        id: &str,
        bundle: &Path,
    ) -> Result<shimapi::DeleteResponse> {
        let out = tokio::process::Command::new(binary)
            .args([
                "-namespace",
                ns,
                "-address",
                &self.grpc_address,
                "-publish-binary",
                "berthd",
                "-id",
                id,
            ])
            .arg("-bundle")
            .arg(bundle)
            .arg("delete")
            .current_dir(bundle)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| io_err("run shim delete", e))?;
        if !out.status.success() {
            return Err(Error::internal(format!(
                "shim delete for {id}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        shimapi::DeleteResponse::decode(out.stdout.as_slice())
            .map_err(|e| Error::internal(format!("shim delete output for {id}: {e}")))
    }

    /// Every bundle of a previous run: (namespace, id, bundle).
    pub fn scan(&self) -> Vec<(String, String, PathBuf)> {
        let Ok(nss) = std::fs::read_dir(self.state.join(BUNDLES)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for ns in nss.flatten() {
            let ns_name = ns.file_name().to_string_lossy().to_string();
            let Ok(ids) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for e in ids.flatten() {
                let id = e.file_name().to_string_lossy().to_string();
                out.push((ns_name.clone(), id, e.path()));
            }
        }
        out
    }

    /// The binary that served a bundle (the default runtime's when none was
    /// recorded; empty when that cannot be found either).
    pub fn recorded_binary(&self, bundle: &Path) -> PathBuf {
        std::fs::read_to_string(bundle.join("shim-binary-path"))
            .map(|s| PathBuf::from(s.trim()))
            .or_else(|_| self.shim_binary(DEFAULT_RUNTIME))
            .unwrap_or_default()
    }

    /// Dials the shim serving a bundle and checks it still knows the task,
    /// within a deadline; `None` when it is gone.
    pub async fn reconnect(&self, ns: &str, id: &str, bundle: &Path) -> Option<ShimClient> {
        let address = std::fs::read_to_string(bundle.join("address")).unwrap_or_default();
        let connect = async {
            let client = ShimClient::connect(address.trim(), ns).await.ok()?;
            client
                .call::<_, shimapi::ConnectResponse>(
                    "Connect",
                    &shimapi::ConnectRequest { id: id.into() },
                )
                .await
                .ok()?;
            Some(client)
        };
        tokio::time::timeout(RECONNECT_DEADLINE, connect)
            .await
            .ok()
            .flatten()
    }
}

/// The host gid of the container's gid 0 when the spec maps gids (a user
/// namespace), as containerd reads it; a spec that does not parse has none
/// (the shim refuses it).
fn remapped_root_gid(spec: &[u8]) -> Option<u32> {
    let spec: serde_json::Value = serde_json::from_slice(spec).ok()?;
    spec["linux"]["gidMappings"]
        .as_array()?
        .iter()
        .find(|m| m["containerID"].as_u64() == Some(0))
        .and_then(|m| u32::try_from(m["hostID"].as_u64()?).ok())
        .filter(|g| *g != 0)
}

/// Removes a bundle; a leftover is replaced on the next create of its id.
pub fn remove_bundle(bundle: &Path) {
    let _ = std::fs::remove_dir_all(bundle);
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::errdefs::Kind;

    fn manager(dir: &tempfile::TempDir) -> ShimManager {
        let runtimes = RuntimeConfig {
            shims: [("io.containerd.mine.v1".into(), "/opt/shim".into())].into(),
        };
        ShimManager::new(dir.path(), "/run/g.sock", "/run/t.sock", runtimes)
    }

    #[test]
    fn shim_binaries_come_from_the_config_or_the_runtime_name() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(&dir);
        assert_eq!(
            m.shim_binary("io.containerd.mine.v1").unwrap(),
            PathBuf::from("/opt/shim")
        );
        assert_eq!(
            m.shim_binary("runc").unwrap_err().kind(),
            Kind::InvalidArgument
        );
        let err = m.shim_binary("io.containerd.nosuch.v9").unwrap_err();
        assert_eq!(err.kind(), Kind::NotFound);
        assert!(
            err.message()
                .contains("containerd-shim-nosuch-v9 not found"),
            "{err}"
        );
    }

    #[test]
    fn bundles_are_written_fresh_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(&dir);
        let b = m.write_bundle("ns", "c1", b"{}").unwrap();
        assert_eq!(b, dir.path().join(BUNDLES).join("ns").join("c1"));
        std::fs::write(b.join("leftover"), "x").unwrap();
        std::fs::write(b.join("shim-binary-path"), "/opt/shim\n").unwrap();
        assert_eq!(m.recorded_binary(&b), PathBuf::from("/opt/shim"));
        assert_eq!(m.scan(), [("ns".into(), "c1".into(), b.clone())]);
        // A leftover of a task deleted while the daemon was down goes.
        let b = m.write_bundle("ns", "c1", b"{\"v\":2}").unwrap();
        assert!(!b.join("leftover").exists());
        assert_eq!(std::fs::read(b.join("config.json")).unwrap(), b"{\"v\":2}");
    }

    #[test]
    fn bundles_are_closed_to_other_users() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let m = manager(&dir);
        let tasks = dir.path().join(BUNDLES);
        // An older berthd left the task directory open.
        std::fs::create_dir(&tasks).unwrap();
        std::fs::set_permissions(&tasks, std::fs::Permissions::from_mode(0o755)).unwrap();
        let b = m.write_bundle("ns", "c1", b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&tasks), 0o711);
        assert_eq!(mode(&tasks.join("ns")), 0o711);
        assert_eq!(mode(&b), 0o700);
        assert_eq!(mode(&b.join("config.json")), 0o600);
    }

    #[test]
    fn a_remapped_root_group_may_pass_through_its_bundle() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let m = manager(&dir);
        let spec = br#"{"linux":{"gidMappings":[
            {"containerID":1,"hostID":300000,"size":5},
            {"containerID":0,"hostID":200000,"size":1}]}}"#;
        let b = m.write_bundle("ns", "c1", spec).unwrap();
        let md = std::fs::metadata(&b).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o710);
        assert_eq!((md.uid(), md.gid()), (0, 200000));
        // Without a mapping of gid 0, or a spec that does not parse: closed.
        for spec in [&br#"{"linux":{"gidMappings":[]}}"#[..], b"{", b"{}"] {
            let b = m.write_bundle("ns", "c2", spec).unwrap();
            let md = std::fs::metadata(&b).unwrap();
            assert_eq!(md.permissions().mode() & 0o7777, 0o700);
            assert_eq!(md.gid(), 0);
        }
    }

    #[tokio::test]
    async fn a_bundle_without_a_live_shim_does_not_reconnect() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(&dir);
        let b = m.write_bundle("ns", "c1", b"{}").unwrap();
        assert!(m.reconnect("ns", "c1", &b).await.is_none());
        std::fs::write(b.join("address"), "unix:///nonexistent/shim.sock").unwrap();
        assert!(m.reconnect("ns", "c1", &b).await.is_none());
    }
}
