//! Statistics read from cgroup files, in containerd's cgroup v1 metrics
//! format (what clients of this shim decode on either host). On v2 the
//! files are read as containerd's cgroup2 manager reads them (memory.stat,
//! memory.events, cpu.stat, pids, io.stat, hugetlb) and each value lands in
//! the v1 field of the same meaning; v2's statistics are recursive, so the
//! `total_*` fields repeat their non-total twins.

use super::base::{read, read_keyed, read_u64};
use berth_proto::pb::io::containerd::cgroups::v1 as m;
use std::path::Path;

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

/// A v2 limit file: `max` is no limit, which containerd's v2 stats give as
/// the largest number; absent is 0.
fn v2_limit(d: &Path, f: &str) -> u64 {
    match read(d, f).as_deref() {
        Some("max") => u64::MAX,
        Some(v) => v.parse().unwrap_or(0),
        None => 0,
    }
}

/// A v2 cgroup's statistics, with the host's hugepage sizes.
pub fn v2(d: &Path) -> m::Metrics {
    v2_with(d, &hugepage_sizes())
}

/// A v2 cgroup's statistics for the given hugepage sizes.
pub fn v2_with(d: &Path, hugepage_sizes: &[String]) -> m::Metrics {
    let cpu = read_keyed(d, "cpu.stat");
    let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
    let mem = read_keyed(d, "memory.stat");
    let s = |k: &str| mem.get(k).copied().unwrap_or(0);
    let events = read_keyed(d, "memory.events");
    let ev = |k: &str| events.get(k).copied().unwrap_or(0);
    let memory_limit = v2_limit(d, "memory.max");
    let swap_limit = v2_limit(d, "memory.swap.max");
    m::Metrics {
        hugetlb: hugepage_sizes
            .iter()
            .filter(|ps| d.join(format!("hugetlb.{ps}.current")).exists())
            .map(|ps| m::HugetlbStat {
                usage: read_u64(d, &format!("hugetlb.{ps}.current")).unwrap_or(0),
                // v2 keeps no peak; the limit is what containerd's v2
                // stats give (`max`).
                max: v2_limit(d, &format!("hugetlb.{ps}.max")),
                failcnt: read_keyed(d, &format!("hugetlb.{ps}.events"))
                    .get("max")
                    .copied()
                    .unwrap_or(0),
                pagesize: ps.clone(),
            })
            .collect(),
        pids: Some(m::PidsStat {
            current: read_u64(d, "pids.current").unwrap_or(0),
            // No limit reads 0 here, as containerd's v1 stats have it.
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
            hierarchical_memory_limit: memory_limit,
            hierarchical_swap_limit: swap_limit,
            total_cache: s("file"),
            total_rss: s("anon"),
            total_rss_huge: s("anon_thp"),
            total_mapped_file: s("file_mapped"),
            total_dirty: s("file_dirty"),
            total_writeback: s("file_writeback"),
            total_pg_fault: s("pgfault"),
            total_pg_maj_fault: s("pgmajfault"),
            total_inactive_anon: s("inactive_anon"),
            total_active_anon: s("active_anon"),
            total_inactive_file: s("inactive_file"),
            total_active_file: s("active_file"),
            total_unevictable: s("unevictable"),
            usage: Some(m::MemoryEntry {
                limit: memory_limit,
                usage: read_u64(d, "memory.current").unwrap_or(0),
                max: read_u64(d, "memory.peak").unwrap_or(0),
                // Times the limit was hit (v1's failcnt).
                failcnt: ev("max"),
            }),
            swap: Some(m::MemoryEntry {
                limit: swap_limit,
                usage: read_u64(d, "memory.swap.current").unwrap_or(0),
                max: read_u64(d, "memory.swap.peak").unwrap_or(0),
                failcnt: read_keyed(d, "memory.swap.events")
                    .get("max")
                    .copied()
                    .unwrap_or(0),
            }),
            // Kernel memory is part of memory.current on v2; the v1
            // entry's usage is memory.stat's "kernel" (5.18+).
            kernel: mem.get("kernel").map(|k| m::MemoryEntry {
                usage: *k,
                ..Default::default()
            }),
            kernel_tcp: mem.get("sock").map(|k| m::MemoryEntry {
                usage: *k,
                ..Default::default()
            }),
            ..Default::default()
        }),
        blkio: Some(v2_io(d)),
        memory_oom_control: Some(m::MemoryOomControl {
            oom_kill: ev("oom_kill"),
            // v2 cannot disable the OOM killer; a cgroup under OOM shows
            // only as a count.
            ..Default::default()
        }),
    }
}

