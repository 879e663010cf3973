//! The container's cgroup behind one trait, [`Cgroup`], with a cgroup v1
//! ([`v1`]: a directory per controller) and a cgroup v2 ([`v2`]: one
//! unified tree) implementation, picked by [`Hierarchy::detect`] from the
//! host (`/sys/fs/cgroup/cgroup.controllers` exists only on v2).
//!
//! Both write the cgroup files directly (no cgroups-rs): every limit that
//! cannot be written fails with the file and value named, and both are
//! unit-tested against fake cgroupfs trees under a temporary directory.
//! May use `crate::error` only.

pub mod v1;
pub mod v2;

use crate::{Error, Result};
use berth_proto::pb::io::containerd::cgroups::v1::Metrics;
use oci_spec::runtime::LinuxResources;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// A container's cgroup.
pub trait Cgroup: Send + Sync {
    /// The cgroup path, relative to the hierarchy root(s).
    fn path(&self) -> &str;
    /// Applies resource limits. A memory limit below current usage is
    /// refused with both numbers.
    fn apply(&self, r: &LinuxResources) -> Result<()>;
    /// Moves a process into the cgroup.
    fn add(&self, pid: u32) -> Result<()>;
    /// On cgroup v1, the `tasks` file of every hierarchy, open for
    /// writing, for [`join_self`]: the container's init joins its cgroup
    /// itself by writing "0" to each. The kernel skips its global
    /// threadgroup lock, whose RCU grace period (~10 ms) a write of a pid
    /// to `cgroup.procs` waits for, only when a single-threaded process
    /// moves itself by thread. `None` on cgroup v2, where `cgroup.threads`
    /// does not take processes of a domain cgroup: there
    /// [`add`](Self::add) is used.
    fn self_join_files(&self) -> Result<Option<Vec<OwnedFd>>>;
    /// Processes in the cgroup, sorted; none when it does not exist.
    fn procs(&self) -> Result<Vec<u32>>;
    /// Freezes every process (pause).
    fn freeze(&self) -> Result<()>;
    /// Thaws every process (resume).
    fn thaw(&self) -> Result<()>;
    /// Sends `sig` to every process in the cgroup.
    fn kill_all(&self, sig: i32) -> Result<()> {
        kill_each(&self.procs()?, sig)
    }
    /// Statistics in containerd's cgroup v1 metrics format (what clients
    /// of this shim decode on either host).
    fn stats(&self) -> Metrics;
    /// What to watch for OOM kills in the cgroup.
    fn oom_watch(&self) -> Result<OomWatch>;
    /// Removes the cgroup (retrying briefly while its processes exit); one
    /// that is already gone is fine.
    fn delete(&self) -> Result<()>;
}

/// Signals each pid; one that already exited is fine.
fn kill_each(pids: &[u32], sig: i32) -> Result<()> {
    for &pid in pids {
        let Ok(p) = i32::try_from(pid) else { continue };
        // SAFETY: plain kill(2).
        if unsafe { libc::kill(p, sig) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(Error::io(format!("signal {sig} to {pid}"), e));
            }
        }
    }
    Ok(())
}

/// How a cgroup tells of OOM kills: a descriptor that becomes readable,
/// and what reading it means.
pub struct OomWatch {
    pub fd: OwnedFd,
    pub counter: OomCounter,
}

/// What an [`OomWatch`]'s descriptor is.
pub enum OomCounter {
    /// v1: an eventfd registered on `memory.oom_control`, counting kills.
    EventFd,
    /// v2: inotify on `memory.events`, whose `oom_kill` count is compared
    /// with the last one seen.
    MemoryEvents { path: PathBuf, seen: u64 },
}

impl OomCounter {
    /// Once the descriptor is readable: consumes what it holds and returns
    /// the OOM kills since the last call. `WouldBlock` when it held nothing.
    pub fn drain(&mut self, fd: &OwnedFd) -> std::io::Result<u64> {
        match self {
            OomCounter::EventFd => {
                let mut buf = [0u8; 8];
                match nix::unistd::read(fd, &mut buf)? {
                    8 => Ok(u64::from_ne_bytes(buf)),
                    n => Err(std::io::Error::other(format!("eventfd read {n} bytes"))),
                }
            }
            OomCounter::MemoryEvents { path, seen } => {
                // Any number of change events: only the count matters.
                let mut buf = [0u8; 1024];
                if nix::unistd::read(fd, &mut buf)? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                let text = std::fs::read_to_string(&*path)?;
                let now = oom_kills(&text);
                let new = now.saturating_sub(*seen);
                *seen = now;
                Ok(new)
            }
        }
    }
}

