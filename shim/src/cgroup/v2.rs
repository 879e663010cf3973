//! cgroup v2: one unified tree. A cgroup's limits need their controllers
//! enabled in every ancestor's `cgroup.subtree_control`, which creating
//! the cgroup does for every controller the root offers. Every field of
//! `linux.resources` is written as runc's fs2 manager writes it, or refused
//! by name where v2 has no file for it (runc ignores those); device rules
//! are an eBPF program attached to the cgroup ([`super::bpf`]).

use super::base::Stats;
use super::base::{
    self, Cgroup, OomCounter, OomWatch, check_memory_limit, field, read, read_keyed, read_pids,
    read_u64, refuse, remove_dir, write,
};
use super::devices::{Emulator, container_rules};
use crate::{Error, Result};
use oci_spec::runtime::LinuxResources;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Controllers a container's limits use, enabled down to its cgroup when
/// the host has them.
const WANTED: [&str; 7] = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb", "rdma"];

/// How device rules reach a cgroup: [`super::bpf::set_device_rules`]; the
/// tests' fake trees record them instead.
pub type DeviceSetter = fn(&Path, &Emulator) -> Result<()>;

/// A cgroup on a v2 host.
pub struct V2 {
    dir: PathBuf,
    path: String,
    set_devices: DeviceSetter,
}

impl V2 {
    pub fn new(root: &Path, path: &str) -> V2 {
        let path = path.trim_start_matches('/').to_string();
        V2 {
            dir: root.join(&path),
            path,
            set_devices: super::bpf::set_device_rules,
        }
    }

