//! Against the host's real cgroup2 mount: `/sys/fs/cgroup` on a v2 host,
//! `/sys/fs/cgroup/unified` on a hybrid one, where no controller is
//! enabled, so only what needs none is tried: placement, `cgroup.procs`,
//! the freezer, `cgroup.kill` and the eBPF device program (the kernel runs
//! a task's cgroup2 device programs on a hybrid host too). They need root;
//! without it or the mount they say SKIPPED and why. Every cgroup made is
//! removed by a guard, also when a test fails.

use super::super::*;
use crate::cgroup::bpf;
use crate::cgroup::devices::{Emulator, Node, RWM, Rule};
use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxResourcesBuilder};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// The cgroup2 mount to test on, or why not.
fn cgroup2_root(test: &str) -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root to make cgroups");
        return None;
    }
    for r in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let r = Path::new(r);
        if r.join("cgroup.controllers").exists() {
            return Some(r.to_path_buf());
        }
    }
    eprintln!("SKIPPED {test}: no cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified");
    None
}

/// A cgroup of the test's own; dropping it kills what is left in it and
/// removes it.
struct Guard(V2);

impl Guard {
    fn new(root: &Path, test: &str) -> Guard {
        let path = format!("berth-unit-{test}-{}", std::process::id());
        // A leftover of an earlier run that died.
        let _ = std::fs::remove_dir(root.join(&path));
        Guard(V2::create(root, &path).unwrap())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.thaw();
        let _ = self.0.kill_all(libc::SIGKILL);
        if let Err(e) = self.0.delete() {
            eprintln!("remove test cgroup {}: {}", self.0.path(), e.chain());
        }
    }
}

/// Starts `sh -c script` inside `cg` (`true <file`, not `: <file`, in
/// scripts: a failed redirection of a special built-in ends the shell): the child writes itself into
/// `cgroup.procs` before it executes, so nothing of the script runs
/// outside.
fn spawn_in(cg: &V2, script: &str) -> Child {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cg.dir().join("cgroup.procs"))
        .unwrap();
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only calls write(2), which is async-signal-safe,
    // on a descriptor the parent keeps open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(procs);
    child
}

fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn real_placement_freeze_and_kill() {
    let Some(root) = cgroup2_root("real_placement_freeze_and_kill") else {
        return;
    };
    let g = Guard::new(&root, "place");
    let cg = &g.0;
    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    cg.add(child.id()).unwrap();
    assert_eq!(cg.procs().unwrap(), vec![child.id()]);
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
    assert!(
        own.lines().any(|l| l == format!("0::/{}", cg.path())),
        "{own}"
    );
    cg.freeze().unwrap();
    assert_eq!(
        read_keyed(cg.dir(), "cgroup.events").get("frozen"),
        Some(&1)
    );
    cg.thaw().unwrap();
    assert!(base::wait_until(100, || {
        read_keyed(cg.dir(), "cgroup.events").get("frozen") == Some(&0)
    }));
    cg.kill_all(libc::SIGKILL).unwrap();
    let st = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL)
    );
    drop(g);
    assert!(
        !root
            .join(format!("berth-unit-place-{}", std::process::id()))
            .exists()
    );
}

#[test]
fn real_stats_are_the_v2_type_with_the_kernels_cpu_time() {
    let Some(root) = cgroup2_root("real_stats_are_the_v2_type_with_the_kernels_cpu_time") else {
        return;
    };
    let g = Guard::new(&root, "stats");
    let cg = &g.0;
    // Busy for a while, then waiting: its CPU time is in cpu.stat, which
    // a cgroup has with no controller enabled.
    let mut child = spawn_in(
        cg,
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo busy-done; sleep 100",
    );
    let pid = child.id();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "busy-done\n");
    // The external runtime's way to the cgroup: the init's pid.
    assert_eq!(
        crate::cgroup::hierarchy::unified_dir(&root, pid).unwrap(),
        cg.dir()
    );
    let stats = cg.stats();
    assert_eq!(stats.to_any().type_url, "io.containerd.cgroups.v2.Metrics");
    let Stats::V2(m) = stats else {
        panic!("v1 stats from a v2 cgroup")
    };
    let cpu = m.cpu.unwrap();
    assert!(cpu.usage_usec > 0, "{cpu:?}");
    assert!(cpu.usage_usec >= cpu.user_usec, "{cpu:?}");
    cg.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(output(child), "", "nothing on stderr");
}