/// io.stat (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 …`) as v1's recursive
/// service bytes and serviced counts (`Read`/`Write`), as runc maps it.
fn v2_io(d: &Path) -> m::BlkIoStat {
    let mut out = m::BlkIoStat::default();
    let text = read(d, "io.stat").unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some((maj, min)) = parts.next().and_then(|dev| dev.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (maj.parse(), min.parse()) else {
            continue;
        };
        for kv in parts {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut out.io_service_bytes_recursive, "Read"),
                "wbytes" => (&mut out.io_service_bytes_recursive, "Write"),
                "rios" => (&mut out.io_serviced_recursive, "Read"),
                "wios" => (&mut out.io_serviced_recursive, "Write"),
                _ => continue,
            };
            list.push(m::BlkIoEntry {
                op: op.into(),
                device: String::new(),
                major,
                minor,
                value,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::base::tests::tree;

    #[test]
    fn hugepage_size_names() {
        assert_eq!(size_name(2048), "2MB");
        assert_eq!(size_name(1_048_576), "1GB");
        assert_eq!(size_name(64), "64KB");
        assert_eq!(size_name(1536), "1536KB");
    }

    #[test]
    fn v2_files_map_to_containerd_fields() {
        let d = tree("statsv2");
        let w = |f: &str, v: &str| std::fs::write(d.join(f), v).unwrap();
        w(
            "cpu.stat",
            "usage_usec 7\nuser_usec 5\nsystem_usec 2\nnr_periods 10\nnr_throttled 3\nthrottled_usec 4\n",
        );
        w(
            "memory.stat",
            "anon 4096\nfile 8192\nfile_mapped 1\nfile_dirty 2\nanon_thp 3\npgfault 9\npgmajfault 1\nkernel 512\nsock 64\n",
        );
        w("memory.current", "12288\n");
        w("memory.peak", "20000\n");
        w("memory.max", "max\n");
        w("memory.swap.max", "1000\n");
        w("memory.swap.current", "10\n");
        w("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        w("pids.current", "2\n");
        w("pids.max", "max\n");
        w(
            "io.stat",
            "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=5 wbytes=0 rios=1 wios=0\n",
        );
        w("hugetlb.2MB.current", "4194304\n");
        w("hugetlb.2MB.max", "8388608\n");
        w("hugetlb.2MB.events", "max 2\n");
        let s = v2_with(&d, &["2MB".into(), "1GB".into()]);
        let cpu = s.cpu.unwrap();
        let u = cpu.usage.unwrap();
        assert_eq!((u.total, u.user, u.kernel), (7000, 5000, 2000));
        let t = cpu.throttling.unwrap();
        assert_eq!(
            (t.periods, t.throttled_periods, t.throttled_time),
            (10, 3, 4000)
        );
        let mem = s.memory.unwrap();
        assert_eq!(
            (mem.rss, mem.cache, mem.total_rss, mem.total_cache),
            (4096, 8192, 4096, 8192)
        );
        assert_eq!((mem.mapped_file, mem.dirty, mem.rss_huge), (1, 2, 3));
        assert_eq!((mem.pg_fault, mem.pg_maj_fault), (9, 1));
        let u = mem.usage.unwrap();
        assert_eq!(
            (u.usage, u.limit, u.max, u.failcnt),
            (12288, u64::MAX, 20000, 3)
        );
        let sw = mem.swap.unwrap();
        assert_eq!((sw.usage, sw.limit), (10, 1000));
        assert_eq!(mem.kernel.unwrap().usage, 512);
        assert_eq!(mem.kernel_tcp.unwrap().usage, 64);
        assert_eq!(s.memory_oom_control.unwrap().oom_kill, 1);
        let p = s.pids.unwrap();
        assert_eq!((p.current, p.limit), (2, 0));
        let io = s.blkio.unwrap();
        let bytes: Vec<_> = io
            .io_service_bytes_recursive
            .iter()
            .map(|e| (e.major, e.minor, e.op.as_str(), e.value))
            .collect();
        assert_eq!(
            bytes,
            vec![
                (8, 0, "Read", 100),
                (8, 0, "Write", 200),
                (253, 1, "Read", 5),
                (253, 1, "Write", 0)
            ]
        );
        assert_eq!(io.io_serviced_recursive.len(), 4);
        assert_eq!(s.hugetlb.len(), 1, "only sizes the cgroup has");
        let h = &s.hugetlb[0];
        assert_eq!(
            (h.pagesize.as_str(), h.usage, h.max, h.failcnt),
            ("2MB", 4194304, 8388608, 2)
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn v1_blkio_and_hugetlb() {
        let d = tree("statsv1io");
        std::fs::write(
            d.join("blkio.throttle.io_service_bytes"),
            "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n",
        )
        .unwrap();
        std::fs::write(
            d.join("blkio.throttle.io_serviced"),
            "8:0 Read 1\nTotal 1\n",
        )
        .unwrap();
        std::fs::write(d.join("hugetlb.2MB.usage_in_bytes"), "2097152\n").unwrap();
        std::fs::write(d.join("hugetlb.2MB.failcnt"), "1\n").unwrap();
        let b = v1_blkio(&d);
        assert_eq!(b.io_service_bytes_recursive.len(), 2);
        assert_eq!(b.io_service_bytes_recursive[0].value, 4096);
        assert_eq!(b.io_serviced_recursive[0].op, "Read");
        let h = v1_hugetlb(&d, &["2MB".into()]);
        assert_eq!((h[0].usage, h[0].failcnt), (2097152, 1));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
