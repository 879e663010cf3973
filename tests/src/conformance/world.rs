//! Conformance cases about the container's world: namespaces, mounts,
//! masked and readonly paths, devices, hostname and cgroup limits.

use super::normalise::{code, mountinfo};
use super::{Suite, both, check, has_line, lines, mount_flags, mount_line, sh, show};
use serde_json::json;

pub fn namespaces(s: &Suite) {
    let probe = "echo pid=$$ ppid=$(grep PPid /proc/$$/status | cut -f2); \
        for n in cgroup ipc mnt net pid uts user; do echo $n $(readlink /proc/self/ns/$n); done";
    let host = |text: String| {
        // Which namespaces are the host's (this test's) and which its own;
        // the inode numbers themselves differ per container.
        text.lines()
            .map(|l| match l.split_once(' ') {
                Some((n, link)) if !l.starts_with("pid=") && !l.starts_with("exit=") => {
                    let ours = std::fs::read_link(format!("/proc/self/ns/{n}")).ok();
                    let same = ours.is_some_and(|o| o.to_string_lossy() == link);
                    format!("{n} {}\n", if same { "host" } else { "own" })
                }
                _ => format!("{l}\n"),
            })
            .collect::<String>()
    };
    let obs = both(|rt| {
        let (a, b) = (s.id(rt, 1), s.id(rt, 2));
        let own = host(show(&a, &s.run(rt, &a, &[], &sh(probe))));
        let net_host = host(show(&b, &s.run(rt, &b, &["--net-host"], &sh(probe))));
        format!("default:\n{own}--net-host:\n{net_host}")
    });
    check("namespaces", &obs, |o| {
        let mut p = lines(&[
            "pid=1 ppid=0",
            "ipc own",
            "mnt own",
            "pid own",
            "uts own",
            "cgroup host",
            "user host",
            "net host",
        ])(o);
        let default = o.split("--net-host:").next().unwrap_or("");
        p.extend(has_line(default, "net own"));
        p
    });
}

/// A container in a cgroup namespace of its own: made once the process is
/// in its cgroup in every hierarchy (on a hybrid host the unified one
/// too), so each line of /proc/self/cgroup is the namespace's root.
pub fn cgroup_namespace(s: &Suite) {
    let probe = "cat /proc/self/cgroup; readlink /proc/self/ns/cgroup";
    let cgroupns = |spec: &mut serde_json::Value| {
        if let Some(nss) = spec["linux"]["namespaces"].as_array_mut() {
            nss.push(json!({"type": "cgroup"}));
        }
    };
    let host_ns = std::fs::read_link("/proc/self/ns/cgroup")
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    let obs = both(|rt| {
        let a = s.id(rt, 1);
        let out = show(&a, &s.run_patched(rt, &a, &[], &sh(probe), &cgroupns));
        // Hierarchy numbers and the namespace's inode are the host's.
        out.lines()
            .map(|l| match l.split_once(':') {
                Some((n, rest)) if n.parse::<u32>().is_ok() => format!("N:{rest}\n"),
                _ if l.starts_with("cgroup:[") => {
                    format!("ns {}\n", if l == host_ns { "host" } else { "own" })
                }
                _ => format!("{l}\n"),
            })
            .collect::<String>()
    });
    check("cgroup_namespace", &obs, |o| {
        let mut p = lines(&["exit=0", "ns own", "N::/"])(o);
        for l in o.lines().filter(|l| l.starts_with("N:")) {
            if !l.ends_with(":/") {
                p.push(format!("not at its namespace's root: {l}"));
            }
        }
        p
    });
}

