//! Statistics read from cgroup files in containerd's types, as its runc
//! shim answers Stats: `io.containerd.cgroups.v1.Metrics` from a v1 cgroup
//! (a hybrid host's too), `io.containerd.cgroups.v2.Metrics` from a v2 one,
//! each file read as containerd's manager for that hierarchy reads it.

use super::base::{read, read_keyed, read_u64};
use berth_proto::pb::io::containerd::cgroups::v1 as m;
use berth_proto::pb::io::containerd::cgroups::v2 as m2;
use std::path::{Path, PathBuf};

/// A v1 cgroup's statistics, from the directory of each controller it has
/// (`dir("memory")`; `None` for one the host lacks).
pub fn v1(dir: impl Fn(&str) -> Option<PathBuf>) -> m::Metrics {
    let mut out = m::Metrics::default();
    if let Some(d) = dir("pids") {
        out.pids = Some(m::PidsStat {
            current: read_u64(&d, "pids.current").unwrap_or(0),
            limit: read_u64(&d, "pids.max").unwrap_or(0),
        });
    }
    let mut cpu = m::CpuStat::default();
    if let Some(d) = dir("cpuacct") {
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
    if let Some(d) = dir("cpu") {
        let s = read_keyed(&d, "cpu.stat");
        let get = |k: &str| s.get(k).copied().unwrap_or(0);
        cpu.throttling = Some(m::Throttle {
            periods: get("nr_periods"),
            throttled_periods: get("nr_throttled"),
            throttled_time: get("throttled_time"),
        });
    }
    out.cpu = Some(cpu);
    if let Some(d) = dir("blkio") {
        out.blkio = Some(v1_blkio(&d));
    }
    if let Some(d) = dir("hugetlb") {
        out.hugetlb = v1_hugetlb(&d, &hugepage_sizes());
    }
    if let Some(d) = dir("memory") {
        out.memory = Some(v1_memory(&d));
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

/// containerd's memory statistics from a v1 memory cgroup.
pub fn v1_memory(d: &Path) -> m::MemoryStat {
    let st = read_keyed(d, "memory.stat");
    let s = |k: &str| st.get(k).copied().unwrap_or(0);
    let entry = |prefix: &str| m::MemoryEntry {
        limit: read_u64(d, &format!("{prefix}.limit_in_bytes")).unwrap_or(0),
        usage: read_u64(d, &format!("{prefix}.usage_in_bytes")).unwrap_or(0),
        max: read_u64(d, &format!("{prefix}.max_usage_in_bytes")).unwrap_or(0),
        failcnt: read_u64(d, &format!("{prefix}.failcnt")).unwrap_or(0),
    };
    m::MemoryStat {
        cache: s("cache"),
        rss: s("rss"),
        rss_huge: s("rss_huge"),
        mapped_file: s("mapped_file"),
        dirty: s("dirty"),
        writeback: s("writeback"),
        pg_pg_in: s("pgpgin"),
        pg_pg_out: s("pgpgout"),
        pg_fault: s("pgfault"),
        pg_maj_fault: s("pgmajfault"),
        inactive_anon: s("inactive_anon"),
        active_anon: s("active_anon"),
        inactive_file: s("inactive_file"),
        active_file: s("active_file"),
        unevictable: s("unevictable"),
        hierarchical_memory_limit: s("hierarchical_memory_limit"),
        hierarchical_swap_limit: s("hierarchical_memsw_limit"),
        total_cache: s("total_cache"),
        total_rss: s("total_rss"),
        total_rss_huge: s("total_rss_huge"),
        total_mapped_file: s("total_mapped_file"),
        total_dirty: s("total_dirty"),
        total_writeback: s("total_writeback"),
        total_pg_pg_in: s("total_pgpgin"),
        total_pg_pg_out: s("total_pgpgout"),
        total_pg_fault: s("total_pgfault"),
        total_pg_maj_fault: s("total_pgmajfault"),
        total_inactive_anon: s("total_inactive_anon"),
        total_active_anon: s("total_active_anon"),
        total_inactive_file: s("total_inactive_file"),
        total_active_file: s("total_active_file"),
        total_unevictable: s("total_unevictable"),
        usage: Some(entry("memory")),
        swap: Some(entry("memory.memsw")),
        kernel: None,
        kernel_tcp: None,
    }
}

/// containerd's v1 block I/O statistics: the CFQ/BFQ recursive files
/// where the scheduler keeps them, else the throttling ones (which every
/// kernel has), lines `8:0 Read 4096` (the `Total` lines left out).
pub fn v1_blkio(d: &Path) -> m::BlkIoStat {
    let cfq = d.join("blkio.io_serviced_recursive").exists();
    let (bytes, ios) = if cfq {
        (
            "blkio.io_service_bytes_recursive",
            "blkio.io_serviced_recursive",
        )
    } else {
        (
            "blkio.throttle.io_service_bytes",
            "blkio.throttle.io_serviced",
        )
    };
    let entries = |f: &str| -> Vec<m::BlkIoEntry> {
        read(d, f)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut p = l.split_whitespace();
                let (dev, op, v) = (p.next()?, p.next()?, p.next()?);
                let (maj, min) = dev.split_once(':')?;
                Some(m::BlkIoEntry {
                    op: op.to_string(),
                    device: String::new(),
                    major: maj.parse().ok()?,
                    minor: min.parse().ok()?,
                    value: v.parse().ok()?,
                })
            })
            .collect()
    };
    m::BlkIoStat {
        io_service_bytes_recursive: entries(bytes),
        io_serviced_recursive: entries(ios),
    }
}

/// The host's hugepage sizes as cgroup files name them (`2MB`, `1GB`),
/// from `/sys/kernel/mm/hugepages/hugepages-2048kB`…, sorted by size.
pub fn hugepage_sizes() -> Vec<String> {
    let mut kb: Vec<u64> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            n.strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()
        })
        .collect();
    kb.sort_unstable();
    kb.into_iter().map(size_name).collect()
}

