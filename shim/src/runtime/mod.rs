//! Low-level OCI runtimes behind one trait, [`OciRuntime`]: the built-in
//! one ([`builtin`]) and a driver for runc-compatible binaries
//! ([`external`]). May use `crate::cgroup`, `crate::stdio`,
//! `crate::bundle`; never the ttrpc service.

pub mod builtin;
pub mod external;

use crate::stdio::ChildIo;
use crate::{Error, Result};
use berth_proto::pb::io::containerd::cgroups::v1::Metrics;
use oci_spec::runtime::{LinuxResources, Process, Spec};
use std::path::{Path, PathBuf};

/// What creating a container needs.
pub struct CreateOpts {
    pub id: String,
    pub bundle: PathBuf,
    /// The root filesystem, already mounted.
    pub rootfs: PathBuf,
    pub spec: Spec,
    pub io: ChildIo,
}

/// What starting an extra process in the container needs.
pub struct ExecOpts {
    pub exec_id: String,
    pub process: Process,
    pub io: ChildIo,
}

/// A process the runtime made.
pub struct Created {
    pub pid: u32,
    /// The master of its terminal, when it asked for one.
    pub console: Option<std::os::fd::OwnedFd>,
}

/// A low-level OCI runtime.
///
/// Contract: [`create`](Self::create) sets the container up and leaves its
/// init process waiting before the user's program, and returns the init's
/// pid (a child of the shim, which reaps it) and, for a terminal, its
/// master, created inside the container; [`start`](Self::start) lets it
/// run the program and fails if that cannot be executed.
/// [`exec`](Self::exec) runs another process in the container's namespaces
/// and cgroup at once and returns its pid. Methods block: the shim calls them
/// from its single thread, which is what makes forking safe.
pub trait OciRuntime: Send + Sync {
    fn create(&self, opts: CreateOpts) -> Result<Created>;
    fn start(&self, id: &str) -> Result<()>;
    fn exec(&self, id: &str, opts: ExecOpts) -> Result<Created>;
    /// Signals one process, or with `all` every process of the container.
    fn kill(&self, id: &str, pid: u32, signal: u32, all: bool) -> Result<()>;
    /// Removes the container (its processes are killed first).
    fn delete(&self, id: &str) -> Result<()>;
    fn pause(&self, id: &str) -> Result<()>;
    fn resume(&self, id: &str) -> Result<()>;
    /// Pids of every process of the container.
    fn pids(&self, id: &str) -> Result<Vec<u32>>;
    fn update(&self, id: &str, resources: &LinuxResources) -> Result<()>;
    fn stats(&self, id: &str) -> Result<Metrics>;
    /// Where OOM kills in the container are heard, if the runtime can tell.
    fn oom_watch(&self, id: &str) -> Option<crate::cgroup::OomWatch>;
}

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

/// Signals one process of a container directly (its pid as the shim sees
/// it); a process that is already gone is NotFound.
pub fn signal_process(pid: u32, signal: u32) -> Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::try_from(signal as i32)
            .map_err(|_| Error::invalid(format!("signal {signal} is not valid")))?,
    )
    .map_err(|e| match e {
        nix::Error::ESRCH => Error::not_found("process already finished"),
        e => Error::sys(format!("kill {pid}"), e),
    })
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
    let choice: Choice = crate::bundle::Bundle::new(bundle)
        .read_runtime()
        .unwrap_or_default();
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
