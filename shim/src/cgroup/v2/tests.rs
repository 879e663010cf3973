//! The v2 hierarchy against fake cgroupfs trees in a temporary directory,
//! then against the host's real cgroup2 mount (root only).
use super::super::base::tests::tree;
use super::*;
use crate::cgroup::devices::Rule;
use berth_proto::errdefs::Kind;
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxHugepageLimitBuilder, LinuxInterfacePriorityBuilder, LinuxMemoryBuilder,
    LinuxNetworkBuilder, LinuxPidsBuilder, LinuxRdmaBuilder, LinuxResourcesBuilder,
    LinuxThrottleDeviceBuilder, LinuxWeightDeviceBuilder,
};

fn file(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap()
}

/// Records device rules in the fake tree instead of loading a program.
fn record_devices(dir: &Path, e: &Emulator) -> Result<()> {
    let text: Vec<String> = e
        .rules()
        .iter()
        .map(|r: &Rule| {
            format!(
                "{} {}",
                if r.allow { "allow" } else { "deny" },
                r.cgroup_string()
            )
        })
        .collect();
    write(dir, "devices.fake", &text.join("\n"))
}

fn fake(root: &Path, path: &str) -> V2 {
    V2::create(root, path)
        .unwrap()
        .with_device_setter(record_devices)
}

