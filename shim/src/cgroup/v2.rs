//! cgroup v2: one unified tree. A cgroup's limits need their controllers
//! enabled in every ancestor's `cgroup.subtree_control`, which creating
//! the cgroup does for every controller the root offers.

use super::base::{
    self, Cgroup, OomCounter, OomWatch, check_memory_limit, read, read_keyed, read_pids, read_u64,
    remove_dir, write,
};
use crate::{Error, Result};
use berth_proto::pb::io::containerd::cgroups::v1 as m;
use oci_spec::runtime::LinuxResources;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Controllers a container's limits use, enabled down to its cgroup when
/// the host has them.
const WANTED: [&str; 6] = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb"];

/// A cgroup on a v2 host.
pub struct V2 {
    dir: PathBuf,
    path: String,
}

impl V2 {
    pub fn new(root: &Path, path: &str) -> V2 {
        let path = path.trim_start_matches('/').to_string();
        V2 {
            dir: root.join(&path),
            path,
        }
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
        if let Some(limit) = mem.limit() {
            check_memory_limit(limit, read_u64(d, "memory.current"))?;
            write(d, "memory.max", &max_or(limit))?;
        }
        if let Some(r) = mem.reservation() {
            write(d, "memory.low", &max_or(r))?;
        }
        if let Some(swap) = swap_max(mem.limit(), mem.swap())? {
            write(d, "memory.swap.max", &swap)?;
        }
        // memory.swappiness has no v2 file: the kernel's global setting
        // applies (runc ignores it on v2 too).
        Ok(())
    }