/// A size in kB as the kernel's hugetlb files name it (2048 → `2MB`).
pub fn size_name(kb: u64) -> String {
    let mut units = ["KB", "MB", "GB", "TB", "PB"].iter();
    let mut unit = units.next().copied().unwrap_or("KB");
    let mut v = kb;
    while v >= 1024 && v.is_multiple_of(1024) {
        match units.next() {
            Some(u) => unit = u,
            None => break,
        }
        v /= 1024;
    }
    format!("{v}{unit}")
}

/// containerd's v1 hugetlb statistics, one per page size.
pub fn v1_hugetlb(d: &Path, sizes: &[String]) -> Vec<m::HugetlbStat> {
    sizes
        .iter()
        .map(|ps| m::HugetlbStat {
            usage: read_u64(d, &format!("hugetlb.{ps}.usage_in_bytes")).unwrap_or(0),
            max: read_u64(d, &format!("hugetlb.{ps}.max_usage_in_bytes")).unwrap_or(0),
            failcnt: read_u64(d, &format!("hugetlb.{ps}.failcnt")).unwrap_or(0),
            pagesize: ps.clone(),
        })
        .collect()
}

/// A v2 file holding one number or `max`, read as containerd's v2
/// manager reads it: `max` is the largest number, absent or unreadable 0.
fn v2_number(d: &Path, f: &str) -> u64 {
    match read(d, f).as_deref() {
        Some("max") => u64::MAX,
        Some(v) => v.parse().unwrap_or(0),
        None => 0,
    }
}

/// A v2 cgroup's statistics in containerd's v2 type, each file read as
/// containerd's v2 manager reads it.
pub fn v2(d: &Path) -> m2::Metrics {
    let cpu = read_keyed(d, "cpu.stat");
    let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
    let mem = read_keyed(d, "memory.stat");
    let s = |k: &str| mem.get(k).copied().unwrap_or(0);
    let events = read_keyed(d, "memory.events");
    let ev = |k: &str| events.get(k).copied().unwrap_or(0);
    m2::Metrics {
        pids: Some(m2::PidsStat {
            current: v2_number(d, "pids.current"),
            limit: v2_number(d, "pids.max"),
        }),
        cpu: Some(m2::CpuStat {
            usage_usec: c("usage_usec"),
            user_usec: c("user_usec"),
            system_usec: c("system_usec"),
            nr_periods: c("nr_periods"),
            nr_throttled: c("nr_throttled"),
            throttled_usec: c("throttled_usec"),
        }),
        memory: Some(m2::MemoryStat {
            anon: s("anon"),
            file: s("file"),
            kernel_stack: s("kernel_stack"),
            slab: s("slab"),
            sock: s("sock"),
            shmem: s("shmem"),
            file_mapped: s("file_mapped"),
            file_dirty: s("file_dirty"),
            file_writeback: s("file_writeback"),
            anon_thp: s("anon_thp"),
            inactive_anon: s("inactive_anon"),
            active_anon: s("active_anon"),
            inactive_file: s("inactive_file"),
            active_file: s("active_file"),
            unevictable: s("unevictable"),
            slab_reclaimable: s("slab_reclaimable"),
            slab_unreclaimable: s("slab_unreclaimable"),
            pgfault: s("pgfault"),
            pgmajfault: s("pgmajfault"),
            // Kernels since 5.9 split these two by anon/file; the type
            // (containerd 1.6's) has only the old keys, which such a
            // kernel no longer writes: 0, as containerd reports them.
            workingset_refault: s("workingset_refault"),
            workingset_activate: s("workingset_activate"),
            workingset_nodereclaim: s("workingset_nodereclaim"),
            pgrefill: s("pgrefill"),
            pgscan: s("pgscan"),
            pgsteal: s("pgsteal"),
            pgactivate: s("pgactivate"),
            pgdeactivate: s("pgdeactivate"),
            pglazyfree: s("pglazyfree"),
            pglazyfreed: s("pglazyfreed"),
            thp_fault_alloc: s("thp_fault_alloc"),
            thp_collapse_alloc: s("thp_collapse_alloc"),
            usage: v2_number(d, "memory.current"),
            usage_limit: v2_number(d, "memory.max"),
            swap_usage: v2_number(d, "memory.swap.current"),
            swap_limit: v2_number(d, "memory.swap.max"),
        }),
        // Left out when the file is (no memory controller), as containerd
        // does.
        memory_events: (!events.is_empty()).then(|| m2::MemoryEvents {
            low: ev("low"),
            high: ev("high"),
            max: ev("max"),
            oom: ev("oom"),
            oom_kill: ev("oom_kill"),
        }),
        rdma: Some(m2::RdmaStat {
            current: v2_rdma(d, "rdma.current"),
            limit: v2_rdma(d, "rdma.max"),
        }),
        io: Some(m2::IoStat { usage: v2_io(d) }),
        hugetlb: v2_hugetlb(d),
    }
}

