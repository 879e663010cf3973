//! The container's cgroup, on cgroups-rs: created under the spec's
//! `cgroupsPath` in every controller (v1) or the unified tree (v2), limits
//! applied from the spec's resources, and statistics in containerd's v1
//! metrics format.

use crate::{Error, Result};
use berth_proto::pb::io::containerd::cgroups::v1 as m;
use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuacct::CpuAcctController;
use cgroups_rs::freezer::FreezerController;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::{CgroupPid, MaxValue, Resources};
use oci_spec::runtime::LinuxResources;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// A container's cgroup.
pub struct Cgroup {
    cg: cgroups_rs::Cgroup,
    path: String,
}

fn cg_err(what: &str, e: cgroups_rs::error::Error) -> Error {
    Error::internal(format!("cgroup {what}: {e}"))
}

/// Moves the calling single-threaded process into the cgroup whose
/// `tasks` files these are (see [`Cgroup::self_join_files`]).
pub fn join_self(files: &[OwnedFd]) -> Result<()> {
    for f in files {
        nix::unistd::write(f, b"0").map_err(|e| Error::sys("join the container's cgroup", e))?;
    }
    Ok(())
}

/// Converts the spec's resources to cgroups-rs's.
fn resources(r: &LinuxResources) -> Resources {
    let mut out = Resources::default();
    if let Some(mem) = r.memory() {
        out.memory.memory_hard_limit = mem.limit();
        out.memory.memory_soft_limit = mem.reservation();
        out.memory.memory_swap_limit = mem.swap();
        out.memory.swappiness = mem.swappiness();
    }
    if let Some(cpu) = r.cpu() {
        out.cpu.shares = cpu.shares();
        out.cpu.quota = cpu.quota();
        out.cpu.period = cpu.period();
        out.cpu.cpus = cpu.cpus().clone();
        out.cpu.mems = cpu.mems().clone();
    }
    if let Some(p) = r.pids() {
        out.pid.maximum_number_of_processes = Some(if p.limit() > 0 {
            MaxValue::Value(p.limit())
        } else {
            MaxValue::Max
        });
    }
    if let Some(b) = r.block_io()
        && let Some(w) = b.weight()
    {
        out.blkio.weight = Some(w);
    }
    if let Some(devs) = r.devices() {
        use cgroups_rs::devices::{DevicePermissions, DeviceType};
        for d in devs {
            let devtype = match d.typ().map(|t| t.as_str().to_string()).as_deref() {
                Some("c") => DeviceType::Char,
                Some("b") => DeviceType::Block,
                _ => DeviceType::All,
            };
            let access = d
                .access()
                .as_deref()
                .unwrap_or("rwm")
                .chars()
                .filter_map(|c| match c {
                    'r' => Some(DevicePermissions::Read),
                    'w' => Some(DevicePermissions::Write),
                    'm' => Some(DevicePermissions::MkNod),
                    _ => None,
                })
                .collect();
            out.devices.devices.push(cgroups_rs::DeviceResource {
                allow: d.allow(),
                devtype,
                major: d.major().unwrap_or(-1),
                minor: d.minor().unwrap_or(-1),
                access,
            });
        }
    }
    out
}

impl Cgroup {
    /// Creates (or opens) the cgroup at `path` and applies `res`.
    pub fn create(path: &str, res: Option<&LinuxResources>) -> Result<Cgroup> {
        let rel = path.trim_start_matches('/').to_string();
        if rel.is_empty() {
            return Err(Error::invalid("the spec's cgroupsPath is empty"));
        }
        let cg = cgroups_rs::Cgroup::new(cgroups_rs::hierarchies::auto(), &rel)
            .map_err(|e| cg_err(&format!("create {path}"), e))?;
        let c = Cgroup { cg, path: rel };
        if let Some(r) = res {
            c.update(r)?;
        }
        Ok(c)
    }

