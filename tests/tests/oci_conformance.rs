//! The `OciRuntime` conformance suite: every case runs its containers on the
//! shim's built-in runtime and on runc (driven by the same shim), and
//! asserts that a program inside sees the same thing on both, and what it
//! should see (`berth_tests::conformance`). Root only; needs ctr and runc
//! (and script for `tty`). Deliberate differences: docs/compat.md.

use berth_tests::conformance::normalise::code;
use berth_tests::conformance::normalise::{mask_values, mountinfo};
use berth_tests::conformance::{Suite, both, check, has_line, show};
use serde_json::json;
use std::time::Duration;

/// Runs a shell script in the container.
fn sh(script: &str) -> [&str; 3] {
    ["sh", "-c", script]
}

/// `expect` for observations without an absolute answer of their own
/// beyond the lines listed.
fn lines(want: &'static [&'static str]) -> impl Fn(&str) -> Vec<String> {
    move |obs| want.iter().filter_map(|l| has_line(obs, l)).collect()
}

/// The line of a normalised mountinfo for mount point `point`.
fn mount_line<'a>(obs: &'a str, point: &str) -> Option<&'a str> {
    obs.lines()
        .find(|l| l.strip_prefix(point).is_some_and(|r| r.starts_with(" on ")))
}

/// Problems unless the mount at `point` has every per-mount flag in `flags`.
fn mount_flags(obs: &str, point: &str, flags: &[&str]) -> Vec<String> {
    let Some(l) = mount_line(obs, point) else {
        return vec![format!("no mount on {point}")];
    };
    let opts: Vec<&str> = l.split(' ').nth(6).unwrap_or("").split(',').collect();
    flags
        .iter()
        .filter(|f| !opts.contains(f))
        .map(|f| format!("{point} is not {f}: {l}"))
        .collect()
}

