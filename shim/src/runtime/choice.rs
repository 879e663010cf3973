//! Which runtime runs a container (recorded in the bundle), the bundle's
//! spec, and cleaning up after a shim that died.

use super::oci::{OciRuntime, signal_process};
use super::{builtin, external};
use crate::{Error, Result};
use oci_spec::runtime::Spec;
use std::path::Path;

/// Which runtime runs a container, as recorded in the bundle.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Choice {
    /// `runc`, `crun`… or empty for the built-in runtime.
    pub binary: String,
    pub root: String,
    pub systemd_cgroup: bool,
}

impl Choice {
    /// Builds the runtime.
    pub fn build(&self) -> Box<dyn OciRuntime> {
        if self.binary.is_empty() {
            Box::new(builtin::Builtin::default())
        } else {
            Box::new(external::External::new(
                &self.binary,
                &self.root,
                self.systemd_cgroup,
            ))
        }
    }
}

/// Loads `config.json` from a bundle.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = crate::bundle::Bundle::new(bundle).config();
    let bytes = std::fs::read(&path).map_err(|e| Error::io(path.display(), e))?;
    // serde_json directly, not Spec::load: its error names what is wrong
    // (an unknown rlimit type, say) where oci-spec's says "serde failed".
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::caused(
            berth_proto::errdefs::Kind::InvalidArgument,
            format!("bundle {}: config.json", bundle.display()),
            e,
        )
    })
}

/// Stops whatever a dead shim left running and releases its resources.
pub fn cleanup_after_crash(bundle: &Path, id: &str, pid: u32) -> Result<()> {
    let mut choice: Choice = crate::bundle::Bundle::new(bundle)
        .read_runtime()
        .unwrap_or_default();
    if !choice.binary.is_empty() && choice.root.is_empty() {
        // Recorded without its state directory: where it would be now.
        let ns = bundle
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        choice.root = external::state_root("", bundle, &ns);
    }
    if !choice.binary.is_empty() {
        return choice.build().delete(id);
    }
    if pid > 0 {
        match signal_process(pid, libc::SIGKILL as u32) {
            Err(e) if e.kind() != berth_proto::errdefs::Kind::NotFound => return Err(e),
            _ => {}
        }
    }
    if let Some(path) = load_spec(bundle)?
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
    {
        let cg = crate::cgroup::Hierarchy::detect().open(&path.display().to_string());
        cg.kill_all(libc::SIGKILL)?;
        cg.delete()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_rlimit_type_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("berth-rlimit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},
               "rlimits":[{"type":"RLIMIT_BOGUS","hard":1,"soft":1}]}}"#,
        )
        .unwrap();
        let e = load_spec(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::InvalidArgument);
        assert!(e.chain().contains("RLIMIT_BOGUS"), "{}", e.chain());
    }
}
