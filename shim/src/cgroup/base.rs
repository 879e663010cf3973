//! What every cgroup implementation shares: the [`Cgroup`] trait, OOM
//! watching, joining by `tasks` files, and reading and writing cgroup
//! files (each failure naming the file and value).

use crate::{Error, Result};
use berth_proto::pb::io::containerd::cgroups::{v1, v2};
use oci_spec::runtime::LinuxResources;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// A container's cgroup.
pub trait Cgroup: Send + Sync {
    /// The cgroup path, relative to the hierarchy root(s).
    fn path(&self) -> &str;
    /// Applies resource limits: every field is written, or refused with an
    /// error naming it where this hierarchy cannot enforce it. Device rules
    /// (`devices`) replace the cgroup's when present, runc's defaults
    /// appended. A memory limit below current usage is refused with both
    /// numbers.
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
    /// True when this cgroup has a cgroup2 part (see
    /// [`cgroup2_dir`](Self::cgroup2_dir)): a new process is created inside
    /// it, or, where the kernel cannot, moved there by pid with
    /// [`shim_move`](Self::shim_move) while it builds its root filesystem
    /// (that migration waits for an RCU grace period, ~10 ms, the process
    /// need not sit through). On v2 that part is the whole cgroup; on v1 it
    /// is the group in the unified hierarchy of a hybrid host.
    fn shim_moves(&self) -> bool {
        self.cgroup2_dir().is_some()
    }
    /// The directory of the cgroup2 part of this cgroup (see
    /// [`shim_moves`](Self::shim_moves)), for creating a process right
    /// inside it; `None` when there is none.
    fn cgroup2_dir(&self) -> Option<PathBuf>;
    /// Moves `pid` into the cgroup2 part of this cgroup (see
    /// [`shim_moves`](Self::shim_moves)); nothing when there is none.
    fn shim_move(&self, pid: u32) -> Result<()>;
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
    /// Statistics in containerd's type for this hierarchy (v1 or v2
    /// Metrics), as its runc shim answers Stats.
    fn stats(&self) -> Stats;
    /// What to watch for OOM kills in the cgroup.
    fn oom_watch(&self) -> Result<OomWatch>;
    /// Removes the cgroup (retrying briefly while its processes exit); one
    /// that is already gone is fine.
    fn delete(&self) -> Result<()>;
}

/// A cgroup's statistics, in containerd's type for the hierarchy they were
/// read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Stats {
    V1(v1::Metrics),
    V2(v2::Metrics),
}

impl Stats {
    /// Packed as containerd packs them (type URL = the message's full
    /// name), for the Stats answer.
    pub fn to_any(&self) -> prost_types::Any {
        match self {
            Stats::V1(m) => berth_proto::typeurl::pack(m),
            Stats::V2(m) => berth_proto::typeurl::pack(m),
        }
    }
}

/// Signals each pid; one that already exited is fine.
pub fn kill_each(pids: &[u32], sig: i32) -> Result<()> {
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
pub fn oom_kills(memory_events: &str) -> u64 {
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

/// Writes one cgroup file, naming file and value when it fails.
pub fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, value)
        .map_err(|e| Error::io(format!("cgroup: write {value:?} to {}", p.display()), e))
}

/// A cgroup file's contents, trimmed; `None` when it cannot be read.
pub fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A number file; `max` and anything unreadable are `None`.
pub fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file)?.parse().ok()
}

/// A flat keyed file (`memory.stat`, `cpu.stat`…).
pub fn read_keyed(dir: &Path, file: &str) -> HashMap<String, u64> {
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
pub fn read_pids(dir: &Path) -> Result<Vec<u32>> {
    let p = dir.join("cgroup.procs");
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
    }
}