#[test]
fn namespaces() {
    let Some(s) = Suite::start("namespaces") else {
        return;
    };
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

#[test]
fn mounts() {
    let Some(s) = Suite::start("mounts") else {
        return;
    };
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

#[test]
fn masked_paths() {
    let Some(s) = Suite::start("masked_paths") else {
        return;
    };
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

#[test]
fn readonly_paths() {
    let Some(s) = Suite::start("readonly_paths") else {
        return;
    };
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

#[test]
fn devices() {
    let Some(s) = Suite::start("devices") else {
        return;
    };
    let probe = "cd /dev; for f in * pts/* shm mqueue; do stat -c '%N %F %t:%T %a %u:%g' $f; done; \
        echo x > /dev/null && echo null=writable; echo x > /dev/full || true; \
        echo urandom=$(head -c 8 /dev/urandom | wc -c); \
        mknod /tmp/kmsg c 1 11 && { head -c 1 /tmp/kmsg >/dev/null 2>&1 && echo kmsg=readable || echo kmsg=denied; }; \
        for d in /dev/fuse /dev/conf0; do [ -e $d ] && { exec 3<>$d && echo $d=opens; exec 3>&-; }; done; true";
    let conf0 = |spec: &mut serde_json::Value| {
        // A device of the spec's own: a null device at another path, mode
        // and owner.
        spec["linux"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({
            "path": "/dev/conf0", "type": "c", "major": 1, "minor": 3,
            "fileMode": 0o640, "uid": 7, "gid": 8}));
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
            "'null' character special file 1:3 666 0:0",
            "'zero' character special file 1:5 666 0:0",
            "'full' character special file 1:7 666 0:0",
            "'random' character special file 1:8 666 0:0",
            "'urandom' character special file 1:9 666 0:0",
            "'tty' character special file 5:0 666 0:0",
            "'ptmx' -> 'pts/ptmx' symbolic link 0:0 777 0:0",
            "'fd' -> '/proc/self/fd' symbolic link 0:0 777 0:0",
            "'pts/ptmx' character special file 5:2 666 0:0",
            "null=writable",
            "sh: write error: No space left on device",
            "urandom=8",
            "kmsg=denied",
            "'fuse' character special file a:e5 666 0:0",
            "/dev/fuse=opens",
            "'conf0' character special file 1:3 640 7:8",
            "/dev/conf0=opens",
        ])(o);
        let default = o.split("--device").next().unwrap_or("");
        if default.contains("fuse") {
            p.push("/dev/fuse without --device".into());
        }
        p
    });
}

#[test]
fn capabilities() {
    let Some(s) = Suite::start("capabilities") else {
        return;
    };
    let probe = sh("grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status");
    let obs = both(|rt| {
        let (a, b, c) = (s.id(rt, 1), s.id(rt, 2), s.id(rt, 3));
        let default = show(&a, &s.run(rt, &a, &[], &probe));
        let flags = ["--cap-add", "CAP_SYS_ADMIN", "--cap-drop", "CAP_NET_RAW"];
        let changed = show(&b, &s.run(rt, &b, &flags, &probe));
        let user = show(
            &c,
            &s.berthctl_run(rt, &c, &["--rm", "--user", "1000:1000"], &probe),
        );
        format!("default:\n{default}+SYS_ADMIN -NET_RAW:\n{changed}--user 1000:\n{user}")
    });
    check("capabilities", &obs, |o| {
        let mut p = lines(&[
            "CapInh:\t0000000000000000",
            "CapAmb:\t0000000000000000",
            "NoNewPrivs:\t1",
            "Seccomp:\t0",
        ])(o);
        let parts: Vec<&str> = o.split("+SYS_ADMIN").collect();
        p.extend(has_line(parts[0], "CapEff:\t00000000a80425fb"));
        p.extend(has_line(parts[0], "CapBnd:\t00000000a80425fb"));
        let rest = parts.get(1).copied().unwrap_or("");
        p.extend(has_line(rest, "CapEff:\t00000000a82405fb"));
        p.extend(has_line(rest, "CapBnd:\t00000000a80425fb"));
        p
    });
}

#[test]
fn rlimits() {
    let Some(s) = Suite::start("rlimits") else {
        return;
    };
    let probe = sh("cat /proc/self/limits");
    let patch = |spec: &mut serde_json::Value| {
        spec["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 1111, "hard": 2222},
            {"type": "RLIMIT_NPROC", "soft": 555, "hard": 666},
            {"type": "RLIMIT_MSGQUEUE", "soft": 4096, "hard": 8192},
        ]);
    };
    let obs = both(|rt| {
        let (a, b) = (s.id(rt, 1), s.id(rt, 2));
        let default = show(&a, &s.run(rt, &a, &[], &probe));
        let spec = show(&b, &s.run_patched(rt, &b, &[], &probe, &patch));
        format!("default:\n{default}spec'd:\n{spec}")
    });
    check("rlimits", &obs, |o| {
        let limit = |section: &str, name: &str| -> Option<String> {
            section.lines().find(|l| l.starts_with(name)).map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        };
        let (default, spec) = o.split_once("spec'd:").unwrap_or((o, ""));
        let mut p = Vec::new();
        for (sec, name, want) in [
            (default, "Max open files", "1024 1024"),
            (spec, "Max open files", "1111 2222"),
            (spec, "Max processes", "555 666"),
            (spec, "Max msgqueue size", "4096 8192"),
        ] {
            let got = limit(sec, name);
            if got.as_deref() != Some(want) {
                p.push(format!("{name}: {got:?}, not {want}"));
            }
        }
        p
    });
}

#[test]
fn user_and_groups() {
    let Some(s) = Suite::start("user_and_groups") else {
        return;
    };
    let probe = sh("id; grep -E '^(Uid|Gid|Groups):' /proc/self/status");
    let patch = |spec: &mut serde_json::Value| {
        spec["process"]["user"] =
            json!({"uid": 1000, "gid": 1000, "additionalGids": [20, 10, 1000]});
    };
    let obs = both(|rt| {
        let (a, b, c) = (s.id(rt, 1), s.id(rt, 2), s.id(rt, 3));
        let default = show(&a, &s.run(rt, &a, &[], &probe));
        let nobody = show(
            &b,
            &s.berthctl_run(rt, &b, &["--rm", "--user", "65534:65534"], &probe),
        );
        let groups = show(&c, &s.run_patched(rt, &c, &[], &probe, &patch));
        format!("default:\n{default}--user 65534:65534:\n{nobody}spec'd groups:\n{groups}")
    });
    check(
        "user_and_groups",
        &obs,
        lines(&[
            "uid=0(root) gid=0(root) groups=0(root)",
            "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)",
            "uid=1000 gid=1000 groups=10,20,1000",
            "Uid:\t1000\t1000\t1000\t1000",
            "Groups:\t10 20 1000 ",
        ]),
    );
}

