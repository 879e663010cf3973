//! The v1 hierarchy against fake cgroupfs trees in a temporary directory.
use super::super::base::tests::tree;
use super::*;
use crate::cgroup::devices::DEFAULTS;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
    LinuxPidsBuilder, LinuxResourcesBuilder,
};

const CONTROLLERS: [&str; 7] = [
    "cpu,cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "memory",
    "pids",
    "systemd",
];

fn fake_root(tag: &str) -> (PathBuf, Vec<String>) {
    let root = tree(tag);
    for c in CONTROLLERS {
        std::fs::create_dir_all(root.join(c)).unwrap();
    }
    std::fs::write(root.join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
    std::fs::write(root.join("cpuset/cpuset.mems"), "0\n").unwrap();
    (root, CONTROLLERS.iter().map(|s| s.to_string()).collect())
}

fn file(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap()
}

#[test]
fn create_makes_every_hierarchy_and_inherits_cpusets() {
    let (root, cs) = fake_root("v1create");
    let cg = V1::create(&root, "/default/c1", cs).unwrap();
    for c in CONTROLLERS {
        assert!(root.join(c).join("default/c1").is_dir(), "{c}");
    }
    assert_eq!(file(&root, "cpuset/default/cpuset.cpus"), "0-3");
    assert_eq!(file(&root, "cpuset/default/c1/cpuset.mems"), "0");
    assert_eq!(cg.path(), "default/c1");
    // cgroupfs directories delete with their files; a tempdir does not.
    for f in ["cpuset.cpus", "cpuset.mems"] {
        std::fs::remove_file(root.join("cpuset/default/c1").join(f)).unwrap();
    }
    cg.delete().unwrap();
    assert!(!root.join("memory/default/c1").exists());
    assert!(root.join("memory/default").exists(), "only the leaf goes");
    cg.delete().unwrap(); // already gone is fine
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn limits_land_in_their_files() {
    let (root, cs) = fake_root("v1limits");
    let cg = V1::create(&root, "c", cs).unwrap();
    let d = root.join("memory/c");
    std::fs::write(d.join("memory.memsw.limit_in_bytes"), "9223372036854771712").unwrap();
    let res = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .swap(128i64 << 20)
                .reservation(32i64 << 20)
                .build()
                .unwrap(),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50000i64)
                .period(100000u64)
                .cpus("1")
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(0i64).build().unwrap())
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1)
                .minor(3)
                .access("rwm")
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    cg.apply(&res).unwrap();
    assert_eq!(file(&root, "memory/c/memory.limit_in_bytes"), "67108864");
    assert_eq!(
        file(&root, "memory/c/memory.memsw.limit_in_bytes"),
        "134217728"
    );
    assert_eq!(
        file(&root, "memory/c/memory.soft_limit_in_bytes"),
        "33554432"
    );
    assert_eq!(file(&root, "cpu,cpuacct/c/cpu.shares"), "512");
    assert_eq!(file(&root, "cpu,cpuacct/c/cpu.cfs_quota_us"), "50000");
    assert_eq!(file(&root, "cpu,cpuacct/c/cpu.cfs_period_us"), "100000");
    assert_eq!(file(&root, "cpuset/c/cpuset.cpus"), "1");
    assert_eq!(file(&root, "pids/c/pids.max"), "max");
    // No devices.list read: taken as allow-all, so the deny-all comes
    // first, then the allow-list in (major, minor) order.
    assert_eq!(file(&root, "devices/c/devices.deny"), "a *:* rwm");
    assert_eq!(file(&root, "devices/c/devices.allow"), "c 136:* rwm");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn device_rules_move_from_devices_list_to_the_target() {
    let (root, cs) = fake_root("v1dev");
    let cg = V1::create(&root, "c", cs).unwrap();
    let fuse = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(LinuxDeviceType::C)
        .major(10)
        .minor(229)
        .access("rwm")
        .build()
        .unwrap();
    let res = |devs| {
        LinuxResourcesBuilder::default()
            .devices(devs)
            .build()
            .unwrap()
    };
    // The kernel already shows the default allow-list: only fuse is new,
    // and no deny-all comes first (no moment without /dev/null).
    let mut list: String = DEFAULTS.iter().map(|r| r.cgroup_string() + "\n").collect();
    std::fs::write(root.join("devices/c/devices.list"), &list).unwrap();
    cg.apply(&res(vec![fuse.clone()])).unwrap();
    assert_eq!(file(&root, "devices/c/devices.allow"), "c 10:229 rwm");
    assert!(!root.join("devices/c/devices.deny").exists());
    // From fuse to none: fuse is taken away, nothing else.
    list.push_str("c 10:229 rwm\n");
    std::fs::write(root.join("devices/c/devices.list"), &list).unwrap();
    std::fs::remove_file(root.join("devices/c/devices.allow")).unwrap();
    cg.apply(&res(vec![])).unwrap();
    assert_eq!(file(&root, "devices/c/devices.deny"), "c 10:229 rwm");
    assert!(!root.join("devices/c/devices.allow").exists());
    // A refused rule is named and nothing is written.
    std::fs::remove_file(root.join("devices/c/devices.deny")).unwrap();
    let hole = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .typ(LinuxDeviceType::C)
        .major(136)
        .minor(3)
        .access("rw")
        .build()
        .unwrap();
    let all = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(LinuxDeviceType::C)
        .major(136)
        .access("rwm")
        .build()
        .unwrap();
    let e = cg.apply(&res(vec![all, hole])).unwrap_err();
    assert!(e.message().contains("punch a hole"), "{e}");
    assert!(!root.join("devices/c/devices.deny").exists());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn every_v1_file_and_refusal() {
    let mut cs: Vec<String> = CONTROLLERS.iter().map(|s| s.to_string()).collect();
    cs.extend(["blkio", "hugetlb", "net_cls,net_prio", "rdma"].map(String::from));
    let root = tree("v1every");
    for c in &cs {
        std::fs::create_dir_all(root.join(c)).unwrap();
    }
    std::fs::write(root.join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
    std::fs::write(root.join("cpuset/cpuset.mems"), "0\n").unwrap();
    let cg = V1::create(&root, "c", cs).unwrap();
    std::fs::write(root.join("blkio/c/blkio.weight"), "500\n").unwrap();
    std::fs::write(
        root.join("hugetlb/c/hugetlb.2MB.rsvd.limit_in_bytes"),
        "0\n",
    )
    .unwrap();
    let thr = |rate: u64| {
        vec![
            oci_spec::runtime::LinuxThrottleDeviceBuilder::default()
                .major(8)
                .minor(0)
                .rate(rate)
                .build()
                .unwrap(),
        ]
    };
    let res = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .swappiness(10u64)
                .build()
                .unwrap(),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .realtime_period(1_000_000u64)
                .realtime_runtime(950_000i64)
                .burst(500u64)
                .idle(1i64)
                .build()
                .unwrap(),
        )
        .block_io(
            oci_spec::runtime::LinuxBlockIoBuilder::default()
                .weight(300u16)
                .leaf_weight(200u16)
                .weight_device(vec![
                    oci_spec::runtime::LinuxWeightDeviceBuilder::default()
                        .major(8)
                        .minor(0)
                        .weight(400u16)
                        .leaf_weight(100u16)
                        .build()
                        .unwrap(),
                ])
                .throttle_read_bps_device(thr(1))
                .throttle_write_bps_device(thr(2))
                .throttle_read_iops_device(thr(3))
                .throttle_write_iops_device(thr(4))
                .build()
                .unwrap(),
        )
        .hugepage_limits(vec![
            oci_spec::runtime::LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(8i64 << 20)
                .build()
                .unwrap(),
        ])
        .network(
            oci_spec::runtime::LinuxNetworkBuilder::default()
                .class_id(0x100001u32)
                .priorities(vec![
                    oci_spec::runtime::LinuxInterfacePriorityBuilder::default()
                        .name("eth0")
                        .priority(5u32)
                        .build()
                        .unwrap(),
                ])
                .build()
                .unwrap(),
        )
        .rdma(
            [(
                "mlx4_0".to_string(),
                oci_spec::runtime::LinuxRdmaBuilder::default()
                    .hca_objects(10u32)
                    .build()
                    .unwrap(),
            )]
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .unwrap();
    cg.apply(&res).unwrap();
    for (f, want) in [
        ("memory/c/memory.swappiness", "10"),
        ("cpu,cpuacct/c/cpu.rt_period_us", "1000000"),
        ("cpu,cpuacct/c/cpu.rt_runtime_us", "950000"),
        ("cpu,cpuacct/c/cpu.cfs_burst_us", "500"),
        ("cpu,cpuacct/c/cpu.idle", "1"),
        ("blkio/c/blkio.weight", "300"),
        ("blkio/c/blkio.leaf_weight", "200"),
        ("blkio/c/blkio.weight_device", "8:0 400"),
        ("blkio/c/blkio.leaf_weight_device", "8:0 100"),
        ("blkio/c/blkio.throttle.read_bps_device", "8:0 1"),
        ("blkio/c/blkio.throttle.write_bps_device", "8:0 2"),
        ("blkio/c/blkio.throttle.read_iops_device", "8:0 3"),
        ("blkio/c/blkio.throttle.write_iops_device", "8:0 4"),
        ("hugetlb/c/hugetlb.2MB.limit_in_bytes", "8388608"),
        ("hugetlb/c/hugetlb.2MB.rsvd.limit_in_bytes", "8388608"),
        ("net_cls,net_prio/c/net_cls.classid", "1048577"),
        ("net_cls,net_prio/c/net_prio.ifpriomap", "eth0 5"),
        ("rdma/c/rdma.max", "mlx4_0 hca_object=10"),
    ] {
        assert_eq!(file(&root, f), want, "{f}");
    }
    // Refused on v1 too: kernel memory, and swappiness out of range.
    for (m, name) in [
        (
            LinuxMemoryBuilder::default().kernel(1i64 << 20),
            "linux.resources.memory.kernel",
        ),
        (
            LinuxMemoryBuilder::default().kernel_tcp(1i64 << 20),
            "linux.resources.memory.kernelTCP",
        ),
        (
            LinuxMemoryBuilder::default().swappiness(101u64),
            "linux.resources.memory.swappiness 101",
        ),
    ] {
        let r = LinuxResourcesBuilder::default()
            .memory(m.build().unwrap())
            .build()
            .unwrap();
        let e = cg.apply(&r).unwrap_err();
        assert!(e.message().contains(name), "{name}: {e}");
    }
    // -1 swappiness is unset, kernel memory -1/0 no limit: nothing to do.
    std::fs::remove_file(root.join("memory/c/memory.swappiness")).unwrap();
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .swappiness(u64::MAX)
                .kernel(-1i64)
                .kernel_tcp(0i64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cg.apply(&r).unwrap();
    assert!(!root.join("memory/c/memory.swappiness").exists());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn hybrid_host_joins_the_unified_hierarchy_too() {
    let (root, cs) = fake_root("v1hybrid");
    std::fs::create_dir_all(root.join("unified")).unwrap();
    std::fs::write(root.join("unified/cgroup.controllers"), "").unwrap();
    let cg = V1::create(&root, "/ns/c", cs).unwrap();
    assert!(root.join("unified/ns/c").is_dir());
    cg.add(42).unwrap();
    assert_eq!(file(&root, "unified/ns/c/cgroup.procs"), "42");
    assert_eq!(file(&root, "memory/ns/c/cgroup.procs"), "42");
    for c in CONTROLLERS {
        std::fs::write(root.join(c).join("ns/c/tasks"), "").unwrap();
    }
    // The process joins the v1 hierarchies itself; the shim moves it into
    // the unified group by pid meanwhile.
    let files = cg.self_join_files().unwrap().unwrap();
    assert_eq!(files.len(), CONTROLLERS.len());
    drop(files);
    assert!(cg.shim_moves());
    std::fs::write(root.join("unified/ns/c/cgroup.procs"), "").unwrap();
    cg.shim_move(43).unwrap();
    assert_eq!(file(&root, "unified/ns/c/cgroup.procs"), "43");
    // cgroupfs directories delete with their files; a tempdir does not.
    for c in CONTROLLERS.iter().chain(&["unified"]) {
        for e in std::fs::read_dir(root.join(c).join("ns/c")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
    cg.delete().unwrap();
    assert!(!root.join("unified/ns/c").exists());
    assert!(!root.join("memory/ns/c").exists());
    // Without a cgroup2 mount there, nothing is made in it.
    let (root2, cs) = fake_root("v1plain");
    std::fs::create_dir_all(root2.join("unified")).unwrap();
    let plain = V1::create(&root2, "c", cs).unwrap();
    assert!(!root2.join("unified/c").exists());
    assert!(!plain.shim_moves());
    plain.shim_move(44).unwrap();
    assert!(!root2.join("unified/c").exists());
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&root2).unwrap();
}

#[test]
fn limit_below_usage_or_missing_controller_fails() {
    let (root, mut cs) = fake_root("v1refuse");
    cs.retain(|c| c != "pids");
    let cg = V1::create(&root, "c", cs).unwrap();
    std::fs::write(root.join("memory/c/memory.usage_in_bytes"), "1000000").unwrap();
    let mem = |l: i64| {
        LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(l).build().unwrap())
            .build()
            .unwrap()
    };
    let e = cg.apply(&mem(4096)).unwrap_err();
    assert!(
        e.message()
            .contains("below the container's current usage of 1000000")
    );
    assert!(!root.join("memory/c/memory.limit_in_bytes").exists());
    let pids = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(10i64).build().unwrap())
        .build()
        .unwrap();
    let e = cg.apply(&pids).unwrap_err();
    assert!(
        e.message().contains("needs the pids cgroup controller"),
        "{e}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn oom_killer_zero_weight_and_unified_settings() {
    let (root, cs) = fake_root("v1oom");
    let cg = V1::create(&root, "c", cs).unwrap();
    let res = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .disable_oom_killer(true)
                .build()
                .unwrap(),
        )
        .block_io(
            oci_spec::runtime::LinuxBlockIoBuilder::default()
                .weight(0u16)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    // No blkio hierarchy here: a zero weight is no weight, so no error.
    cg.apply(&res).unwrap();
    assert_eq!(file(&root, "memory/c/memory.oom_control"), "1");
    let res = LinuxResourcesBuilder::default()
        .unified(
            [("memory.high".to_string(), "1".to_string())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .unwrap();
    let e = cg.apply(&res).unwrap_err();
    assert!(
        e.message()
            .contains("linux.resources.unified needs a cgroup v2"),
        "{e}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn procs_stats_freeze_and_join_files() {
    let (root, cs) = fake_root("v1stats");
    let cg = V1::create(&root, "c", cs).unwrap();
    std::fs::write(root.join("memory/c/cgroup.procs"), "12\n7\n").unwrap();
    std::fs::write(root.join("pids/c/cgroup.procs"), "7\n").unwrap();
    assert_eq!(cg.procs().unwrap(), vec![7, 12]);
    std::fs::write(root.join("pids/c/pids.current"), "2\n").unwrap();
    std::fs::write(root.join("pids/c/pids.max"), "max\n").unwrap();
    std::fs::write(root.join("cpu,cpuacct/c/cpuacct.usage"), "5000\n").unwrap();
    std::fs::write(
        root.join("cpu,cpuacct/c/cpuacct.usage_percpu"),
        "3000 2000 \n",
    )
    .unwrap();
    std::fs::write(
        root.join("cpu,cpuacct/c/cpu.stat"),
        "nr_periods 10\nnr_throttled 3\nthrottled_time 900\n",
    )
    .unwrap();
    std::fs::write(root.join("memory/c/memory.stat"), "cache 4096\nrss 8192\n").unwrap();
    std::fs::write(root.join("memory/c/memory.usage_in_bytes"), "12288\n").unwrap();
    std::fs::write(
        root.join("memory/c/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    )
    .unwrap();
    let crate::cgroup::Stats::V1(s) = cg.stats() else {
        panic!("a v1 cgroup's stats are containerd's v1 type")
    };
    let pids = s.pids.unwrap();
    assert_eq!((pids.current, pids.limit), (2, 0));
    let cpu = s.cpu.unwrap();
    assert_eq!(cpu.usage.unwrap().per_cpu, vec![3000, 2000]);
    assert_eq!(cpu.throttling.unwrap().throttled_periods, 3);
    let mem = s.memory.unwrap();
    assert_eq!((mem.cache, mem.rss), (4096, 8192));
    assert_eq!(mem.usage.unwrap().usage, 12288);
    assert_eq!(s.memory_oom_control.unwrap().oom_kill, 2);
    cg.freeze().unwrap();
    assert_eq!(file(&root, "freezer/c/freezer.state"), "FROZEN");
    cg.thaw().unwrap();
    assert_eq!(file(&root, "freezer/c/freezer.state"), "THAWED");
    for c in CONTROLLERS {
        std::fs::write(root.join(c).join("c/tasks"), "").unwrap();
    }
    let files = cg.self_join_files().unwrap().unwrap();
    assert_eq!(files.len(), CONTROLLERS.len());
    super::super::base::join_self(&files).unwrap();
    assert_eq!(file(&root, "systemd/c/tasks"), "0");
    std::fs::remove_dir_all(&root).unwrap();
}
