//! The contract every low-level runtime implements ([`OciRuntime`]) and
//! what goes in and out of it.

use crate::stdio::ChildIo;
use crate::{Error, Result};
use oci_spec::runtime::{LinuxResources, Process, Spec};
use std::path::PathBuf;

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
    /// The container's cgroup statistics in containerd's type for its
    /// hierarchy (see [`crate::cgroup::Stats`]).
    fn stats(&self, id: &str) -> Result<crate::cgroup::Stats>;
    /// Where OOM kills in the container are heard, if the runtime can tell.
    fn oom_watch(&self, id: &str) -> Option<crate::cgroup::OomWatch>;
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