/// The `oom_kill` count of a v2 `memory.events` file.
fn oom_kills(memory_events: &str) -> u64 {
    memory_events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Moves the calling single-threaded process into the cgroup whose
/// `tasks` files these are (see [`Cgroup::self_join_files`]).
pub fn join_self(files: &[OwnedFd]) -> Result<()> {
    for f in files {
        nix::unistd::write(f, b"0").map_err(|e| Error::sys("join the container's cgroup", e))?;
    }
    Ok(())
}

/// The host's cgroup hierarchy and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One mount per controller (or group of controllers) under the root.
    V1(PathBuf),
    /// One unified tree.
    V2(PathBuf),
}

/// Where cgroup filesystems are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

impl Hierarchy {
    /// The host's: v2 when the root is a cgroup2 mount (it has
    /// `cgroup.controllers`); a hybrid host, whose cgroup2 mount holds no
    /// controllers, is v1.
    pub fn detect() -> Hierarchy {
        Hierarchy::detect_at(Path::new(ROOT))
    }

    pub fn detect_at(root: &Path) -> Hierarchy {
        if root.join("cgroup.controllers").exists() {
            Hierarchy::V2(root.to_path_buf())
        } else {
            Hierarchy::V1(root.to_path_buf())
        }
    }

    fn root(&self) -> &Path {
        match self {
            Hierarchy::V1(r) | Hierarchy::V2(r) => r,
        }
    }

    /// The v1 hierarchies (directory names, `cpu,cpuacct` style), sorted;
    /// none on v2. Symlinks (`cpu` → `cpu,cpuacct`) and a hybrid host's
    /// cgroup2 mount are left out.
    pub fn controllers(&self) -> Vec<String> {
        let Hierarchy::V1(root) = self else {
            return Vec::new();
        };
        let mut v: Vec<String> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !e.path().join("cgroup.controllers").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    /// The directory of cgroup `path` (in v1 `controller`'s hierarchy).
    pub fn dir(&self, controller: Option<&str>, path: &str) -> PathBuf {
        let mut d = self.root().to_path_buf();
        if let Some(c) = controller {
            d.push(c);
        }
        d.join(path.trim_start_matches('/'))
    }

    /// Opens cgroup `path` (existing or not: for restart and cleanup).
    pub fn open(&self, path: &str) -> Box<dyn Cgroup> {
        match self {
            Hierarchy::V1(root) => Box::new(v1::V1::new(root, path, self.controllers())),
            Hierarchy::V2(root) => Box::new(v2::V2::new(root, path)),
        }
    }

    /// Creates cgroup `path` and applies `res`; nothing is left behind
    /// when that fails.
    pub fn create(&self, path: &str, res: Option<&LinuxResources>) -> Result<Box<dyn Cgroup>> {
        if path.trim_start_matches('/').is_empty() {
            return Err(Error::invalid("the spec's cgroupsPath is empty"));
        }
        let cg: Box<dyn Cgroup> = match self {
            Hierarchy::V1(root) => Box::new(v1::V1::create(root, path, self.controllers())?),
            Hierarchy::V2(root) => Box::new(v2::V2::create(root, path)?),
        };
        if let Some(r) = res
            && let Err(e) = cg.apply(r)
        {
            if let Err(d) = cg.delete() {
                eprintln!("remove cgroup {path} after a failed create: {}", d.chain());
            }
            return Err(e);
        }
        Ok(cg)
    }
}

/// Writes one cgroup file, naming file and value when it fails.
fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, value)
        .map_err(|e| Error::io(format!("cgroup: write {value:?} to {}", p.display()), e))
}

/// A cgroup file's contents, trimmed; `None` when it cannot be read.
fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A number file; `max` and anything unreadable are `None`.
fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file)?.parse().ok()
}

/// A flat keyed file (`memory.stat`, `cpu.stat`…).
fn read_keyed(dir: &Path, file: &str) -> HashMap<String, u64> {
    read(dir, file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The pids in a `cgroup.procs` file; none when it does not exist.
fn read_pids(dir: &Path) -> Result<Vec<u32>> {
    let p = dir.join("cgroup.procs");
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
    }
}

/// Removes a cgroup directory, retrying while it is busy (processes still
/// exiting); one already gone is fine.
fn remove_dir(dir: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(Error::io(format!("remove cgroup {}", dir.display()), e)),
        }
    }
}