    /// The same cgroup with device rules going to `f`.
    pub fn with_device_setter(self, f: DeviceSetter) -> V2 {
        V2 {
            set_devices: f,
            ..self
        }
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the cgroup, enabling the wanted controllers the root offers
    /// in the root and each ancestor on the way down.
    pub fn create(root: &Path, path: &str) -> Result<V2> {
        let cg = V2::new(root, path);
        let offered = read(root, "cgroup.controllers").unwrap_or_default();
        let enable: Vec<&str> = WANTED
            .into_iter()
            .filter(|c| offered.split_whitespace().any(|o| o == *c))
            .collect();
        let mut dir = root.to_path_buf();
        for part in Path::new(&cg.path).components() {
            enable_in(&dir, &enable)?;
            dir.push(part);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("create cgroup {}", dir.display()), e)),
            }
        }
        Ok(cg)
    }

    fn apply_memory(&self, mem: &oci_spec::runtime::LinuxMemory) -> Result<()> {
        let d = &self.dir;
        base::check_memory_common(mem)?;
        // No per-cgroup swappiness nor OOM-killer switch on v2 (runc
        // ignores both there): refused rather than silently dropped.
        if let Some(s) = mem.swappiness().filter(|s| *s != u64::MAX) {
            return Err(refuse(
                &format!("linux.resources.memory.swappiness ({s})"),
                "cgroup v2 has no per-cgroup swappiness (the host's vm.swappiness applies)",
            ));
        }
        if mem.disable_oom_killer() == Some(true) {
            return Err(refuse(
                "linux.resources.memory.disableOOMKiller",
                "cgroup v2 cannot turn the OOM killer off for a cgroup",
            ));
        }
        let limit = mem.limit().unwrap_or(0);
        if limit != 0 {
            check_memory_limit(limit, read_u64(d, "memory.current"))?;
        }
        if let Some(swap) = swap_max(limit, mem.swap().unwrap_or(0))? {
            // Without swap accounting there is no file; "no swap limit"
            // and "no swap" need none (as runc).
            let r = write(d, "memory.swap.max", &swap);
            let missing = !d.join("memory.swap.max").exists() && (swap == "max" || swap == "0");
            if !missing {
                field("linux.resources.memory.swap", r)?;
            }
        }
        // Zero is unset, as for runc.
        if limit != 0 {
            field(
                "linux.resources.memory.limit",
                write(d, "memory.max", &max_or(limit)),
            )?;
        }
        if let Some(r) = mem.reservation().filter(|r| *r != 0) {
            field(
                "linux.resources.memory.reservation",
                write(d, "memory.low", &max_or(r)),
            )?;
        }
        Ok(())
    }

    fn apply_cpu(&self, cpu: &oci_spec::runtime::LinuxCpu) -> Result<()> {
        let d = &self.dir;
        if cpu.realtime_runtime().is_some_and(|v| v != 0)
            || cpu.realtime_period().is_some_and(|v| v != 0)
        {
            return Err(refuse(
                "linux.resources.cpu.realtimeRuntime/realtimePeriod",
                "cgroup v2 has no real-time CPU bandwidth per cgroup",
            ));
        }
        if let Some(idle) = cpu.idle() {
            field(
                "linux.resources.cpu.idle",
                write(d, "cpu.idle", &idle.to_string()),
            )?;
        }
        if let Some(s) = cpu.shares().filter(|s| *s != 0) {
            field(
                "linux.resources.cpu.shares",
                write(d, "cpu.weight", &cpu_weight(s).to_string()),
            )?;
        }
        // A burst above the current quota is refused (EINVAL) until the
        // quota is written: then it is written again, after (as runc).
        let burst = cpu.burst().map(|b| b.to_string());
        let mut burst_after = None;
        if let Some(b) = &burst
            && let Err(e) = write(d, "cpu.max.burst", b)
        {
            let einval = e.kind() == berth_proto::errdefs::Kind::InvalidArgument;
            if !einval || cpu.quota().unwrap_or(0) == 0 {
                return Err(e.context("linux.resources.cpu.burst"));
            }
            burst_after = Some(b);
        }
        if let Some(v) = cpu_max(cpu.quota(), cpu.period()) {
            field("linux.resources.cpu.quota/period", write(d, "cpu.max", &v))?;
        }
        if let Some(b) = burst_after {
            field("linux.resources.cpu.burst", write(d, "cpu.max.burst", b))?;
        }
        for (v, f, name) in [
            (cpu.cpus(), "cpuset.cpus", "linux.resources.cpu.cpus"),
            (cpu.mems(), "cpuset.mems", "linux.resources.cpu.mems"),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                field(name, write(d, f, v))?;
            }
        }
        Ok(())
    }

    fn apply_io(&self, b: &oci_spec::runtime::LinuxBlockIo) -> Result<()> {
        let d = &self.dir;
        if b.leaf_weight().is_some_and(|w| w != 0) {
            return Err(refuse(
                "linux.resources.blockIO.leafWeight",
                "cgroup v2 has no leaf weights",
            ));
        }
        let devs = b.weight_device().as_deref().unwrap_or(&[]);
        for (i, wd) in devs.iter().enumerate() {
            if wd.leaf_weight().is_some_and(|w| w != 0) {
                return Err(refuse(
                    &format!("linux.resources.blockIO.weightDevice[{i}].leafWeight"),
                    "cgroup v2 has no leaf weights",
                ));
            }
        }
        // BFQ's own file takes the blkio range as is; io.weight (the
        // default scheduler's, iocost) wants it converted.
        let bfq = d.join("io.bfq.weight").exists();
        if let Some(w) = b.weight().filter(|w| *w != 0) {
            let r = if bfq {
                write(d, "io.bfq.weight", &w.to_string())
            } else {
                write(d, "io.weight", &io_weight(w).to_string())
            };
            field("linux.resources.blockIO.weight", r)?;
        }
        // Per-device weights: BFQ's file when it takes them (it then reads
        // "default N", not a bare number), else io.weight's own per-device
        // lines. runc writes only the first and ignores them otherwise.
        let bfq_per_device =
            bfq && read(d, "io.bfq.weight").is_some_and(|s| s.parse::<u64>().is_err());
        for (i, wd) in devs.iter().enumerate() {
            let Some(w) = wd.weight().filter(|w| *w != 0) else {
                continue;
            };
            let (file, v) = if bfq_per_device {
                ("io.bfq.weight", u64::from(w))
            } else {
                ("io.weight", io_weight(w))
            };
            let line = format!("{}:{} {v}", wd.major(), wd.minor());
            field(
                &format!("linux.resources.blockIO.weightDevice[{i}]"),
                write(d, file, &line),
            )?;
        }
        for (name, key, _, list) in base::throttles(b) {
            for (i, t) in list.iter().enumerate() {
                let line = format!("{}:{} {key}={}", t.major(), t.minor(), t.rate());
                field(&format!("{name}[{i}]"), write(d, "io.max", &line))?;
            }
        }
        Ok(())
    }

    fn apply_hugetlb(&self, limits: &[oci_spec::runtime::LinuxHugepageLimit]) -> Result<()> {
        let mut rsvd = true;
        for (i, h) in limits.iter().enumerate() {
            let ps = base::page_size(i, h)?;
            let v = max_or(h.limit());
            let name = format!("linux.resources.hugepageLimits[{i}]");
            field(&name, write(&self.dir, &format!("hugetlb.{ps}.max"), &v))?;
            // Reservations too, where the kernel has them (5.7+): else a
            // page reserved by mmap but not faulted in escapes the limit.
            let f = format!("hugetlb.{ps}.rsvd.max");
            if rsvd && self.dir.join(&f).exists() {
                field(&name, write(&self.dir, &f, &v))?;
            } else {
                rsvd = false;
            }
        }
        Ok(())
    }
}

