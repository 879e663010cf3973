//! cgroup v1: the container's cgroup is a directory of the same path in
//! every hierarchy (`<root>/<controller>/<path>`).

use super::base::{
    self, Cgroup, OomCounter, OomWatch, check_memory_limit, read, read_keyed, read_pids, read_u64,
    remove_dir, write,
};
use crate::{Error, Result};
use berth_proto::pb::io::containerd::cgroups::v1 as m;
use oci_spec::runtime::LinuxResources;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A cgroup on a v1 host.
pub struct V1 {
    root: PathBuf,
    path: String,
    /// The hierarchies' directory names (`cpu,cpuacct` style).
    controllers: Vec<String>,
    /// A hybrid host's cgroup2 mount (`<root>/unified`), which holds no
    /// controllers but is joined too, as runc does: the container's
    /// processes show in it (`0::/<path>` in `/proc/<pid>/cgroup`).
    unified: Option<PathBuf>,
}

/// runc's device rules for every container, after the spec's (specconv's
/// `AllowedDevices`): mknod of any node; the default devices; ptys
/// (136:*, /dev/ptmx 5:2); tun/tap.
pub const DEFAULT_DEVICE_RULES: [&str; 11] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:8 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:5 rwm",
    "c 1:9 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
];

impl V1 {
    pub fn new(root: &Path, path: &str, controllers: Vec<String>) -> V1 {
        let unified = root.join("unified");
        V1 {
            root: root.to_path_buf(),
            path: path.trim_start_matches('/').to_string(),
            controllers,
            unified: unified
                .join("cgroup.controllers")
                .exists()
                .then_some(unified),
        }
    }

    /// The container's cgroup in a hybrid host's cgroup2 mount.
    fn unified_dir(&self) -> Option<PathBuf> {
        self.unified.as_ref().map(|u| u.join(&self.path))
    }

    /// Makes the directory in every hierarchy. A new cpuset cgroup starts
    /// with no CPUs and memory nodes, so no process could join it: each
    /// level made gets its parent's.
    pub fn create(root: &Path, path: &str, controllers: Vec<String>) -> Result<V1> {
        let cg = V1::new(root, path, controllers);
        for c in &cg.controllers {
            let base = root.join(c);
            let mut dir = base.clone();
            for part in Path::new(&cg.path).components() {
                let parent = dir.clone();
                dir.push(part);
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => {
                        return Err(Error::io(format!("create cgroup {}", dir.display()), e));
                    }
                }
                if c.split(',').any(|n| n == "cpuset") {
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        if read(&dir, f).unwrap_or_default().is_empty() {
                            let from = read(&parent, f).ok_or_else(|| {
                                Error::internal(format!(
                                    "cgroup: cannot read {}/{f} to inherit it",
                                    parent.display()
                                ))
                            })?;
                            write(&dir, f, &from)?;
                        }
                    }
                }
            }
        }
        if let Some(u) = cg.unified_dir() {
            std::fs::create_dir_all(&u)
                .map_err(|e| Error::io(format!("create cgroup {}", u.display()), e))?;
        }
        Ok(cg)
    }

    /// The directory of `controller` (`cpuacct` finds `cpu,cpuacct`).
    fn dir(&self, controller: &str) -> Option<PathBuf> {
        self.controllers
            .iter()
            .find(|c| c.split(',').any(|n| n == controller))
            .map(|c| self.root.join(c).join(&self.path))
    }

    /// The directory of a controller a limit needs.
    fn need(&self, controller: &str, what: &str) -> Result<PathBuf> {
        self.dir(controller).ok_or_else(|| {
            Error::precondition(format!(
                "{what} is set but this host has no {controller} cgroup controller"
            ))
        })
    }

    fn dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.controllers
            .iter()
            .map(|c| self.root.join(c).join(&self.path))
    }

    fn apply_memory(&self, mem: &oci_spec::runtime::LinuxMemory) -> Result<()> {
        let d = self.need("memory", "a memory limit")?;
        if let Some(limit) = mem.limit() {
            check_memory_limit(limit, read_u64(&d, "memory.usage_in_bytes"))?;
        }
        // The kernel keeps memory <= memory+swap at every step: a swap
        // limit going up is written first, one going down last.
        let swap_first = mem.swap().is_some_and(|s| {
            s == -1
                || read_u64(&d, "memory.memsw.limit_in_bytes")
                    .is_some_and(|cur| u64::try_from(s).is_ok_and(|s| s > cur))
        });
        let swap = |d: &Path| match mem.swap() {
            Some(s) => write(d, "memory.memsw.limit_in_bytes", &s.to_string()),
            None => Ok(()),
        };
        if swap_first {
            swap(&d)?;
        }
        if let Some(l) = mem.limit() {
            write(&d, "memory.limit_in_bytes", &l.to_string())?;
        }
        if !swap_first {
            swap(&d)?;
        }
        if let Some(r) = mem.reservation() {
            write(&d, "memory.soft_limit_in_bytes", &r.to_string())?;
        }
        if let Some(s) = mem.swappiness() {
            write(&d, "memory.swappiness", &s.to_string())?;
        }
        if mem.disable_oom_killer() == Some(true) {
            write(&d, "memory.oom_control", "1")?;
        }
        Ok(())
    }

    fn apply_cpu(&self, cpu: &oci_spec::runtime::LinuxCpu) -> Result<()> {
        if cpu.shares().is_some() || cpu.quota().is_some() || cpu.period().is_some() {
            let d = self.need("cpu", "a CPU limit")?;
            if let Some(s) = cpu.shares() {
                write(&d, "cpu.shares", &s.to_string())?;
            }
            // The period first: the quota is checked against it. Zero
            // means unset (runc's reading); the kernel refuses it.
            if let Some(p) = cpu.period().filter(|p| *p != 0) {
                write(&d, "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = cpu.quota().filter(|q| *q != 0) {
                write(&d, "cpu.cfs_quota_us", &q.to_string())?;
            }
        }
        for (v, f) in [(cpu.cpus(), "cpuset.cpus"), (cpu.mems(), "cpuset.mems")] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                write(&self.need("cpuset", "a cpuset")?, f, v)?;
            }
        }
        Ok(())
    }
}