#[test]
fn cwd_and_env() {
    let Some(s) = Suite::start("cwd_and_env") else {
        return;
    };
    let probe = sh("echo cwd=$(pwd); ls -ld . | cut -c1-10; env | sort; umask");
    let obs = both(|rt| {
        let (a, b, c) = (s.id(rt, 1), s.id(rt, 2), s.id(rt, 3));
        let default = show(&a, &s.run(rt, &a, &[], &probe));
        let flags = [
            "--cwd",
            "/tmp",
            "--env",
            "FOO=bar",
            "--env",
            "PATH=/bin:/sbin",
        ];
        let set = show(&b, &s.run(rt, &b, &flags, &probe));
        let missing = show(&c, &s.run(rt, &c, &["--cwd", "/made/by/runtime"], &probe));
        format!("default:\n{default}--cwd /tmp --env:\n{set}--cwd missing:\n{missing}")
    });
    check("cwd_and_env", &obs, |o| {
        let mut p = lines(&[
            "cwd=/",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "cwd=/tmp",
            "FOO=bar",
            "PATH=/bin:/sbin",
            "cwd=/made/by/runtime",
            "0022",
        ])(o);
        // ctr sets neither: a runtime must not make them up.
        for v in ["HOSTNAME=", "TERM="] {
            if o.lines().any(|l| l.starts_with(v)) {
                p.push(format!("{v} set without a terminal or hostname env"));
            }
        }
        p
    });
}

#[test]
fn hostname() {
    let Some(s) = Suite::start("hostname") else {
        return;
    };
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

#[test]
fn cgroup_limits() {
    let Some(s) = Suite::start("cgroup_limits") else {
        return;
    };
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
            (
                b,
                "devices.list: b *:* m, c *:* m, c 10:200 rwm, c 136:* rwm, c 1:3 rwm, c 1:5 rwm, c 1:7 rwm, c 1:8 rwm, c 1:9 rwm, c 5:0 rwm, c 5:1 rwm, c 5:2 rwm",
            ),
            (c, "memory.limit_in_bytes: 16777216"),
            (c, "cpu.cfs_quota_us: 20000"),
            (c, "cpu.shares: 512"),
        ] {
            p.extend(has_line(sec, line));
        }
        p
    });
}

#[test]
fn exit_codes() {
    let Some(s) = Suite::start("exit_codes") else {
        return;
    };
    let obs = both(|rt| {
        let mut o = String::new();
        for (n, cmd) in [
            (1, &["sh", "-c", "exit 0"][..]),
            (2, &["sh", "-c", "exit 7"]),
            // PID 1 cannot SIGKILL itself from inside its namespace.
            (3, &["sh", "-c", "kill -KILL $$; echo survived"]),
            (4, &["sh", "-c", "nosuchcmd"]),
        ] {
            let id = s.id(rt, n);
            o.push_str(&format!(
                "{cmd:?}: {}",
                show(&id, &s.run(rt, &id, &[], cmd))
            ));
        }
        // Not runnable at all: ctr fails; the message is the runtime's own,
        // so only its gist is compared.
        for (n, cmd) in [(5, "nosuchcmd"), (6, "/etc/passwd")] {
            let id = s.id(rt, n);
            let out = s.run(rt, &id, &[], &[cmd]);
            let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
            let gist = ["not found", "no such file", "permission denied"]
                .iter()
                .find(|g| err.contains(*g))
                .copied()
                .unwrap_or("<other>");
            o.push_str(&format!(
                "{cmd}: exit={} error={gist}\n",
                out.status.code().unwrap_or(-1)
            ));
            if s.status(&id).is_some() || s.ctr(&["containers", "info", &id]).status.success() {
                o.push_str(&format!("{cmd}: left behind by ctr run --rm\n"));
                s.remove(&id);
            }
        }
        // SIGKILL from outside.
        let id = s.id(rt, 7);
        let child =
            s.spawn_until_ready(rt, &id, &sh("echo ready; while true; do sleep 0.05; done"));
        berth_tests::ok("kill", s.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]));
        let out = child.wait_with_output().expect("ctr run");
        o.push_str(&format!(
            "SIGKILL: exit={}\n",
            out.status.code().unwrap_or(-1)
        ));
        o
    });
    check(
        "exit_codes",
        &obs,
        lines(&[
            "[\"sh\", \"-c\", \"exit 0\"]: exit=0",
            "[\"sh\", \"-c\", \"exit 7\"]: exit=7",
            "survived",
            "[\"sh\", \"-c\", \"nosuchcmd\"]: exit=127",
            "nosuchcmd: exit=1 error=not found",
            "/etc/passwd: exit=1 error=permission denied",
            "SIGKILL: exit=137",
        ]),
    );
}