/// Removes a cgroup directory, retrying while it is busy (processes still
/// exiting); one already gone is fine.
pub fn remove_dir(dir: &Path) -> Result<()> {
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

/// Polls `done` every 10 ms, `tries` times: freezing is asynchronous in
/// the kernel.
pub fn wait_until(tries: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// Refuses a memory limit below current usage, naming both numbers.
pub fn check_memory_limit(limit: i64, used: Option<u64>) -> Result<()> {
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

/// The `pids.max` value for a spec's pids limit (both hierarchies use the
/// same file and syntax): a positive limit, else `max` (no limit).
pub fn pids_max(p: &oci_spec::runtime::LinuxPids) -> String {
    if p.limit() > 0 {
        p.limit().to_string()
    } else {
        "max".into()
    }
}

/// The block I/O weight a spec asks for. Zero is unset: engines send it
/// when no weight was asked for.
pub fn io_weight(r: &LinuxResources) -> Option<u16> {
    r.block_io()
        .as_ref()
        .and_then(|b| b.weight())
        .filter(|w| *w != 0)
}

/// A spec field this hierarchy cannot enforce, refused by name.
pub fn refuse(field: &str, why: &str) -> Error {
    Error::unimplemented(format!("{field} is set, but {why}"))
}

/// Names `field` in the error of setting it.
pub fn field<T>(field: &str, r: Result<T>) -> Result<T> {
    r.map_err(|e| e.context(field))
}

/// What neither hierarchy can enforce here, refused on both (runc ignores
/// kernel memory with a warning, and `useHierarchy` without one).
pub fn check_memory_common(mem: &oci_spec::runtime::LinuxMemory) -> Result<()> {
    for (v, f) in [
        (mem.kernel(), "linux.resources.memory.kernel"),
        (mem.kernel_tcp(), "linux.resources.memory.kernelTCP"),
    ] {
        // 0 and -1 ask for no limit, which is what there is.
        if let Some(v) = v.filter(|v| *v != 0 && *v != -1) {
            return Err(refuse(
                &format!("{f} ({v})"),
                "kernel memory limits are gone from the kernel (5.16 and later ignore them) and runc ignores them: drop the field",
            ));
        }
    }
    if mem.use_hierarchy() == Some(false) {
        return Err(refuse(
            "linux.resources.memory.useHierarchy (false)",
            "memory accounting is always hierarchical on this kernel",
        ));
    }
    Ok(())
}

/// The spec's block I/O throttles: field name, `io.max` key (v2) and
/// `blkio.throttle.*` file (v1), and the devices.
pub fn throttles(
    b: &oci_spec::runtime::LinuxBlockIo,
) -> [(
    &'static str,
    &'static str,
    &'static str,
    &[oci_spec::runtime::LinuxThrottleDevice],
); 4] {
    [
        (
            "linux.resources.blockIO.throttleReadBpsDevice",
            "rbps",
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device().as_deref().unwrap_or(&[]),
        ),
        (
            "linux.resources.blockIO.throttleWriteBpsDevice",
            "wbps",
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device().as_deref().unwrap_or(&[]),
        ),
        (
            "linux.resources.blockIO.throttleReadIOPSDevice",
            "riops",
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device().as_deref().unwrap_or(&[]),
        ),
        (
            "linux.resources.blockIO.throttleWriteIOPSDevice",
            "wiops",
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device().as_deref().unwrap_or(&[]),
        ),
    ]
}

/// A hugepage size as a file name part (`2MB`); one that could leave the
/// cgroup directory is refused.
pub fn page_size(i: usize, h: &oci_spec::runtime::LinuxHugepageLimit) -> Result<&str> {
    let ps = h.page_size().as_str();
    if ps.is_empty() || ps.contains('/') || ps.contains("..") {
        return Err(Error::invalid(format!(
            "linux.resources.hugepageLimits[{i}].pageSize {ps:?} is not a page size (2MB, 1GB…)"
        )));
    }
    Ok(ps)
}

/// `rdma.max` lines (both hierarchies), sorted by device.
pub fn rdma_lines(r: &LinuxResources) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for (dev, l) in r.rdma().iter().flatten() {
        if dev.is_empty() || dev.contains(char::is_whitespace) {
            return Err(Error::invalid(format!(
                "linux.resources.rdma: {dev:?} is not an RDMA device name"
            )));
        }
        let mut line = dev.clone();
        if let Some(h) = l.hca_handles() {
            line.push_str(&format!(" hca_handle={h}"));
        }
        if let Some(o) = l.hca_objects() {
            line.push_str(&format!(" hca_object={o}"));
        }
        if l.hca_handles().is_none() && l.hca_objects().is_none() {
            return Err(Error::invalid(format!(
                "linux.resources.rdma.{dev} sets neither hcaHandles nor hcaObjects"
            )));
        }
        v.push(line);
    }
    v.sort();
    Ok(v)
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
    fn memory_limit_below_usage_is_refused() {
        assert!(check_memory_limit(100, Some(200)).is_err());
        assert!(check_memory_limit(-1, Some(200)).is_ok());
        assert!(check_memory_limit(300, Some(200)).is_ok());
    }
}
