//! cgroup v1: the container's cgroup is a directory of the same path in
//! every hierarchy (`<root>/<controller>/<path>`).

use super::base::{
    self, Cgroup, OomCounter, OomWatch, check_memory_limit, field, read, read_pids, read_u64,
    remove_dir, write,
};
use super::devices::{Emulator, container_rules};
use crate::{Error, Result};
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
                "{what} needs the {controller} cgroup controller, which this host does not have"
            ))
        })
    }

    fn dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.controllers
            .iter()
            .map(|c| self.root.join(c).join(&self.path))
    }

    fn apply_memory(&self, mem: &oci_spec::runtime::LinuxMemory) -> Result<()> {
        base::check_memory_common(mem)?;
        // Zero is unset (runc's reading), -1 no limit.
        let limit = mem.limit().filter(|l| *l != 0);
        let swap = mem.swap().filter(|s| *s != 0);
        let reservation = mem.reservation().filter(|r| *r != 0);
        // -1 (as unsigned) is unset, as for runc.
        let swappiness = mem.swappiness().filter(|s| *s != u64::MAX);
        if let Some(s) = swappiness.filter(|s| *s > 100) {
            return Err(Error::invalid(format!(
                "linux.resources.memory.swappiness {s} is out of range (0-100)"
            )));
        }
        let oom_off = mem.disable_oom_killer() == Some(true);
        if limit.is_none()
            && swap.is_none()
            && reservation.is_none()
            && swappiness.is_none()
            && !oom_off
        {
            return Ok(());
        }
        let d = self.need("memory", "linux.resources.memory")?;
        if let Some(limit) = limit {
            check_memory_limit(limit, read_u64(&d, "memory.usage_in_bytes"))?;
        }
        // The kernel keeps memory <= memory+swap at every step: a swap
        // limit going up is written first, one going down last.
        let swap_first = swap.is_some_and(|s| {
            s == -1
                || read_u64(&d, "memory.memsw.limit_in_bytes")
                    .is_some_and(|cur| u64::try_from(s).is_ok_and(|s| s > cur))
        });
        let set_swap = |d: &Path| match swap {
            Some(s) => field(
                "linux.resources.memory.swap",
                write(d, "memory.memsw.limit_in_bytes", &s.to_string()),
            ),
            None => Ok(()),
        };
        if swap_first {
            set_swap(&d)?;
        }
        if let Some(l) = limit {
            field(
                "linux.resources.memory.limit",
                write(&d, "memory.limit_in_bytes", &l.to_string()),
            )?;
        }
        if !swap_first {
            set_swap(&d)?;
        }
        if let Some(r) = reservation {
            field(
                "linux.resources.memory.reservation",
                write(&d, "memory.soft_limit_in_bytes", &r.to_string()),
            )?;
        }
        if oom_off {
            field(
                "linux.resources.memory.disableOOMKiller",
                write(&d, "memory.oom_control", "1"),
            )?;
        }
        if let Some(s) = swappiness {
            field(
                "linux.resources.memory.swappiness",
                write(&d, "memory.swappiness", &s.to_string()),
            )?;
        }
        Ok(())
    }

    fn apply_cpu(&self, cpu: &oci_spec::runtime::LinuxCpu) -> Result<()> {
        let rt_runtime = cpu.realtime_runtime().filter(|v| *v != 0);
        let rt_period = cpu.realtime_period().filter(|v| *v != 0);
        let shares = cpu.shares().filter(|s| *s != 0);
        // Zero means unset (runc's reading); the kernel refuses it.
        let period = cpu.period().filter(|p| *p != 0);
        let quota = cpu.quota().filter(|q| *q != 0);
        if shares.is_some()
            || quota.is_some()
            || period.is_some()
            || cpu.burst().is_some()
            || cpu.idle().is_some()
            || rt_runtime.is_some()
            || rt_period.is_some()
        {
            let d = self.need("cpu", "linux.resources.cpu")?;
            if let Some(s) = shares {
                field(
                    "linux.resources.cpu.shares",
                    write(&d, "cpu.shares", &s.to_string()),
                )?;
                // The kernel clamps: a value it changed was not applied.
                if let Some(got) = read_u64(&d, "cpu.shares").filter(|g| *g != s) {
                    return Err(Error::invalid(format!(
                        "linux.resources.cpu.shares {s} is out of range: the kernel set {got}"
                    )));
                }
            }
            // The period first: the quota is checked against it.
            if let Some(p) = period {
                field(
                    "linux.resources.cpu.period",
                    write(&d, "cpu.cfs_period_us", &p.to_string()),
                )?;
            }
            if let Some(b) = cpu.burst() {
                // Above the old quota the kernel refuses it: once more
                // after the quota then.
                if write(&d, "cpu.cfs_burst_us", &b.to_string()).is_err() && quota.is_none() {
                    field(
                        "linux.resources.cpu.burst",
                        write(&d, "cpu.cfs_burst_us", &b.to_string()),
                    )?;
                }
            }
            if let Some(q) = quota {
                field(
                    "linux.resources.cpu.quota",
                    write(&d, "cpu.cfs_quota_us", &q.to_string()),
                )?;
                if let Some(b) = cpu.burst() {
                    field(
                        "linux.resources.cpu.burst",
                        write(&d, "cpu.cfs_burst_us", &b.to_string()),
                    )?;
                }
            }
            if let Some(i) = cpu.idle() {
                field(
                    "linux.resources.cpu.idle",
                    write(&d, "cpu.idle", &i.to_string()),
                )?;
            }
            // Real-time bandwidth: the period first, as runc (the kernel
            // checks the runtime against it).
            if let Some(p) = rt_period {
                field(
                    "linux.resources.cpu.realtimePeriod",
                    write(&d, "cpu.rt_period_us", &p.to_string()),
                )?;
            }
            if let Some(r) = rt_runtime {
                field(
                    "linux.resources.cpu.realtimeRuntime",
                    write(&d, "cpu.rt_runtime_us", &r.to_string()),
                )?;
            }
        }
        for (v, f) in [(cpu.cpus(), "cpuset.cpus"), (cpu.mems(), "cpuset.mems")] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                let name = format!("linux.resources.cpu.{}", &f[7..]);
                field(&name, write(&self.need("cpuset", &name)?, f, v))?;
            }
        }
        Ok(())
    }

    fn apply_blkio(&self, b: &oci_spec::runtime::LinuxBlockIo) -> Result<()> {
        let weight = b.weight().filter(|w| *w != 0);
        let leaf = b.leaf_weight().filter(|w| *w != 0);
        let devs = b.weight_device().as_deref().unwrap_or(&[]);
        let throttles = base::throttles(b);
        if weight.is_none()
            && leaf.is_none()
            && devs.is_empty()
            && throttles.iter().all(|t| t.3.is_empty())
        {
            return Ok(());
        }
        let d = self.need("blkio", "linux.resources.blockIO")?;
        // Kernels with only the BFQ scheduler name the weights differently.
        let (wfile, wdfile) = if d.join("blkio.weight").exists() {
            ("blkio.weight", "blkio.weight_device")
        } else {
            ("blkio.bfq.weight", "blkio.bfq.weight_device")
        };
        if let Some(w) = weight {
            field(
                "linux.resources.blockIO.weight",
                write(&d, wfile, &w.to_string()),
            )?;
        }
        if let Some(w) = leaf {
            field(
                "linux.resources.blockIO.leafWeight",
                write(&d, "blkio.leaf_weight", &w.to_string()),
            )?;
        }
        for (i, wd) in devs.iter().enumerate() {
            let dev = format!("{}:{}", wd.major(), wd.minor());
            if let Some(w) = wd.weight().filter(|w| *w != 0) {
                let name = format!("linux.resources.blockIO.weightDevice[{i}].weight");
                field(&name, write(&d, wdfile, &format!("{dev} {w}")))?;
            }
            if let Some(w) = wd.leaf_weight().filter(|w| *w != 0) {
                let name = format!("linux.resources.blockIO.weightDevice[{i}].leafWeight");
                field(
                    &name,
                    write(&d, "blkio.leaf_weight_device", &format!("{dev} {w}")),
                )?;
            }
        }
        for (name, _, file, list) in throttles {
            for (i, t) in list.iter().enumerate() {
                let line = format!("{}:{} {}", t.major(), t.minor(), t.rate());
                field(&format!("{name}[{i}]"), write(&d, file, &line))?;
            }
        }
        Ok(())
    }

    fn apply_hugetlb(&self, limits: &[oci_spec::runtime::LinuxHugepageLimit]) -> Result<()> {
        if limits.is_empty() {
            return Ok(());
        }
        let d = self.need("hugetlb", "linux.resources.hugepageLimits")?;
        let mut rsvd = true;
        for (i, h) in limits.iter().enumerate() {
            let ps = base::page_size(i, h)?;
            let v = h.limit().to_string();
            let name = format!("linux.resources.hugepageLimits[{i}]");
            field(
                &name,
                write(&d, &format!("hugetlb.{ps}.limit_in_bytes"), &v),
            )?;
            // Reservations too, where the kernel has them (5.7+).
            let f = format!("hugetlb.{ps}.rsvd.limit_in_bytes");
            if rsvd && d.join(&f).exists() {
                field(&name, write(&d, &f, &v))?;
            } else {
                rsvd = false;
            }
        }
        Ok(())
    }

    fn apply_network(&self, n: &oci_spec::runtime::LinuxNetwork) -> Result<()> {
        if let Some(id) = n.class_id() {
            let d = self.need("net_cls", "linux.resources.network.classID")?;
            field(
                "linux.resources.network.classID",
                write(&d, "net_cls.classid", &id.to_string()),
            )?;
        }
        for (i, p) in n.priorities().iter().flatten().enumerate() {
            let name = format!("linux.resources.network.priorities[{i}]");
            let d = self.need("net_prio", &name)?;
            field(
                &name,
                write(
                    &d,
                    "net_prio.ifpriomap",
                    &format!("{} {}", p.name(), p.priority()),
                ),
            )?;
        }
        Ok(())
    }

    /// Moves the device cgroup to the state `devs` (and runc's defaults)
    /// describe, writing only the difference from what `devices.list`
    /// shows, then checks the kernel got there (as runc does).
    fn apply_devices(&self, devs: &[oci_spec::runtime::LinuxDeviceCgroup]) -> Result<()> {
        let target = Emulator::from_rules(&container_rules(devs)?)?;
        let d = self.need("devices", "linux.resources.devices")?;
        // A list that cannot be read is taken as allow-all: the reset to
        // deny-all comes first then.
        let list = read(&d, "devices.list").unwrap_or_else(|| "a *:* rwm".into());
        let now = Emulator::from_list(&list)?;
        for rule in now.transition(&target) {
            let f = if rule.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            field(
                "linux.resources.devices",
                write(&d, f, &rule.cgroup_string()),
            )?;
        }
        // Only the kernel's list can say what took; a fake tree has none.
        if is_cgroupfs(&d) {
            let after = Emulator::from_list(&read(&d, "devices.list").unwrap_or_default())?;
            let same = if target.default_allow {
                after.default_allow
            } else {
                after == target
            };
            if !same {
                return Err(Error::internal(format!(
                    "device cgroup {}: devices.list does not show the rules written",
                    d.display()
                )));
            }
        }
        Ok(())
    }
}

