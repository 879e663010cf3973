//! The v1 hierarchy against fake cgroupfs trees in a temporary directory.
use super::super::base::tests::tree;
use super::*;
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
    // Files keep the last write: the deny-all came first, runc's
    // defaults last.
    assert_eq!(file(&root, "devices/c/devices.deny"), "a *:* rwm");
    assert_eq!(file(&root, "devices/c/devices.allow"), "c 10:200 rwm");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn device_rules_are_the_specs_then_runcs_defaults() {
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .unwrap();
    let fuse = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(LinuxDeviceType::C)
        .major(10)
        .minor(229)
        .access("rwm")
        .build()
        .unwrap();
    let w = device_writes(&[deny_all, fuse]);
    assert_eq!(w[0], ("devices.deny", "a *:* rwm".to_string()));
    assert_eq!(w[1], ("devices.allow", "c 10:229 rwm".to_string()));
    let defaults: Vec<&str> = w[2..].iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        defaults,
        vec![
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
        ]
    );
    assert!(w[2..].iter().all(|(f, _)| *f == "devices.allow"));
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
    assert!(e.message().contains("no pids cgroup controller"), "{e}");
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
    assert!(e.message().contains("cgroup v2"), "{e}");
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
    let s = cg.stats();
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