pub fn mounts(s: &Suite) {
    let src = s.d.dir.path().join("bind-src");
    std::fs::create_dir_all(&src).unwrap();
    let bind = format!("type=bind,src={},dst=/data,options=rbind:ro", src.display());
    let tmpfs = "type=tmpfs,src=tmpfs,dst=/scratch,options=size=1m:noexec:nosuid";
    let probe = sh("cat /proc/self/mountinfo");
    let obs = both(|rt| {
        let (a, b) = (s.id(rt, 1), s.id(rt, 2));
        let out = s.run(rt, &a, &[], &probe);
        let default = format!("exit={}\n{}", code(&out), mountinfo(&show(&a, &out)));
        let flags = ["--read-only", "--mount", &bind, "--mount", tmpfs];
        let out = s.run(rt, &b, &flags, &probe);
        let extra = format!("exit={}\n{}", code(&out), mountinfo(&show(&b, &out)));
        format!("default:\n{default}--read-only, bind, tmpfs:\n{extra}")
    });
    check("mounts", &obs, |o| {
        let (default, extra) = o.split_once("--read-only, bind, tmpfs:").unwrap_or((o, ""));
        let mut p = Vec::new();
        for (point, flags) in [
            ("/", &["rw"][..]),
            ("/proc", &["rw", "nosuid", "nodev", "noexec"]),
            ("/dev", &["rw", "nosuid"]),
            ("/dev/pts", &["rw", "nosuid", "noexec"]),
            ("/dev/shm", &["rw", "nosuid", "nodev", "noexec"]),
            ("/dev/mqueue", &["rw", "nosuid", "nodev", "noexec"]),
            ("/sys", &["ro", "nosuid", "nodev", "noexec"]),
            ("/run", &["rw", "nosuid"]),
        ] {
            p.extend(mount_flags(default, point, flags));
        }
        p.extend(mount_flags(extra, "/", &["ro"]));
        p.extend(mount_flags(extra, "/data", &["ro"]));
        p.extend(mount_flags(extra, "/scratch", &["rw", "nosuid", "noexec"]));
        p
    });
}

/// containerd's default masked paths (what ctr puts in the spec).
const MASKED: &str = "/proc/acpi /proc/asound /proc/kcore /proc/keys /proc/latency_stats \
    /proc/timer_list /proc/timer_stats /proc/sched_debug /sys/firmware /proc/scsi";