/// Enables controllers for the children of `dir`, those not enabled yet.
fn enable_in(dir: &Path, controllers: &[&str]) -> Result<()> {
    let on = read(dir, "cgroup.subtree_control").unwrap_or_default();
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !on.split_whitespace().any(|o| o == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(dir, "cgroup.subtree_control", &missing.join(" "))
}

/// An inotify descriptor (non-blocking) reporting changes of `path`.
fn inotify_modify(path: &Path) -> Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let what = || format!("watch {} for OOM kills", path.display());
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("{}: NUL in path", what())))?;
    // SAFETY: inotify_init1 takes only flags and returns a new descriptor.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io(what(), std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: c is a NUL-terminated path that outlives the call.
    if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) } < 0 {
        return Err(Error::io(what(), std::io::Error::last_os_error()));
    }
    Ok(fd)
}

/// A v1-style limit as v2 writes it: negative is `max`.
fn max_or(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

/// `memory.swap.max` for OCI's memory+swap limit (v2's file is swap
/// alone), as runc converts it: 0 is unset, -1 no limit; an unlimited
/// memory with no swap setting means unlimited swap too.
fn swap_max(limit: i64, swap: i64) -> Result<Option<String>> {
    if limit == -1 && swap == 0 {
        return Ok(Some("max".into()));
    }
    match swap {
        0 => return Ok(None),
        -1 => return Ok(Some("max".into())),
        _ => {}
    }
    if limit == 0 || limit == -1 {
        return Err(Error::invalid(format!(
            "linux.resources.memory.swap ({swap}) needs a memory limit on cgroup v2, whose swap limit is swap alone"
        )));
    }
    if limit < 0 || swap < 0 {
        return Err(Error::invalid(format!(
            "linux.resources.memory: limit {limit} and swap {swap} are not limits"
        )));
    }
    if swap < limit {
        return Err(Error::invalid(format!(
            "linux.resources.memory.swap ({swap}, memory+swap) is below the memory limit {limit}"
        )));
    }
    Ok(Some((swap - limit).to_string()))
}

/// v1 CPU shares (2–262144) as a v2 weight (1–10000), as runc maps them.
pub fn cpu_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// `cpu.max`: `<quota> <period>`, `max` for no quota; `None` if neither
/// is set.
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    let quota = quota.filter(|q| *q != 0);
    let period = period.filter(|p| *p != 0);
    if quota.is_none() && period.is_none() {
        return None;
    }
    let q = quota
        .filter(|q| *q > 0)
        .map_or("max".into(), |q| q.to_string());
    Some(format!("{q} {}", period.unwrap_or(100_000)))
}