/// io.stat, one entry per device line (`8:0 rbytes=1 wbytes=2 rios=3
/// wios=4 dbytes=0 dios=0`); keys the type has no field for are skipped.
fn v2_io(d: &Path) -> Vec<m2::IoEntry> {
    let text = read(d, "io.stat").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some((maj, min)) = parts.next().and_then(|dev| dev.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (maj.parse(), min.parse()) else {
            continue;
        };
        let mut e = m2::IoEntry {
            major,
            minor,
            ..Default::default()
        };
        for (k, v) in parts.filter_map(|kv| kv.split_once('=')) {
            let Ok(v) = v.parse() else { continue };
            match k {
                "rbytes" => e.rbytes = v,
                "wbytes" => e.wbytes = v,
                "rios" => e.rios = v,
                "wios" => e.wios = v,
                _ => {}
            }
        }
        out.push(e);
    }
    out
}

/// rdma.current or rdma.max, one entry per device line
/// (`mlx4_0 hca_handle=2 hca_object=max`); `max` is the largest u32.
fn v2_rdma(d: &Path, f: &str) -> Vec<m2::RdmaEntry> {
    let text = read(d, f).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        // A device line has its name and both keys.
        let [device, kvs @ ..] = parts.as_slice() else {
            continue;
        };
        if kvs.len() != 2 {
            continue;
        }
        let mut e = m2::RdmaEntry {
            device: device.to_string(),
            ..Default::default()
        };
        for (k, v) in kvs.iter().filter_map(|kv| kv.split_once('=')) {
            let v = match v {
                "max" => u32::MAX,
                v => match v.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                },
            };
            match k {
                "hca_handle" => e.hca_handles = v,
                "hca_object" => e.hca_objects = v,
                _ => {}
            }
        }
        out.push(e);
    }
    out
}

/// The page size a hugetlb file name part (`2MB`) means, in kB, for
/// ordering; inverse of [`size_name`].
fn size_kb(name: &str) -> Option<u64> {
    let split = name.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = name.split_at(split);
    let shift = match unit {
        "KB" => 0,
        "MB" => 10,
        "GB" => 20,
        "TB" => 30,
        "PB" => 40,
        _ => return None,
    };
    n.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// hugetlb.<size>.current and .max, one entry per page size the cgroup has
/// files for (as containerd finds them: by listing the directory), smallest
/// first.
fn v2_hugetlb(d: &Path) -> Vec<m2::HugeTlbStat> {
    let mut sizes: Vec<(u64, String)> = std::fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let mut parts = name.split('.');
            let (Some("hugetlb"), Some(size), Some("current" | "max"), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return None;
            };
            Some((size_kb(size).unwrap_or(u64::MAX), size.to_string()))
        })
        .collect();
    sizes.sort();
    sizes.dedup();
    sizes
        .into_iter()
        .map(|(_, ps)| m2::HugeTlbStat {
            current: v2_number(d, &format!("hugetlb.{ps}.current")),
            max: v2_number(d, &format!("hugetlb.{ps}.max")),
            pagesize: ps,
        })
        .collect()
}

#[cfg(test)]
mod tests;