#[test]
fn signals() {
    let Some(s) = Suite::start("signals") else {
        return;
    };
    let obs = both(|rt| {
        let id = s.id(rt, 1);
        let trap = "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.05; done";
        let child = s.spawn_until_ready(rt, &id, &sh(trap));
        berth_tests::ok("kill", s.ctr(&["tasks", "kill", &id]));
        let out = child.wait_with_output().expect("ctr run");
        let mut o = format!("trapped TERM: {}", show(&id, &out));
        // Without a handler, PID 1 does not die of SIGTERM; SIGKILL is
        // forced on it.
        let id = s.id(rt, 2);
        s.run_detached(rt, &id, &[], &["sleep", "300"]);
        berth_tests::ok("kill", s.ctr(&["tasks", "kill", &id]));
        std::thread::sleep(Duration::from_millis(300));
        o.push_str(&format!("untrapped TERM: {:?}\n", s.status(&id)));
        berth_tests::ok("kill", s.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]));
        s.wait_status(&id, "STOPPED");
        o.push_str(&format!("SIGKILL: {:?}\n", s.status(&id)));
        s.remove(&id);
        o
    });
    check(
        "signals",
        &obs,
        lines(&[
            "trapped TERM: exit=7",
            "got TERM",
            "untrapped TERM: Some(\"RUNNING\")",
            "SIGKILL: Some(\"STOPPED\")",
        ]),
    );
}

#[test]
fn pause_resume() {
    let Some(s) = Suite::start("pause_resume") else {
        return;
    };
    let counter = "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.02; done";
    let obs = both(|rt| {
        let id = s.id(rt, 1);
        s.run_detached(rt, &id, &[], &sh(counter));
        let (pid, _) = s.task(&id).expect("running");
        // Read through the init's root: no exec can run in a frozen cgroup.
        let n = || std::fs::read_to_string(format!("/proc/{pid}/root/tmp/n")).unwrap_or_default();
        let advancing = || {
            let a = n();
            std::thread::sleep(Duration::from_millis(300));
            if n() != a { "advancing" } else { "still" }
        };
        let _ = advancing();
        let mut o = String::new();
        berth_tests::ok("pause", s.ctr(&["tasks", "pause", &id]));
        o.push_str(&format!(
            "paused: {:?} freezer={} counter={}\n",
            s.status(&id),
            s.cgroup_file("freezer", &id, "freezer.state"),
            advancing()
        ));
        berth_tests::ok("resume", s.ctr(&["tasks", "resume", &id]));
        o.push_str(&format!(
            "resumed: {:?} freezer={} counter={}\n",
            s.status(&id),
            s.cgroup_file("freezer", &id, "freezer.state"),
            advancing()
        ));
        s.remove(&id);
        o
    });
    check(
        "pause_resume",
        &obs,
        lines(&[
            "paused: Some(\"PAUSED\") freezer=FROZEN counter=still",
            "resumed: Some(\"RUNNING\") freezer=THAWED counter=advancing",
        ]),
    );
}