/// A blkio weight (10–1000) as an io.weight (1–10000), as runc maps it.
pub fn io_weight(w: u16) -> u64 {
    let w = u64::from(w.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

impl Cgroup for V2 {
    fn path(&self) -> &str {
        &self.path
    }

    fn apply(&self, r: &LinuxResources) -> Result<()> {
        if let Some(n) = r.network()
            && (n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty()))
        {
            return Err(refuse(
                "linux.resources.network (classID, priorities)",
                "cgroup v2 has no net_cls or net_prio controller",
            ));
        }
        if let Some(p) = r.pids() {
            let v = base::pids_max(p);
            field(
                "linux.resources.pids.limit",
                write(&self.dir, "pids.max", &v),
            )?;
        }
        if let Some(mem) = r.memory() {
            self.apply_memory(mem)?;
        }
        if let Some(b) = r.block_io() {
            self.apply_io(b)?;
        }
        if let Some(cpu) = r.cpu() {
            self.apply_cpu(cpu)?;
        }
        if let Some(devs) = r.devices() {
            let e = Emulator::from_rules(&container_rules(devs)?)?;
            (self.set_devices)(&self.dir, &e)?;
        }
        if let Some(h) = r.hugepage_limits() {
            self.apply_hugetlb(h)?;
        }
        for line in base::rdma_lines(r)? {
            field("linux.resources.rdma", write(&self.dir, "rdma.max", &line))?;
        }
        // Raw v2 settings, file by file; sorted so a failure is repeatable.
        let mut unified: Vec<_> = r
            .unified()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        unified.sort();
        for (file, value) in unified {
            if file.contains('/') || file.starts_with("cgroup.") {
                return Err(Error::invalid(format!(
                    "linux.resources.unified: {file:?} is not a controller file"
                )));
            }
            field(
                &format!("linux.resources.unified[{file:?}]"),
                write(&self.dir, &file, &value),
            )?;
        }
        Ok(())
    }

    fn add(&self, pid: u32) -> Result<()> {
        write(&self.dir, "cgroup.procs", &pid.to_string())
    }

    fn self_join_files(&self) -> Result<Option<Vec<OwnedFd>>> {
        Ok(None)
    }

    fn cgroup2_dir(&self) -> Option<PathBuf> {
        Some(self.dir.clone())
    }

    fn shim_move(&self, pid: u32) -> Result<()> {
        self.add(pid)
    }

    fn procs(&self) -> Result<Vec<u32>> {
        let mut v = read_pids(&self.dir)?;
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    fn freeze(&self) -> Result<()> {
        if !self.dir.join("cgroup.freeze").exists() {
            return Err(Error::precondition(format!(
                "cgroup {}: no cgroup.freeze (the v2 freezer needs Linux 5.2)",
                self.path
            )));
        }
        write(&self.dir, "cgroup.freeze", "1")?;
        // cgroup.freeze says what was asked; cgroup.events says when every
        // process has stopped. runc waits up to 10 s for it too.
        let frozen = || {
            read_keyed(&self.dir, "cgroup.events")
                .get("frozen")
                .is_some_and(|f| *f == 1)
        };
        if !base::wait_until(1000, frozen) {
            // Half-frozen helps nobody: let it run again.
            write(&self.dir, "cgroup.freeze", "0")?;
            return Err(Error::internal(format!(
                "cgroup {}: processes did not freeze within 10 seconds",
                self.path
            )));
        }
        Ok(())
    }

    fn thaw(&self) -> Result<()> {
        write(&self.dir, "cgroup.freeze", "0")
    }

    fn kill_all(&self, sig: i32) -> Result<()> {
        // cgroup.kill (Linux 5.14+) kills atomically, forks included.
        if sig == libc::SIGKILL && self.dir.join("cgroup.kill").exists() {
            return write(&self.dir, "cgroup.kill", "1");
        }
        base::kill_each(&self.procs()?, sig)
    }

    fn stats(&self) -> Stats {
        Stats::V2(super::stats::v2(&self.dir))
    }

    fn oom_watch(&self) -> Result<OomWatch> {
        // v2 has no OOM eventfd: memory.events changes (a kernfs notify,
        // seen by inotify) and its oom_kill count tells kills apart from
        // the other events it counts.
        let path = self.dir.join("memory.events");
        let seen = base::oom_kills(&read(&self.dir, "memory.events").unwrap_or_default());
        Ok(OomWatch {
            fd: inotify_modify(&path)?,
            counter: OomCounter::MemoryEvents { path, seen },
        })
    }

    fn delete(&self) -> Result<()> {
        remove_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests;