/// Polls `done` up to a second: freezing is asynchronous in the kernel.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// Refuses a memory limit below current usage, naming both numbers.
fn check_memory_limit(limit: i64, used: Option<u64>) -> Result<()> {
    if let (Ok(l), Some(used)) = (u64::try_from(limit), used)
        && l > 0
        && l < used
    {
        return Err(Error::invalid(format!(
            "memory limit {limit} bytes is below the container's current usage of {used} bytes: raise the limit"
        )));
    }
    Ok(())
}

/// A recording cgroup for tests of what drives one: each call is kept as
/// a line (`kill_all 9`), and calls starting with a prefix it was told to
/// fail return an error.
#[cfg(test)]
#[derive(Default)]
pub struct Fake {
    pub calls: std::sync::Mutex<Vec<String>>,
    pub pids: Vec<u32>,
    pub fail: Option<&'static str>,
}

#[cfg(test)]
impl Fake {
    fn record(&self, line: String) -> Result<()> {
        let fail = self.fail.is_some_and(|f| line.starts_with(f));
        self.calls.lock().unwrap().push(line.clone());
        if fail {
            return Err(Error::io(
                format!("fake {line}"),
                std::io::Error::from_raw_os_error(libc::EBUSY),
            ));
        }
        Ok(())
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[cfg(test)]
impl Cgroup for Fake {
    fn path(&self) -> &str {
        "fake"
    }
    fn apply(&self, r: &LinuxResources) -> Result<()> {
        let pids = r.pids().as_ref().map_or(0, |p| p.limit());
        self.record(format!("apply pids={pids}"))
    }
    fn add(&self, pid: u32) -> Result<()> {
        self.record(format!("add {pid}"))
    }
    fn self_join_files(&self) -> Result<Option<Vec<OwnedFd>>> {
        self.record("self_join_files".into()).map(|()| None)
    }
    fn procs(&self) -> Result<Vec<u32>> {
        self.record("procs".into()).map(|()| self.pids.clone())
    }
    fn freeze(&self) -> Result<()> {
        self.record("freeze".into())
    }
    fn thaw(&self) -> Result<()> {
        self.record("thaw".into())
    }
    fn kill_all(&self, sig: i32) -> Result<()> {
        self.record(format!("kill_all {sig}"))
    }
    fn stats(&self) -> Metrics {
        Metrics::default()
    }
    fn oom_watch(&self) -> Result<OomWatch> {
        self.record("oom_watch".into())?;
        Err(Error::unimplemented("the fake has no OOM events"))
    }
    fn delete(&self) -> Result<()> {
        self.record("delete".into())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh temporary directory for a fake cgroupfs tree.
    pub fn tree(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-cg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn detects_v2_only_with_root_controllers() {
        let root = tree("detect");
        std::fs::create_dir_all(root.join("memory")).unwrap();
        std::fs::create_dir_all(root.join("unified")).unwrap();
        std::fs::write(root.join("unified/cgroup.controllers"), "").unwrap();
        std::os::unix::fs::symlink("memory", root.join("mem")).unwrap();
        let h = Hierarchy::detect_at(&root);
        assert_eq!(h, Hierarchy::V1(root.clone()));
        // The hybrid host's cgroup2 mount and symlinks are no controllers.
        assert_eq!(h.controllers(), vec!["memory".to_string()]);
        assert_eq!(
            h.dir(Some("memory"), "/default/c1"),
            root.join("memory/default/c1")
        );
        std::fs::write(root.join("cgroup.controllers"), "cpu memory").unwrap();
        let h = Hierarchy::detect_at(&root);
        assert_eq!(h, Hierarchy::V2(root.clone()));
        assert!(h.controllers().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn oom_counters_count_kills_only() {
        let efd = nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_NONBLOCK)
            .unwrap();
        efd.write(2).unwrap();
        let fd = OwnedFd::from(efd);
        let mut c = OomCounter::EventFd;
        assert_eq!(c.drain(&fd).unwrap(), 2);
        assert_eq!(
            c.drain(&fd).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        assert_eq!(oom_kills("low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\n"), 5);
        assert_eq!(oom_kills("oom 4\n"), 0, "an OOM without a kill is none");
    }

    #[test]
    fn empty_path_refused_and_memory_limit_checked() {
        let h = Hierarchy::V2(PathBuf::from("/nonexistent"));
        let e = h.create("/", None).err().unwrap();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::InvalidArgument);
        assert!(check_memory_limit(100, Some(200)).is_err());
        assert!(check_memory_limit(-1, Some(200)).is_ok());
        assert!(check_memory_limit(300, Some(200)).is_ok());
    }
}