    fn apply_cpu(&self, cpu: &oci_spec::runtime::LinuxCpu) -> Result<()> {
        let d = &self.dir;
        if let Some(s) = cpu.shares().filter(|s| *s != 0) {
            write(d, "cpu.weight", &cpu_weight(s).to_string())?;
        }
        if let Some(v) = cpu_max(cpu.quota(), cpu.period()) {
            write(d, "cpu.max", &v)?;
        }
        for (v, f) in [(cpu.cpus(), "cpuset.cpus"), (cpu.mems(), "cpuset.mems")] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                write(d, f, v)?;
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

/// OCI's swap is memory+swap; v2's `memory.swap.max` is swap alone.
fn swap_max(limit: Option<i64>, swap: Option<i64>) -> Result<Option<String>> {
    match (limit, swap) {
        (_, None) => Ok(None),
        (_, Some(s)) if s < 0 => Ok(Some("max".into())),
        (Some(l), Some(s)) if l >= 0 => {
            if s < l {
                return Err(Error::invalid(format!(
                    "memory+swap limit {s} is below the memory limit {l}"
                )));
            }
            Ok(Some((s - l).to_string()))
        }
        (_, Some(s)) => Err(Error::invalid(format!(
            "a memory+swap limit ({s}) needs a memory limit on cgroup v2"
        ))),
    }
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
        if let Some(mem) = r.memory() {
            self.apply_memory(mem)?;
        }
        if let Some(cpu) = r.cpu() {
            self.apply_cpu(cpu)?;
        }
        if let Some(p) = r.pids() {
            let v = base::pids_max(p);
            write(&self.dir, "pids.max", &v)?;
        }
        if let Some(w) = base::io_weight(r) {
            write(&self.dir, "io.weight", &io_weight(w).to_string())?;
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
                    "unified cgroup resource {file:?} is not a controller file"
                )));
            }
            write(&self.dir, &file, &value)?;
        }
        // Device rules on v2 need an eBPF program attached to the cgroup,
        // which the built-in runtime does not load yet (neither did its
        // cgroups-rs predecessor); the container's /dev holds only the
        // nodes the spec lists.
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
        write(&self.dir, "cgroup.freeze", "1")?;
        let frozen = || {
            read_keyed(&self.dir, "cgroup.events")
                .get("frozen")
                .is_some_and(|f| *f == 1)
        };
        if !super::base::wait_until(frozen) {
            write(&self.dir, "cgroup.freeze", "0")?;
            return Err(Error::internal(format!(
                "cgroup {}: processes did not freeze within a second",
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
        super::base::kill_each(&self.procs()?, sig)
    }

    fn stats(&self) -> m::Metrics {
        let d = &self.dir;
        let cpu = read_keyed(d, "cpu.stat");
        let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
        let mem = read_keyed(d, "memory.stat");
        let s = |k: &str| mem.get(k).copied().unwrap_or(0);
        let events = read_keyed(d, "memory.events");
        m::Metrics {
            pids: Some(m::PidsStat {
                current: read_u64(d, "pids.current").unwrap_or(0),
                limit: read_u64(d, "pids.max").unwrap_or(0),
            }),
            cpu: Some(m::CpuStat {
                usage: Some(m::CpuUsage {
                    total: c("usage_usec") * 1000,
                    kernel: c("system_usec") * 1000,
                    user: c("user_usec") * 1000,
                    per_cpu: Vec::new(),
                }),
                throttling: Some(m::Throttle {
                    periods: c("nr_periods"),
                    throttled_periods: c("nr_throttled"),
                    throttled_time: c("throttled_usec") * 1000,
                }),
            }),
            memory: Some(m::MemoryStat {
                cache: s("file"),
                rss: s("anon"),
                rss_huge: s("anon_thp"),
                mapped_file: s("file_mapped"),
                dirty: s("file_dirty"),
                writeback: s("file_writeback"),
                pg_fault: s("pgfault"),
                pg_maj_fault: s("pgmajfault"),
                inactive_anon: s("inactive_anon"),
                active_anon: s("active_anon"),
                inactive_file: s("inactive_file"),
                active_file: s("active_file"),
                unevictable: s("unevictable"),
                usage: Some(m::MemoryEntry {
                    limit: read_u64(d, "memory.max").unwrap_or(0),
                    usage: read_u64(d, "memory.current").unwrap_or(0),
                    max: read_u64(d, "memory.peak").unwrap_or(0),
                    failcnt: events.get("max").copied().unwrap_or(0),
                }),
                swap: Some(m::MemoryEntry {
                    limit: read_u64(d, "memory.swap.max").unwrap_or(0),
                    usage: read_u64(d, "memory.swap.current").unwrap_or(0),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            memory_oom_control: Some(m::MemoryOomControl {
                oom_kill: events.get("oom_kill").copied().unwrap_or(0),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn oom_watch(&self) -> Result<OomWatch> {
        // v2 has no OOM eventfd: memory.events changes (a kernfs notify,
        // seen by inotify) and its oom_kill count tells kills apart from
        // the other events it counts.
        let path = self.dir.join("memory.events");
        let seen = super::base::oom_kills(&read(&self.dir, "memory.events").unwrap_or_default());
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
mod tests {
    use super::super::base::tests::tree;
    use super::*;
    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
        LinuxResourcesBuilder,
    };

    fn file(root: &Path, rel: &str) -> String {
        std::fs::read_to_string(root.join(rel)).unwrap()
    }

    #[test]
    fn create_enables_offered_controllers_down_the_path() {
        let root = tree("v2create");
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids rdma\n",
        )
        .unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "memory\n").unwrap();
        let cg = V2::create(&root, "/default/c1").unwrap();
        assert_eq!(
            file(&root, "cgroup.subtree_control"),
            "+cpu +cpuset +io +pids"
        );
        assert_eq!(
            file(&root, "default/cgroup.subtree_control"),
            "+cpu +cpuset +io +memory +pids"
        );
        assert!(root.join("default/c1").is_dir());
        assert!(
            !root.join("default/c1/cgroup.subtree_control").exists(),
            "the leaf keeps its controllers to itself"
        );
        cg.delete().unwrap();
        assert!(!root.join("default/c1").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn limits_are_converted_to_v2_files() {
        let root = tree("v2limits");
        let cg = V2::create(&root, "c").unwrap();
        let res = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .swap(96i64 << 20)
                    .reservation(-1i64)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50000i64)
                    .period(200000u64)
                    .mems("0")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(100i64).build().unwrap())
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(500u16)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        cg.apply(&res).unwrap();
        assert_eq!(file(&root, "c/memory.max"), "67108864");
        assert_eq!(file(&root, "c/memory.swap.max"), (32u64 << 20).to_string());
        assert_eq!(file(&root, "c/memory.low"), "max");
        assert_eq!(file(&root, "c/cpu.weight"), "39");
        assert_eq!(file(&root, "c/cpu.max"), "50000 200000");
        assert_eq!(file(&root, "c/cpuset.mems"), "0");
        assert_eq!(file(&root, "c/pids.max"), "100");
        assert_eq!(file(&root, "c/io.weight"), io_weight(500).to_string());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn conversions_follow_runc() {
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(262_144), 10_000);
        assert_eq!(cpu_max(None, None), None);
        assert_eq!(
            cpu_max(Some(-1), Some(100_000)).as_deref(),
            Some("max 100000")
        );
        assert_eq!(cpu_max(Some(25_000), None).as_deref(), Some("25000 100000"));
        assert_eq!(io_weight(10), 1);
        assert_eq!(io_weight(1000), 10_000);
        assert_eq!(
            swap_max(Some(100), Some(-1)).unwrap().as_deref(),
            Some("max")
        );
        assert!(swap_max(Some(100), Some(50)).is_err());
        assert!(swap_max(None, Some(50)).is_err());
        assert_eq!(swap_max(Some(100), None).unwrap(), None);
    }

    #[test]
    fn refused_limits_and_missing_files_fail_by_name() {
        let root = tree("v2refuse");
        let cg = V2::new(&root, "gone");
        let res = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(5i64).build().unwrap())
            .build()
            .unwrap();
        // No such cgroup: the write fails and says which file.
        let e = cg.apply(&res).unwrap_err();
        assert!(e.message().contains("gone/pids.max"), "{e}");
        let cg = V2::create(&root, "c").unwrap();
        std::fs::write(root.join("c/memory.current"), "5000\n").unwrap();
        let res = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(4096i64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(
            cg.apply(&res)
                .unwrap_err()
                .message()
                .contains("current usage of 5000")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn procs_stats_oom_and_freeze_from_files() {
        let root = tree("v2stats");
        let cg = V2::create(&root, "c").unwrap();
        let d = root.join("c");
        std::fs::write(d.join("cgroup.procs"), "30\n4\n").unwrap();
        std::fs::write(
            d.join("cpu.stat"),
            "usage_usec 7\nuser_usec 5\nsystem_usec 2\n",
        )
        .unwrap();
        std::fs::write(d.join("memory.stat"), "anon 4096\nfile 8192\n").unwrap();
        std::fs::write(d.join("memory.current"), "12288\n").unwrap();
        std::fs::write(d.join("memory.max"), "max\n").unwrap();
        std::fs::write(d.join("memory.events"), "low 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        std::fs::write(d.join("pids.current"), "2\n").unwrap();
        std::fs::write(d.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        assert_eq!(cg.procs().unwrap(), vec![4, 30]);
        let s = cg.stats();
        let usage = s.cpu.unwrap().usage.unwrap();
        assert_eq!((usage.total, usage.user, usage.kernel), (7000, 5000, 2000));
        let mem = s.memory.unwrap();
        assert_eq!((mem.rss, mem.cache), (4096, 8192));
        let u = mem.usage.unwrap();
        assert_eq!((u.usage, u.limit, u.failcnt), (12288, 0, 3));
        assert_eq!(s.memory_oom_control.unwrap().oom_kill, 1);
        assert_eq!(s.pids.unwrap().current, 2);
        cg.freeze().unwrap();
        assert_eq!(file(&root, "c/cgroup.freeze"), "1");
        cg.thaw().unwrap();
        assert_eq!(file(&root, "c/cgroup.freeze"), "0");
        assert!(cg.self_join_files().unwrap().is_none());
        // OOM kills: counted from memory.events when inotify says it changed.
        let mut w = cg.oom_watch().unwrap();
        std::fs::write(d.join("memory.events"), "low 0\nmax 4\noom 2\noom_kill 3\n").unwrap();
        assert_eq!(w.counter.drain(&w.fd).unwrap(), 2);
        let again = w.counter.drain(&w.fd).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::WouldBlock, "drained");
        cg.add(99).unwrap();
        assert_eq!(file(&root, "c/cgroup.procs"), "99");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Against the host's real cgroup2 mount (needs root, so run with
    /// `--ignored`): a process added, frozen and thawed, killed through
    /// `cgroup.kill`, and the cgroup removed.
    #[test]
    #[ignore]
    fn real_cgroup2_mount() {
        let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/unified")
        };
        let cg = V2::create(&root, &format!("berth-unit-{}", std::process::id())).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        cg.add(child.id()).unwrap();
        assert_eq!(cg.procs().unwrap(), vec![child.id()]);
        cg.freeze().unwrap();
        cg.thaw().unwrap();
        cg.kill_all(libc::SIGKILL).unwrap();
        let st = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGKILL)
        );
        cg.delete().unwrap();
        assert!(!cg.dir.exists());
    }
}