/// A device rule as `devices.allow`/`devices.deny` take it (`c 1:3 rwm`).
pub fn device_rule(d: &oci_spec::runtime::LinuxDeviceCgroup) -> String {
    let num = |n: Option<i64>| n.filter(|n| *n >= 0).map_or("*".into(), |n| n.to_string());
    let typ = d.typ().map_or("a".into(), |t| t.as_str().to_string());
    format!(
        "{typ} {}:{} {}",
        num(d.major()),
        num(d.minor()),
        d.access().as_deref().unwrap_or("rwm")
    )
}

/// The writes that set a device cgroup: the spec's rules in its order
/// (later ones refine earlier ones), then runc's defaults, which every
/// container gets.
pub fn device_writes(devs: &[oci_spec::runtime::LinuxDeviceCgroup]) -> Vec<(&'static str, String)> {
    let spec = devs.iter().map(|dev| {
        let f = if dev.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        (f, device_rule(dev))
    });
    let defaults = DEFAULT_DEVICE_RULES
        .iter()
        .map(|r| ("devices.allow", (*r).to_string()));
    spec.chain(defaults).collect()
}

impl Cgroup for V1 {
    fn path(&self) -> &str {
        &self.path
    }

    fn apply(&self, r: &LinuxResources) -> Result<()> {
        if let Some(mem) = r.memory() {
            self.apply_memory(mem)?;
        }
        if let Some(cpu) = r.cpu() {
            self.apply_cpu(cpu)?;
        }
        if let Some(p) = r.pids() {
            let v = base::pids_max(p);
            write(&self.need("pids", "a pids limit")?, "pids.max", &v)?;
        }
        if let Some(w) = base::io_weight(r) {
            let d = self.need("blkio", "a block I/O weight")?;
            // Kernels with only the BFQ scheduler name it differently.
            let f = if d.join("blkio.weight").exists() {
                "blkio.weight"
            } else {
                "blkio.bfq.weight"
            };
            write(&d, f, &w.to_string())?;
        }
        if let Some(devs) = r.devices() {
            let d = self.need("devices", "a device rule")?;
            for (f, rule) in device_writes(devs) {
                write(&d, f, &rule)?;
            }
        }
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(Error::invalid(
                "unified cgroup resources need a cgroup v2 host; this one is v1",
            ));
        }
        Ok(())
    }

    fn add(&self, pid: u32) -> Result<()> {
        for d in self.dirs().chain(self.unified_dir()) {
            write(&d, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn self_join_files(&self) -> Result<Option<Vec<OwnedFd>>> {
        let mut files = Vec::new();
        for d in self.dirs() {
            let p = d.join("tasks");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|e| Error::io(format!("open {}", p.display()), e))?;
            files.push(OwnedFd::from(f));
        }
        // The unified group is joined by the shim (see shim_moves).
        Ok(Some(files))
    }

    fn cgroup2_dir(&self) -> Option<PathBuf> {
        self.unified_dir()
    }

    fn shim_move(&self, pid: u32) -> Result<()> {
        match self.unified_dir() {
            Some(u) => write(&u, "cgroup.procs", &pid.to_string()),
            None => Ok(()),
        }
    }

    fn procs(&self) -> Result<Vec<u32>> {
        let mut v = Vec::new();
        for d in self.dirs() {
            v.extend(read_pids(&d)?);
        }
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    fn freeze(&self) -> Result<()> {
        let d = self.need("freezer", "pausing")?;
        write(&d, "freezer.state", "FROZEN")?;
        if !super::base::wait_until(|| read(&d, "freezer.state").as_deref() == Some("FROZEN")) {
            // Half-frozen helps nobody: let it run again.
            write(&d, "freezer.state", "THAWED")?;
            return Err(Error::internal(format!(
                "cgroup {}: processes did not freeze within a second",
                self.path
            )));
        }
        Ok(())
    }

    fn thaw(&self) -> Result<()> {
        write(
            &self.need("freezer", "resuming")?,
            "freezer.state",
            "THAWED",
        )
    }

    fn stats(&self) -> m::Metrics {
        let mut out = m::Metrics::default();
        if let Some(d) = self.dir("pids") {
            out.pids = Some(m::PidsStat {
                current: read_u64(&d, "pids.current").unwrap_or(0),
                limit: read_u64(&d, "pids.max").unwrap_or(0),
            });
        }
        let mut cpu = m::CpuStat::default();
        if let Some(d) = self.dir("cpuacct") {
            cpu.usage = Some(m::CpuUsage {
                total: read_u64(&d, "cpuacct.usage").unwrap_or(0),
                kernel: read_u64(&d, "cpuacct.usage_sys").unwrap_or(0),
                user: read_u64(&d, "cpuacct.usage_user").unwrap_or(0),
                per_cpu: read(&d, "cpuacct.usage_percpu")
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect(),
            });
        }
        if let Some(d) = self.dir("cpu") {
            let s = read_keyed(&d, "cpu.stat");
            let get = |k: &str| s.get(k).copied().unwrap_or(0);
            cpu.throttling = Some(m::Throttle {
                periods: get("nr_periods"),
                throttled_periods: get("nr_throttled"),
                throttled_time: get("throttled_time"),
            });
        }
        out.cpu = Some(cpu);
        if let Some(d) = self.dir("memory") {
            out.memory = Some(super::stats::v1_memory(&d));
            let oom = read_keyed(&d, "memory.oom_control");
            let get = |k: &str| oom.get(k).copied().unwrap_or(0);
            out.memory_oom_control = Some(m::MemoryOomControl {
                oom_kill_disable: get("oom_kill_disable"),
                under_oom: get("under_oom"),
                oom_kill: get("oom_kill"),
            });
        }
        out
    }

    fn oom_watch(&self) -> Result<OomWatch> {
        let dir = self.need("memory", "watching OOM kills")?;
        let ctl = std::fs::File::open(dir.join("memory.oom_control"))
            .map_err(|e| Error::io("open memory.oom_control", e))?;
        let efd = nix::sys::eventfd::EventFd::from_flags(
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(|e| Error::sys("create eventfd", e))?;
        write(
            &dir,
            "cgroup.event_control",
            &format!("{} {}", efd.as_raw_fd(), ctl.as_raw_fd()),
        )?;
        Ok(OomWatch {
            fd: OwnedFd::from(efd),
            counter: OomCounter::EventFd,
        })
    }

    fn delete(&self) -> Result<()> {
        for d in self.dirs().chain(self.unified_dir()) {
            remove_dir(&d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
