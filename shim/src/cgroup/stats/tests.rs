use super::*;
use crate::cgroup::base::Stats;
use crate::cgroup::base::tests::tree;

#[test]
fn hugepage_size_names() {
    assert_eq!(size_name(2048), "2MB");
    assert_eq!(size_name(1_048_576), "1GB");
    assert_eq!(size_name(64), "64KB");
    assert_eq!(size_name(1536), "1536KB");
}

#[test]
fn hugepage_size_names_read_back() {
    for kb in [64, 2048, 1_048_576, 1536] {
        assert_eq!(size_kb(&size_name(kb)), Some(kb));
    }
    assert_eq!(size_kb("2mb"), None);
    assert_eq!(size_kb("MB"), None);
}

#[test]
fn v2_files_map_to_containerd_v2_fields() {
    let d = tree("statsv2");
    let w = |f: &str, v: &str| std::fs::write(d.join(f), v).unwrap();
    w(
        "cpu.stat",
        "usage_usec 7\nuser_usec 5\nsystem_usec 2\nnr_periods 10\nnr_throttled 3\nthrottled_usec 4\nnr_bursts 0\n",
    );
    // One of every memory.stat key the type has, each a distinct value
    // (field number n gets n * 100), and keys it has not.
    let keys = [
        "anon",
        "file",
        "kernel_stack",
        "slab",
        "sock",
        "shmem",
        "file_mapped",
        "file_dirty",
        "file_writeback",
        "anon_thp",
        "inactive_anon",
        "active_anon",
        "inactive_file",
        "active_file",
        "unevictable",
        "slab_reclaimable",
        "slab_unreclaimable",
        "pgfault",
        "pgmajfault",
        "workingset_refault",
        "workingset_activate",
        "workingset_nodereclaim",
        "pgrefill",
        "pgscan",
        "pgsteal",
        "pgactivate",
        "pgdeactivate",
        "pglazyfree",
        "pglazyfreed",
        "thp_fault_alloc",
        "thp_collapse_alloc",
    ];
    let mut stat: String = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} {}\n", (i + 1) * 100))
        .collect();
    stat.push_str("kernel 77\nworkingset_refault_anon 5\n");
    w("memory.stat", &stat);
    w("memory.current", "12288\n");
    w("memory.max", "max\n");
    w("memory.swap.current", "10\n");
    w("memory.swap.max", "1000\n");
    w(
        "memory.events",
        "low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 0\n",
    );
    w("pids.current", "2\n");
    w("pids.max", "max\n");
    w(
        "io.stat",
        "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=5 wbytes=0 rios=1 wios=0\n",
    );
    w("rdma.current", "mlx4_0 hca_handle=2 hca_object=20\n");
    w(
        "rdma.max",
        "mlx4_0 hca_handle=max hca_object=100\nbad line\n",
    );
    w("hugetlb.1GB.current", "0\n");
    w("hugetlb.1GB.max", "max\n");
    w("hugetlb.2MB.current", "4194304\n");
    w("hugetlb.2MB.max", "8388608\n");
    // Neither usage nor a limit: not an entry of its own.
    w("hugetlb.2MB.events", "max 2\n");
    w("hugetlb.2MB.rsvd.current", "0\n");

    let s = v2(&d);
    let cpu = s.cpu.unwrap();
    assert_eq!(
        (
            cpu.usage_usec,
            cpu.user_usec,
            cpu.system_usec,
            cpu.nr_periods,
            cpu.nr_throttled,
            cpu.throttled_usec
        ),
        (7, 5, 2, 10, 3, 4)
    );
    let mem = s.memory.unwrap();
    // The message's fields in number order, against the values written.
    let got = [
        mem.anon,
        mem.file,
        mem.kernel_stack,
        mem.slab,
        mem.sock,
        mem.shmem,
        mem.file_mapped,
        mem.file_dirty,
        mem.file_writeback,
        mem.anon_thp,
        mem.inactive_anon,
        mem.active_anon,
        mem.inactive_file,
        mem.active_file,
        mem.unevictable,
        mem.slab_reclaimable,
        mem.slab_unreclaimable,
        mem.pgfault,
        mem.pgmajfault,
        mem.workingset_refault,
        mem.workingset_activate,
        mem.workingset_nodereclaim,
        mem.pgrefill,
        mem.pgscan,
        mem.pgsteal,
        mem.pgactivate,
        mem.pgdeactivate,
        mem.pglazyfree,
        mem.pglazyfreed,
        mem.thp_fault_alloc,
        mem.thp_collapse_alloc,
    ];
    let want: Vec<u64> = (1..=keys.len() as u64).map(|n| n * 100).collect();
    assert_eq!(got.to_vec(), want);
    assert_eq!(
        (mem.usage, mem.usage_limit, mem.swap_usage, mem.swap_limit),
        (12288, u64::MAX, 10, 1000)
    );
    let ev = s.memory_events.unwrap();
    assert_eq!(
        (ev.low, ev.high, ev.max, ev.oom, ev.oom_kill),
        (1, 2, 3, 4, 5)
    );
    let p = s.pids.unwrap();
    assert_eq!((p.current, p.limit), (2, u64::MAX), "max is the largest");
    let io: Vec<_> =
        s.io.unwrap()
            .usage
            .iter()
            .map(|e| (e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios))
            .collect();
    assert_eq!(io, vec![(8, 0, 100, 200, 1, 2), (253, 1, 5, 0, 1, 0)]);
    let rdma = s.rdma.unwrap();
    let entries = |v: &[m2::RdmaEntry]| -> Vec<(String, u32, u32)> {
        v.iter()
            .map(|e| (e.device.clone(), e.hca_handles, e.hca_objects))
            .collect()
    };
    assert_eq!(entries(&rdma.current), vec![("mlx4_0".into(), 2, 20)]);
    assert_eq!(entries(&rdma.limit), vec![("mlx4_0".into(), u32::MAX, 100)]);
    let h: Vec<_> = s
        .hugetlb
        .iter()
        .map(|h| (h.pagesize.as_str(), h.current, h.max))
        .collect();
    assert_eq!(h, vec![("2MB", 4194304, 8388608), ("1GB", 0, u64::MAX)]);

    // Packed with containerd's type URL, and decodes back whole.
    let any = Stats::V2(v2(&d)).to_any();
    assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
    let back: m2::Metrics = berth_proto::typeurl::unpack(&any).unwrap();
    assert_eq!(back, v2(&d));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn v2_without_controller_files() {
    // A cgroup with no controllers enabled has only cpu.stat's core
    // keys: the rest read 0, memory events are left out, as
    // containerd's v2 manager leaves them.
    let d = tree("statsv2bare");
    std::fs::write(
        d.join("cpu.stat"),
        "usage_usec 9\nuser_usec 4\nsystem_usec 5\n",
    )
    .unwrap();
    let s = v2(&d);
    assert_eq!(s.cpu.unwrap().usage_usec, 9);
    assert_eq!(s.memory.unwrap(), m2::MemoryStat::default());
    assert!(s.memory_events.is_none());
    assert_eq!(s.pids.unwrap(), m2::PidsStat::default());
    assert!(s.io.unwrap().usage.is_empty());
    assert!(s.hugetlb.is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn v1_stats_keep_the_v1_type() {
    let any = Stats::V1(m::Metrics::default()).to_any();
    assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
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