#[test]
fn real_freeze_stops_a_running_process() {
    let Some(root) = cgroup2_root("real_freeze_stops_a_running_process") else {
        return;
    };
    let g = Guard::new(&root, "freeze");
    let cg = &g.0;
    let out = std::env::temp_dir().join(format!("berth-freeze-{}", std::process::id()));
    let _ = std::fs::remove_file(&out);
    // A counter written every 10 ms.
    let script = format!(
        "i=0; while :; do i=$((i+1)); echo $i > {}; sleep 0.01; done",
        out.display()
    );
    let child = spawn_in(cg, &script);
    let count = || {
        std::fs::read_to_string(&out)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    assert!(base::wait_until(300, || count().is_some_and(|c| c > 2)));
    cg.freeze().unwrap();
    let frozen_at = count();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(count(), frozen_at, "a frozen process ran");
    cg.thaw().unwrap();
    assert!(
        base::wait_until(300, || count() > frozen_at),
        "thawed, it runs again"
    );
    cg.kill_all(libc::SIGKILL).unwrap();
    output(child);
    let _ = std::fs::remove_file(&out);
}

/// The program of the container's rules, attached for real: the kernel
/// lets the child open what the rules allow and answers EPERM for the
/// rest, and a second apply replaces the program instead of adding one.
#[test]
fn real_device_program() {
    let Some(root) = cgroup2_root("real_device_program") else {
        return;
    };
    let g = Guard::new(&root, "devices");
    let cg = &g.0;
    let tmp = std::env::temp_dir().join(format!("berth-devnodes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(tmp.clone());
    let node = |name: &str, major: u64, minor: u64| {
        let p = tmp.join(name);
        nix::sys::stat::mknod(
            &p,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        )
        .unwrap();
        p
    };
    let kmsg = node("kmsg", 1, 11);
    let full = node("full", 1, 7);
    // containerd's default: deny all, then runc's defaults.
    let res = LinuxResourcesBuilder::default()
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    cg.apply(&res).unwrap();
    let script = format!(
        "echo x > /dev/null && echo null=ok; true > {full} && echo full=opened; \
         true < {kmsg} && echo kmsg=opened; mknod {tmp}/made c 1 11 && echo mknod=ok",
        full = full.display(),
        kmsg = kmsg.display(),
        tmp = tmp.display()
    );
    let o = output(spawn_in(cg, &script));
    assert!(o.contains("null=ok"), "{o}");
    // /dev/full (1:7) is a default.
    assert!(o.contains("full=opened"), "{o}");
    assert!(!o.contains("kmsg=opened"), "{o}");
    assert!(o.contains("Operation not permitted"), "{o}");
    assert!(
        o.contains("mknod=ok"),
        "mknod of any node is a default: {o}"
    );
    let dirfd: OwnedFd = std::fs::File::open(cg.dir()).unwrap().into();
    assert_eq!(bpf::attached(&dirfd).unwrap().len(), 1);
    // Rules of our own, replacing those: null only; full denied.
    let null_only = Emulator::from_rules(&[Rule {
        node: Some(Node::Char),
        major: 1,
        minor: 3,
        access: RWM,
        allow: true,
    }])
    .unwrap();
    bpf::set_device_rules(cg.dir(), &null_only).unwrap();
    assert_eq!(
        bpf::attached(&dirfd).unwrap().len(),
        1,
        "replaced, not added"
    );
    let script = format!(
        "echo x > /dev/null && echo null=ok; true > {full} && echo full=opened",
        full = full.display()
    );
    let o = output(spawn_in(cg, &script));
    assert!(o.contains("null=ok"), "{o}");
    assert!(!o.contains("full=opened"), "{o}");
    assert!(o.contains("Operation not permitted"), "{o}");
}