#[test]
fn create_enables_offered_controllers_down_the_path() {
    let root = tree("v2create");
    std::fs::write(
        root.join("cgroup.controllers"),
        "cpuset cpu io memory pids rdma misc\n",
    )
    .unwrap();
    std::fs::write(root.join("cgroup.subtree_control"), "memory\n").unwrap();
    let cg = V2::create(&root, "/default/c1").unwrap();
    assert_eq!(
        file(&root, "cgroup.subtree_control"),
        "+cpu +cpuset +io +pids +rdma"
    );
    assert_eq!(
        file(&root, "default/cgroup.subtree_control"),
        "+cpu +cpuset +io +memory +pids +rdma"
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
    let cg = fake(&root, "c");
    std::fs::write(root.join("c/hugetlb.2MB.rsvd.max"), "max\n").unwrap();
    let res = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .swap(96i64 << 20)
                .reservation(-1i64)
                .swappiness(u64::MAX)
                .disable_oom_killer(false)
                .kernel(0i64)
                .build()
                .unwrap(),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .shares(1024u64)
                .quota(50000i64)
                .period(200000u64)
                .burst(1000u64)
                .idle(0i64)
                .mems("0")
                .cpus("0-1")
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
        .hugepage_limits(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(4i64 << 20)
                .build()
                .unwrap(),
        ])
        .rdma(
            [(
                "mlx5_1".to_string(),
                LinuxRdmaBuilder::default()
                    .hca_handles(3u32)
                    .hca_objects(1000u32)
                    .build()
                    .unwrap(),
            )]
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
        )
        .unified(
            [("memory.high".to_string(), "50000000".to_string())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .unwrap();
    cg.apply(&res).unwrap();
    assert_eq!(file(&root, "c/memory.max"), "67108864");
    assert_eq!(file(&root, "c/memory.swap.max"), (32u64 << 20).to_string());
    assert_eq!(file(&root, "c/memory.low"), "max");
    assert_eq!(file(&root, "c/cpu.weight"), "39");
    assert_eq!(file(&root, "c/cpu.max"), "50000 200000");
    assert_eq!(file(&root, "c/cpu.max.burst"), "1000");
    assert_eq!(file(&root, "c/cpu.idle"), "0");
    assert_eq!(file(&root, "c/cpuset.mems"), "0");
    assert_eq!(file(&root, "c/cpuset.cpus"), "0-1");
    assert_eq!(file(&root, "c/pids.max"), "100");
    assert_eq!(file(&root, "c/io.weight"), io_weight(500).to_string());
    assert_eq!(file(&root, "c/hugetlb.2MB.max"), (4u64 << 20).to_string());
    assert_eq!(
        file(&root, "c/hugetlb.2MB.rsvd.max"),
        (4u64 << 20).to_string()
    );
    assert_eq!(
        file(&root, "c/rdma.max"),
        "mlx5_1 hca_handle=3 hca_object=1000"
    );
    assert_eq!(file(&root, "c/memory.high"), "50000000");
    assert!(
        !root.join("c/devices.fake").exists(),
        "no device rules asked for, none changed (an update)"
    );
    assert!(!root.join("c/memory.swappiness").exists());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn block_io_weights_and_throttles() {
    let root = tree("v2io");
    let cg = fake(&root, "c");
    let thr = |maj: i64, min: i64, rate: u64| {
        vec![
            LinuxThrottleDeviceBuilder::default()
                .major(maj)
                .minor(min)
                .rate(rate)
                .build()
                .unwrap(),
        ]
    };
    // One list at a time: a fake file keeps only the last write.
    for (i, want) in [
        "8:0 rbps=1048576",
        "8:16 wbps=2097152",
        "8:32 riops=100",
        "8:48 wiops=200",
    ]
    .iter()
    .enumerate()
    {
        let mut b = LinuxBlockIoBuilder::default();
        let minor = 16 * i64::try_from(i).unwrap();
        b = match i {
            0 => b.throttle_read_bps_device(thr(8, minor, 1 << 20)),
            1 => b.throttle_write_bps_device(thr(8, minor, 2 << 20)),
            2 => b.throttle_read_iops_device(thr(8, minor, 100)),
            _ => b.throttle_write_iops_device(thr(8, minor, 200)),
        };
        let res = LinuxResourcesBuilder::default()
            .block_io(b.build().unwrap())
            .build()
            .unwrap();
        cg.apply(&res).unwrap();
        assert_eq!(file(&root, "c/io.max"), *want);
    }
    let wd = |w: u16| {
        LinuxBlockIoBuilder::default()
            .weight_device(vec![
                LinuxWeightDeviceBuilder::default()
                    .major(8)
                    .minor(0)
                    .weight(w)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap()
    };
    let apply_io = |b| {
        cg.apply(
            &LinuxResourcesBuilder::default()
                .block_io(b)
                .build()
                .unwrap(),
        )
    };
    // Without BFQ: io.weight's per-device line, converted.
    apply_io(wd(1000)).unwrap();
    assert_eq!(file(&root, "c/io.weight"), "8:0 10000");
    // BFQ taking per-device weights ("default N"): its file, as is.
    std::fs::write(root.join("c/io.bfq.weight"), "default 100\n").unwrap();
    apply_io(wd(300)).unwrap();
    assert_eq!(file(&root, "c/io.bfq.weight"), "8:0 300");
    // BFQ's own weight file takes the blkio range unconverted.
    apply_io(
        LinuxBlockIoBuilder::default()
            .weight(700u16)
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(file(&root, "c/io.bfq.weight"), "700");
    // No leaf weights on v2.
    let e = apply_io(
        LinuxBlockIoBuilder::default()
            .leaf_weight(10u16)
            .build()
            .unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), Kind::Unimplemented);
    assert!(
        e.message().contains("linux.resources.blockIO.leafWeight"),
        "{e}"
    );
    let leaf_dev = LinuxBlockIoBuilder::default()
        .weight_device(vec![
            LinuxWeightDeviceBuilder::default()
                .major(8)
                .minor(0)
                .leaf_weight(10u16)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let e = apply_io(leaf_dev).unwrap_err();
    assert!(e.message().contains("weightDevice[0].leafWeight"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn device_rules_fold_with_runcs_defaults() {
    let root = tree("v2dev");
    let cg = fake(&root, "c");
    let res = LinuxResourcesBuilder::default()
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(10)
                .minor(229)
                .access("rw")
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    cg.apply(&res).unwrap();
    let rules = file(&root, "c/devices.fake");
    assert!(
        rules.starts_with("allow b *:* m\nallow c *:* m\nallow c 1:3 rwm"),
        "{rules}"
    );
    assert!(rules.contains("allow c 10:229 rw\n"), "{rules}");
    assert!(!rules.contains("deny"), "an allow-list: {rules}");
    // A bad rule fails the apply by its index.
    let bad = LinuxResourcesBuilder::default()
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::U)
                .access("r")
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let e = cg.apply(&bad).unwrap_err();
    assert!(
        e.message().contains("linux.resources.devices[0].type"),
        "{e}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn what_v2_cannot_enforce_is_refused_by_name() {
    let root = tree("v2refuseall");
    let cg = fake(&root, "c");
    let mem = |m: LinuxMemoryBuilder| {
        LinuxResourcesBuilder::default()
            .memory(m.build().unwrap())
            .build()
            .unwrap()
    };
    let cpu = |c: LinuxCpuBuilder| {
        LinuxResourcesBuilder::default()
            .cpu(c.build().unwrap())
            .build()
            .unwrap()
    };
    let net = |n: LinuxNetworkBuilder| {
        LinuxResourcesBuilder::default()
            .network(n.build().unwrap())
            .build()
            .unwrap()
    };
    let cases = [
        (
            mem(LinuxMemoryBuilder::default().swappiness(60u64)),
            "memory.swappiness (60)",
        ),
        (
            mem(LinuxMemoryBuilder::default().disable_oom_killer(true)),
            "memory.disableOOMKiller",
        ),
        (
            mem(LinuxMemoryBuilder::default().kernel(1i64 << 20)),
            "memory.kernel (1048576)",
        ),
        (
            mem(LinuxMemoryBuilder::default().kernel_tcp(1i64 << 20)),
            "memory.kernelTCP",
        ),
        (
            mem(LinuxMemoryBuilder::default().use_hierarchy(false)),
            "memory.useHierarchy",
        ),
        (
            cpu(LinuxCpuBuilder::default().realtime_runtime(950i64)),
            "cpu.realtimeRuntime",
        ),
        (
            cpu(LinuxCpuBuilder::default().realtime_period(1000u64)),
            "cpu.realtimeRuntime/realtimePeriod",
        ),
        (
            net(LinuxNetworkBuilder::default().class_id(0x100001u32)),
            "linux.resources.network",
        ),
        (
            net(LinuxNetworkBuilder::default().priorities(vec![
                LinuxInterfacePriorityBuilder::default()
                    .name("eth0")
                    .priority(5u32)
                    .build()
                    .unwrap(),
            ])),
            "linux.resources.network",
        ),
    ];
    for (res, name) in cases {
        let e = cg.apply(&res).unwrap_err();
        assert_eq!(e.kind(), Kind::Unimplemented, "{e}");
        assert!(e.message().contains(name), "{name}: {e}");
    }
    // Nothing was written for them.
    let files: Vec<_> = std::fs::read_dir(root.join("c")).unwrap().collect();
    assert!(files.is_empty(), "{files:?}");
    // Invalid values, by name too.
    let bad_page = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("../x")
                .limit(1i64)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let e = cg.apply(&bad_page).unwrap_err();
    assert!(e.message().contains("hugepageLimits[0].pageSize"), "{e}");
    let swap_alone = mem(LinuxMemoryBuilder::default().swap(1i64 << 20));
    let e = cg.apply(&swap_alone).unwrap_err();
    assert!(e.message().contains("linux.resources.memory.swap"), "{e}");
    let rdma_empty = LinuxResourcesBuilder::default()
        .rdma(
            [(
                "mlx5_1".to_string(),
                LinuxRdmaBuilder::default().build().unwrap(),
            )]
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .unwrap();
    let e = cg.apply(&rdma_empty).unwrap_err();
    assert!(e.message().contains("linux.resources.rdma.mlx5_1"), "{e}");
    let unified = LinuxResourcesBuilder::default()
        .unified(
            [("cgroup.procs".to_string(), "1".to_string())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .unwrap();
    assert!(
        cg.apply(&unified)
            .unwrap_err()
            .message()
            .contains("linux.resources.unified")
    );
    // A controller the host did not enable: the write fails, naming the field.
    std::fs::create_dir(root.join("c/hugetlb.1GB.max")).unwrap();
    let huge = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("1GB")
                .limit(-1i64)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let e = cg.apply(&huge).unwrap_err();
    assert!(
        e.message()
            .starts_with("linux.resources.hugepageLimits[0]: "),
        "{e}"
    );
    assert!(e.message().contains("hugetlb.1GB.max"), "{e}");
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
    assert_eq!(swap_max(100, -1).unwrap().as_deref(), Some("max"));
    assert_eq!(
        swap_max(-1, 0).unwrap().as_deref(),
        Some("max"),
        "unlimited memory, unset swap"
    );
    assert_eq!(swap_max(100, 100).unwrap().as_deref(), Some("0"), "no swap");
    assert!(swap_max(100, 50).is_err());
    assert!(swap_max(0, 50).is_err());
    assert!(swap_max(-1, 50).is_err());
    assert_eq!(swap_max(100, 0).unwrap(), None);
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
    assert!(
        e.message().starts_with("linux.resources.pids.limit: "),
        "{e}"
    );
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
    // A zero limit is unset (runc's reading), not "no memory".
    let zero = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(0i64).build().unwrap())
        .build()
        .unwrap();
    cg.apply(&zero).unwrap();
    assert!(!root.join("c/memory.max").exists());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn procs_oom_and_freeze_from_files() {
    let root = tree("v2stats");
    let cg = V2::create(&root, "c").unwrap();
    let d = root.join("c");
    std::fs::write(d.join("cgroup.procs"), "30\n4\n").unwrap();
    std::fs::write(d.join("memory.events"), "low 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
    std::fs::write(d.join("memory.stat"), "anon 4096\n").unwrap();
    assert_eq!(cg.procs().unwrap(), vec![4, 30]);
    let crate::cgroup::Stats::V2(s) = cg.stats() else {
        panic!("a v2 cgroup's stats are containerd's v2 type")
    };
    assert_eq!(s.memory.unwrap().anon, 4096);
    assert_eq!(s.memory_events.unwrap().oom_kill, 1);
    assert_eq!(
        cg.stats().to_any().type_url,
        "io.containerd.cgroups.v2.Metrics"
    );
    // No cgroup.freeze: the kernel has no v2 freezer.
    let e = cg.freeze().unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition);
    std::fs::write(d.join("cgroup.freeze"), "0\n").unwrap();
    // Freeze returns only once cgroup.events says frozen.
    std::fs::write(d.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    let events = d.join("cgroup.events");
    let flip = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::write(events, "populated 1\nfrozen 1\n").unwrap();
    });
    let t = std::time::Instant::now();
    cg.freeze().unwrap();
    assert!(t.elapsed() >= std::time::Duration::from_millis(100));
    flip.join().unwrap();
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

mod real;