    /// Opens an existing cgroup (after a restart or for cleanup).
    pub fn load(path: &str) -> Cgroup {
        let rel = path.trim_start_matches('/').to_string();
        Cgroup {
            cg: cgroups_rs::Cgroup::load(cgroups_rs::hierarchies::auto(), &rel),
            path: rel,
        }
    }

    /// The cgroup path, relative to the hierarchy roots.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Applies resource limits. A memory limit below current usage is
    /// refused with both numbers.
    pub fn update(&self, r: &LinuxResources) -> Result<()> {
        let res = resources(r);
        if let (Some(limit), Some(mc)) = (
            res.memory.memory_hard_limit,
            self.cg.controller_of::<MemController>(),
        ) && limit > 0
        {
            let used = mc.memory_stat().usage_in_bytes;
            if (limit as u64) < used {
                return Err(Error::invalid(format!(
                    "memory limit {limit} bytes is below the container's current usage of {used} bytes: raise the limit"
                )));
            }
        }
        self.cg.apply(&res).map_err(|e| cg_err("set limits", e))
    }

    /// On cgroup v1, the `tasks` file of every hierarchy, open for
    /// writing, for [`join_self`]: the container's init joins its cgroup
    /// itself by writing "0" to each. The kernel skips its global
    /// threadgroup lock, whose RCU grace period (~10 ms) a write of a pid
    /// to `cgroup.procs` waits for, only when a single-threaded process
    /// moves itself by thread. `None` on cgroup v2, where `cgroup.threads`
    /// does not take processes of a domain cgroup: there [`add`](Self::add)
    /// is used.
    pub fn self_join_files(&self) -> Result<Option<Vec<OwnedFd>>> {
        if self.cg.v2() {
            return Ok(None);
        }
        let mut files = Vec::new();
        for sub in self.cg.subsystems() {
            let path = sub.to_controller().path().join("tasks");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
            files.push(OwnedFd::from(f));
        }
        Ok(Some(files))
    }