pub fn masked_paths(s: &Suite) {
    let probe = format!(
        "for p in {MASKED}; do \
           if [ -d $p ]; then echo \"$p dir entries=$(ls -A $p | wc -l) $(touch $p/x 2>/dev/null && echo writable || echo refused)\"; \
           elif [ -e $p ]; then echo \"$p file bytes=$(cat $p | wc -c)\"; \
           else echo \"$p absent\"; fi; done; \
         echo ---; cat /proc/self/mountinfo"
    );
    let obs = both(|rt| {
        let id = s.id(rt, 1);
        let o = show(&id, &s.run(rt, &id, &[], &sh(&probe)));
        let (paths, mi) = o.split_once("---\n").unwrap_or((&o, ""));
        // Only the masks' own mounts: the rest is the `mounts` case's.
        let masks: String = mountinfo(mi)
            .lines()
            .filter(|l| {
                MASKED
                    .split(' ')
                    .any(|m| l.starts_with(&format!("{m} on ")))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        format!("{paths}{masks}")
    });
    check("masked_paths", &obs, |o| {
        let mut p: Vec<String> = o
            .lines()
            .filter(|l| {
                (l.contains(" entries=") && !l.contains(" entries=0 "))
                    || (l.contains(" bytes=") && !l.ends_with(" bytes=0"))
                    || l.ends_with(" writable")
            })
            .map(|l| format!("not masked: {l}"))
            .collect();
        p.extend(has_line(o, "exit=0"));
        p.extend(has_line(o, "/proc/keys file bytes=0"));
        p
    });
}

/// containerd's default readonly paths.
const READONLY: &str = "/proc/bus /proc/fs /proc/irq /proc/sys /proc/sysrq-trigger";

pub fn readonly_paths(s: &Suite) {
    let probe = format!(
        "for p in {READONLY}; do [ -e $p ] && echo \"$p exists\" || echo \"$p absent\"; done; \
         echo ostype=$(cat /proc/sys/kernel/ostype); \
         {{ echo x > /proc/sys/kernel/domainname; }} 2>&1; \
         echo ---; cat /proc/self/mountinfo"
    );
    let obs = both(|rt| {
        let id = s.id(rt, 1);
        let o = show(&id, &s.run(rt, &id, &[], &sh(&probe)));
        let (head, mi) = o.split_once("---\n").unwrap_or((&o, ""));
        let ro: String = mountinfo(mi)
            .lines()
            .filter(|l| {
                READONLY
                    .split(' ')
                    .any(|m| l.starts_with(&format!("{m} on ")))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        format!("{head}{ro}")
    });
    check("readonly_paths", &obs, |o| {
        let mut p = lines(&[
            "/proc/sys exists",
            "ostype=Linux",
            "sh: can't create /proc/sys/kernel/domainname: Read-only file system",
        ])(o);
        for m in READONLY.split(' ') {
            if o.contains(&format!("{m} exists")) {
                // Each is a read-only bind of itself over proc.
                p.extend(mount_flags(o, m, &["ro", "nosuid", "nodev", "noexec"]));
            }
        }
        p
    });
}

pub fn devices(s: &Suite) {
    let probe = "cd /dev; for f in * pts/* shm mqueue; do stat -c '%N %F %t:%T %a %u:%g' $f; done; \
        echo x > /dev/null && echo null=writable; echo x > /dev/full || true; \
        echo urandom=$(head -c 8 /dev/urandom | wc -c); \
        mknod /tmp/kmsg c 1 11 2>&1 && { head -c 1 /tmp/kmsg >/dev/null 2>&1 && echo kmsg=readable || echo kmsg=denied; }; \
        for d in /dev/fuse /dev/conf0 /dev/conf1; do [ -e $d ] && { exec 3<>$d && echo $d=opens; exec 3>&-; }; done; true";
    let conf0 = |spec: &mut serde_json::Value| {
        // A device of the spec's own: a null device at another path, mode
        // and owner.
        // (0666 as well: the node's mode is the spec's, whatever the umask.)
        let devs = json!([
            {"path": "/dev/conf0", "type": "c", "major": 1, "minor": 3,
             "fileMode": 0o640, "uid": 7, "gid": 8},
            {"path": "/dev/conf1", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666},
        ]);
        match spec["linux"]["devices"].as_array_mut() {
            Some(devices) => devices.extend(devs.as_array().cloned().unwrap_or_default()),
            None => spec["linux"]["devices"] = devs,
        }
    };
    let obs = both(|rt| {
        let (a, b, c) = (s.id(rt, 1), s.id(rt, 2), s.id(rt, 3));
        let default = show(&a, &s.run(rt, &a, &[], &sh(probe)));
        let fuse = show(&b, &s.run(rt, &b, &["--device", "/dev/fuse"], &sh(probe)));
        let own = show(&c, &s.run_patched(rt, &c, &[], &sh(probe), &conf0));
        format!("default:\n{default}--device /dev/fuse:\n{fuse}spec'd /dev/conf0:\n{own}")
    });
    check("devices", &obs, |o| {
        let mut p = lines(&[
            "exit=0",
            "null character special file 1:3 666 0:0",
            "zero character special file 1:5 666 0:0",
            "full character special file 1:7 666 0:0",
            "random character special file 1:8 666 0:0",
            "urandom character special file 1:9 666 0:0",
            "tty character special file 5:0 666 0:0",
            "'ptmx' -> 'pts/ptmx' symbolic link 0:0 777 0:0",
            "'fd' -> '/proc/self/fd' symbolic link 0:0 777 0:0",
            "pts/ptmx character special file 5:2 666 0:0",
            "null=writable",
            "sh: write error: No space left on device",
            "urandom=8",
            "/dev/fuse=opens",
            "conf0 character special file 1:3 640 7:8",
            "conf1 character special file 1:5 666 0:0",
            "/dev/conf0=opens",
            "/dev/conf1=opens",
        ])(o);
        // The device cgroup keeps what the spec does not allow closed.
        if o.contains("kmsg=readable") {
            p.push("/dev/kmsg (1:11) readable through a node made by mknod".into());
        }
        // ctr gives the device the host node's mode and owner.
        let host = std::process::Command::new("stat")
            .args(["-c", "fuse %F %t:%T %a %u:%g", "/dev/fuse"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        p.extend(has_line(o, &host));
        let default = o.split("--device").next().unwrap_or("");
        if default.contains("fuse") {
            p.push("/dev/fuse without --device".into());
        }
        p
    });
}

pub fn privileged(s: &Suite) {
    // Everything the host has: every capability, every device node, /sys
    // writable, no masked or readonly paths.
    let probe = "grep -E '^Cap(Eff|Bnd)' /proc/self/status; \
        cd /dev; for f in $(ls | grep -v -e '^pts$' -e '^shm$' -e '^mqueue$'); do stat -c '%N %F %t:%T %a %u:%g' $f; done; \
        echo ---; cat /proc/self/mountinfo";
    let obs = both(|rt| {
        let id = s.id(rt, 1);
        let o = show(&id, &s.run(rt, &id, &["--privileged"], &sh(probe)));
        let (head, mi) = o.split_once("---\n").unwrap_or((&o, ""));
        format!("{head}{}", mountinfo(mi))
    });
    check("privileged", &obs, |o| {
        // /dev/ptmx is the container's devpts's, as the OCI spec requires,
        // even where the spec lists the host's node.
        let mut p = lines(&["exit=0", "'ptmx' -> 'pts/ptmx' symbolic link 0:0 777 0:0"])(o);
        // The host's nodes, as the host has them.
        let host = std::process::Command::new("stat")
            .args(["-c", "kmsg %F %t:%T %a %u:%g", "/dev/kmsg"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        p.extend(has_line(o, &host));
        p.extend(mount_flags(o, "/sys", &["rw"]));
        for masked in ["/proc/keys", "/proc/sys", "/sys/firmware"] {
            if mount_line(o, masked).is_some() {
                p.push(format!("{masked} is still masked or readonly"));
            }
        }
        let eff = o
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:\t"))
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        // CAP_SYS_MODULE and CAP_SYS_ADMIN: none of the defaults.
        if eff & (1 << 16) == 0 || eff & (1 << 21) == 0 {
            p.push(format!("not every capability: CapEff {eff:x}"));
        }
        p
    });
}

pub fn hostname(s: &Suite) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let probe = sh("hostname; uname -n; cat /proc/sys/kernel/hostname /proc/sys/kernel/domainname");
    let obs = both(|rt| {
        let (a, b) = (s.id(rt, 1), s.id(rt, 2));
        let named = show(
            &a,
            &s.berthctl_run(rt, &a, &["--rm", "--hostname", "box"], &probe),
        );
        // ctr sets no hostname: the new UTS namespace keeps the host's.
        let unset = show(&b, &s.run(rt, &b, &[], &probe)).replace(host.trim(), "<host>");
        format!("--hostname box:\n{named}ctr (none):\n{unset}")
    });
    check(
        "hostname",
        &obs,
        lines(&["box", "<host>", "(none)", "exit=0"]),
    );
}

pub fn cgroup_limits(s: &Suite) {
    let files = [
        ("memory", "memory.limit_in_bytes"),
        ("cpu", "cpu.cfs_quota_us"),
        ("cpu", "cpu.cfs_period_us"),
        ("cpu", "cpu.shares"),
        ("pids", "pids.max"),
        ("devices", "devices.list"),
    ];
    let observe = |id: &str| {
        let (pid, _) = s.task(id).expect("the task runs");
        let mut o = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_default()
            .replace(id, "<id>");
        for (ctrl, f) in files {
            // One rule per line, in the kernel's order: sorted, one line.
            let mut v: Vec<String> = s
                .cgroup_file(ctrl, id, f)
                .lines()
                .map(String::from)
                .collect();
            v.sort();
            o.push_str(&format!("{f}: {}\n", v.join(", ")));
        }
        s.remove(id);
        o
    };
    let obs = both(|rt| {
        let (a, b) = (s.id(rt, 1), s.id(rt, 2));
        let flags = [
            "-d",
            "--memory-limit",
            "33554432",
            "--cpus",
            "0.5",
            "--pids-limit",
            "42",
        ];
        let out = s.berthctl_run(rt, &a, &flags, &["sleep", "300"]);
        let berthctl = format!("{}{}", show(&a, &out), observe(&a));
        let flags = [
            "--memory-limit",
            "16777216",
            "--cpu-shares",
            "512",
            "--cpu-quota",
            "20000",
            "--cpu-period",
            "100000",
        ];
        s.run_detached(rt, &b, &flags, &["sleep", "300"]);
        let ctr = observe(&b);
        format!(
            "berthctl --memory-limit --cpus --pids-limit:\n{berthctl}ctr --memory-limit --cpu-*:\n{ctr}"
        )
    });
    check("cgroup_limits", &obs, |o| {
        let (b, c) = o.split_once("ctr --memory-limit").unwrap_or((o, ""));
        let mut p = lines(&["4:memory:/conformance/<id>", "8:pids:/conformance/<id>"])(o);
        for (sec, line) in [
            (b, "memory.limit_in_bytes: 33554432"),
            (b, "cpu.cfs_quota_us: 50000"),
            (b, "cpu.cfs_period_us: 100000"),
            (b, "pids.max: 42"),
            (c, "memory.limit_in_bytes: 16777216"),
            (c, "cpu.cfs_quota_us: 20000"),
            (c, "cpu.shares: 512"),
        ] {
            p.extend(has_line(sec, line));
        }
        // What berthctl's spec allows, and no more than a rule for each
        // device (runc adds its own defaults to these, as `m` rules).
        let rules = b
            .lines()
            .find(|l| l.starts_with("devices.list:"))
            .unwrap_or("");
        for rule in ["c 1:3 rwm", "c 10:200 rwm", "c 136:* rwm"] {
            if !rules.contains(rule) {
                p.push(format!("{rule} not allowed: {rules}"));
            }
        }
        if rules.contains("a *:*") {
            p.push(format!("every device allowed: {rules}"));
        }
        p
    });
}