/// True when `d` is on a cgroup v1 filesystem.
fn is_cgroupfs(d: &Path) -> bool {
    nix::sys::statfs::statfs(d)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP_SUPER_MAGIC)
}

impl Cgroup for V1 {
    fn path(&self) -> &str {
        &self.path
    }

    fn apply(&self, r: &LinuxResources) -> Result<()> {
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(Error::invalid(
                "linux.resources.unified needs a cgroup v2 host; this one is v1",
            ));
        }
        if let Some(mem) = r.memory() {
            self.apply_memory(mem)?;
        }
        if let Some(cpu) = r.cpu() {
            self.apply_cpu(cpu)?;
        }
        if let Some(p) = r.pids() {
            let v = base::pids_max(p);
            let d = self.need("pids", "linux.resources.pids")?;
            field("linux.resources.pids.limit", write(&d, "pids.max", &v))?;
        }
        if let Some(b) = r.block_io() {
            self.apply_blkio(b)?;
        }
        if let Some(h) = r.hugepage_limits() {
            self.apply_hugetlb(h)?;
        }
        if let Some(n) = r.network() {
            self.apply_network(n)?;
        }
        let rdma = base::rdma_lines(r)?;
        if !rdma.is_empty() {
            let d = self.need("rdma", "linux.resources.rdma")?;
            for line in rdma {
                field("linux.resources.rdma", write(&d, "rdma.max", &line))?;
            }
        }
        if let Some(devs) = r.devices() {
            self.apply_devices(devs)?;
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
        if !base::wait_until(100, || {
            read(&d, "freezer.state").as_deref() == Some("FROZEN")
        }) {
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

    fn stats(&self) -> super::base::Stats {
        super::base::Stats::V1(super::stats::v1(|c| self.dir(c)))
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