    /// Moves a process into the cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(u64::from(pid)))
            .map_err(|e| cg_err(&format!("add pid {pid}"), e))
    }

    /// Processes in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        // A pid is at most pid_max (2^22): one that does not fit is no pid.
        let mut v: Vec<u32> = self
            .cg
            .procs()
            .into_iter()
            .filter_map(|p| u32::try_from(p.pid).ok())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Freezes every process (pause).
    pub fn freeze(&self) -> Result<()> {
        self.cg
            .controller_of::<FreezerController>()
            .ok_or_else(|| Error::precondition("the freezer controller is not available"))?
            .freeze()
            .map_err(|e| cg_err("freeze", e))
    }

    /// Thaws every process (resume).
    pub fn thaw(&self) -> Result<()> {
        self.cg
            .controller_of::<FreezerController>()
            .ok_or_else(|| Error::precondition("the freezer controller is not available"))?
            .thaw()
            .map_err(|e| cg_err("thaw", e))
    }

    /// Sends `sig` to every process in the cgroup.
    pub fn kill_all(&self, sig: i32) {
        for pid in self.procs() {
            // SAFETY: plain kill(2).
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// Removes the cgroup (once empty; retries briefly while processes exit).
    pub fn delete(&self) {
        for _ in 0..50 {
            if self.cg.delete().is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Statistics in containerd's cgroup v1 metrics format.
    pub fn stats(&self) -> m::Metrics {
        let mut out = m::Metrics::default();
        if let Some(pc) = self.cg.controller_of::<PidController>() {
            let limit = match pc.get_pid_max() {
                Ok(MaxValue::Value(v)) => v as u64,
                _ => 0,
            };
            out.pids = Some(m::PidsStat {
                current: pc.get_pid_current().unwrap_or(0),
                limit,
            });
        }
        let mut cpu = m::CpuStat::default();
        if let Some(ca) = self.cg.controller_of::<CpuAcctController>() {
            let a = ca.cpuacct();
            cpu.usage = Some(m::CpuUsage {
                total: a.usage,
                kernel: a.usage_sys,
                user: a.usage_user,
                per_cpu: a
                    .usage_percpu
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect(),
            });
        }
        if let Some(c) = self.cg.controller_of::<CpuController>() {
            let stat = c.cpu().stat;
            let get = |k: &str| {
                stat.lines()
                    .find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse().ok()))
                    .unwrap_or(0)
            };
            cpu.throttling = Some(m::Throttle {
                periods: get("nr_periods"),
                throttled_periods: get("nr_throttled"),
                throttled_time: get("throttled_time"),
            });
        }
        out.cpu = Some(cpu);
        if let Some(mc) = self.cg.controller_of::<MemController>() {
            let s = mc.memory_stat();
            let st = &s.stat;
            let sw = mc.memswap();
            out.memory = Some(m::MemoryStat {
                cache: st.cache,
                rss: st.rss,
                rss_huge: st.rss_huge,
                mapped_file: st.mapped_file,
                dirty: st.dirty,
                writeback: st.writeback,
                pg_pg_in: st.pgpgin,
                pg_pg_out: st.pgpgout,
                pg_fault: st.pgfault,
                pg_maj_fault: st.pgmajfault,
                inactive_anon: st.inactive_anon,
                active_anon: st.active_anon,
                inactive_file: st.inactive_file,
                active_file: st.active_file,
                unevictable: st.unevictable,
                hierarchical_memory_limit: st.hierarchical_memory_limit.max(0) as u64,
                hierarchical_swap_limit: st.hierarchical_memsw_limit.max(0) as u64,
                total_cache: st.total_cache,
                total_rss: st.total_rss,
                total_rss_huge: st.total_rss_huge,
                total_mapped_file: st.total_mapped_file,
                total_dirty: st.total_dirty,
                total_writeback: st.total_writeback,
                total_pg_pg_in: st.total_pgpgin,
                total_pg_pg_out: st.total_pgpgout,
                total_pg_fault: st.total_pgfault,
                total_pg_maj_fault: st.total_pgmajfault,
                total_inactive_anon: st.total_inactive_anon,
                total_active_anon: st.total_active_anon,
                total_inactive_file: st.total_inactive_file,
                total_active_file: st.total_active_file,
                total_unevictable: st.total_unevictable,
                usage: Some(m::MemoryEntry {
                    limit: s.limit_in_bytes.max(0) as u64,
                    usage: s.usage_in_bytes,
                    max: s.max_usage_in_bytes,
                    failcnt: s.fail_cnt,
                }),
                swap: Some(m::MemoryEntry {
                    limit: sw.limit_in_bytes.max(0) as u64,
                    usage: sw.usage_in_bytes,
                    max: sw.max_usage_in_bytes,
                    failcnt: sw.fail_cnt,
                }),
                kernel: None,
                kernel_tcp: None,
            });
            out.memory_oom_control = Some(m::MemoryOomControl {
                oom_kill_disable: u64::from(s.oom_control.oom_kill_disable),
                under_oom: u64::from(s.oom_control.under_oom),
                oom_kill: s.oom_control.oom_kill,
            });
        }
        out
    }

    /// The directory of a v1 controller for this cgroup.
    pub fn v1_dir(&self, controller: &str) -> PathBuf {
        PathBuf::from("/sys/fs/cgroup")
            .join(controller)
            .join(&self.path)
    }

    /// An eventfd that becomes readable on each OOM in the cgroup (v1).
    pub fn oom_eventfd(&self) -> Result<OwnedFd> {
        use std::os::fd::AsRawFd;
        let dir = self.v1_dir("memory");
        let ctl = std::fs::File::open(dir.join("memory.oom_control"))
            .map_err(|e| Error::io("open memory.oom_control", e))?;
        let efd = nix::sys::eventfd::EventFd::from_flags(
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(|e| Error::sys("create eventfd", e))?;
        std::fs::write(
            dir.join("cgroup.event_control"),
            format!("{} {}", efd.as_raw_fd(), ctl.as_raw_fd()),
        )
        .map_err(|e| Error::io("register OOM notification", e))?;
        Ok(OwnedFd::from(efd))
    }
}