#[test]
fn exec() {
    let Some(s) = Suite::start("exec") else {
        return;
    };
    let probe = "echo pid=$$; pwd; env | sort; id; grep -E '^Cap(Eff|Bnd)' /proc/self/status; \
        for n in ipc mnt net pid uts; do [ $(readlink /proc/self/ns/$n) = $(readlink /proc/1/ns/$n) ] \
          && echo $n shared with init || echo $n NOT shared; done; \
        [ \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" ] && echo cgroup shared with init";
    let obs = both(|rt| {
        let id = s.id(rt, 1);
        s.run_detached(
            rt,
            &id,
            &["--env", "FOO=init", "--cwd", "/tmp"],
            &["sleep", "300"],
        );
        let exec = |args: &[&str]| {
            let mut a = vec!["tasks", "exec"];
            a.extend_from_slice(args);
            show(&id, &s.ctr(&a))
        };
        let mut o = String::new();
        // The pid an exec gets is whatever is free in the namespace.
        let first = exec(&["--exec-id", "e1", &id, "sh", "-c", probe]);
        if first.contains("pid=1\n") {
            o.push_str("exec is PID 1\n");
        }
        o.push_str(&format!("as init:\n{}", mask_values(&first, &["pid"])));
        let user = [
            "--exec-id",
            "e2",
            "--cwd",
            "/",
            "--user",
            "65534:65534",
            &id,
        ];
        let user: Vec<&str> = user
            .iter()
            .copied()
            .chain(sh("pwd; id; env | sort"))
            .collect();
        o.push_str(&format!("--user --cwd:\n{}", exec(&user)));
        o.push_str(&format!(
            "exit 5:\n{}",
            exec(&["--exec-id", "e3", &id, "sh", "-c", "exit 5"])
        ));
        let out = s.ctr(&["tasks", "exec", "--exec-id", "e4", &id, "nosuchcmd"]);
        let err = String::from_utf8_lossy(&out.stderr).contains("not found");
        o.push_str(&format!(
            "nosuchcmd: exit={} not-found={err}\n",
            out.status.code().unwrap_or(-1)
        ));
        o.push_str(&format!("init after: {:?}\n", s.status(&id)));
        s.remove(&id);
        o
    });
    check("exec", &obs, |o| {
        let mut p = lines(&[
            "pid=<pid>",
            "/tmp",
            "FOO=init",
            "uid=0(root) gid=0(root) groups=0(root)",
            "CapEff:\t00000000a80425fb",
            "ipc shared with init",
            "mnt shared with init",
            "net shared with init",
            "pid shared with init",
            "uts shared with init",
            "cgroup shared with init",
            "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)",
            "exit=5",
            "nosuchcmd: exit=1 not-found=true",
            "init after: Some(\"RUNNING\")",
        ])(o);
        if o.contains("exec is PID 1") {
            p.push("an exec got PID 1".into());
        }
        p
    });
}

#[test]
fn tty() {
    let Some(script) = berth_tests::peer("script") else {
        return;
    };
    let Some(s) = Suite::start("tty") else {
        return;
    };
    // ctr 1.6 sizes the terminal only after the process started (it sets
    // no consoleSize), so wait for the size to arrive.
    let size = "for i in $(seq 100); do s=$(stty size 2>/dev/null) && [ \"$s\" != '0 0' ] && break; sleep 0.02; done; echo $s";
    let probe = format!(
        "tty; {size}; echo TERM=$TERM; stat -c '%N %t:%T' /dev/console $(tty); \
        grep -c ' /dev/console ' /proc/self/mountinfo; exit 3"
    );
    let obs = both(|rt| {
        let (a, b) = (s.id(rt, 1), s.id(rt, 2));
        let run = s.run_args(rt, "--rm", &["-t"], &a, &sh(&probe));
        let out = s.ctr_in_terminal(&script, (91, 27), &run);
        let mut o = format!("run -t:\n{}", show(&a, &out).replace("\r\n", "\n"));
        s.run_detached(rt, &b, &[], &["sleep", "300"]);
        let exec: Vec<String> = ["tasks", "exec", "-t", "--exec-id", "t1", &b]
            .into_iter()
            .chain(sh(&format!("tty; {size}; echo TERM=$TERM; exit 4")))
            .map(String::from)
            .collect();
        let out = s.ctr_in_terminal(&script, (80, 24), &exec);
        o.push_str(&format!(
            "exec -t:\n{}",
            show(&b, &out).replace("\r\n", "\n")
        ));
        s.remove(&b);
        o
    });
    check(
        "tty",
        &obs,
        lines(&[
            "exit=3",
            "/dev/pts/0",
            "27 91",
            "TERM=xterm",
            "'/dev/console' 88:0",
            "exit=4",
            "24 80",
        ]),
    );
}
