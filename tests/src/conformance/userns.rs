//! Conformance case about user namespaces: `ctr run --uidmap/--gidmap`
//! (ctr remaps a copy of the snapshot to the host ids itself), an exec
//! into such a container, joining its user namespace by path, and the
//! specs runc refuses.

use super::normalise::mountinfo;
use super::{Rt, Suite, both, check, has_line, sh, show};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

/// Container ids 0-65535 are host ids 100000-165535.
const MAP: [&str; 4] = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];

/// What the container's root sees of itself and may do.
const PROBE: &str = "cat /proc/self/uid_map /proc/self/gid_map; \
    echo setgroups=$(cat /proc/self/setgroups); id; \
    grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status; \
    stat -c '%n %u:%g %a %F' / /etc/passwd /proc /sys /dev /dev/null /dev/zero /dev/tty /dev/pts /dev/shm /dev/mqueue; \
    echo x >> /etc/passwd && echo root-owned=writable; \
    mkdir /made && stat -c '%n %u:%g' /made; \
    touch /tmp/f && chown 1000:1000 /tmp/f && stat -c '%n %u:%g' /tmp/f; \
    chown 70000 /tmp/f 2>&1; echo chown-unmapped=$?; \
    mknod /tmp/n c 1 3 2>&1; echo mknod=$?; \
    mount -t tmpfs t /tmp 2>&1; echo mount=$?; \
    echo x > /dev/null && echo null=writable; head -c 4 /dev/zero | wc -c; \
    echo reopened > /dev/stdout; stat -L -c 'stdout %u:%g %a' /proc/self/fd/1; \
    ulimit -Hn; echo ---; cat /proc/self/mountinfo";

/// The lines a host tool reads about process `pid`.
fn host_view(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mut o: String = status
        .lines()
        .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:"))
        .map(|l| format!("host {l}\n"))
        .collect();
    for f in ["uid_map", "gid_map", "setgroups"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
        let words: Vec<&str> = text.split_whitespace().collect();
        o.push_str(&format!("host {f}: {}\n", words.join(" ")));
    }
    o
}

/// The user namespace of `pid`, as `readlink /proc/<pid>/ns/user` shows it.
fn userns_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/user"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The host pids of a task's processes (`ctr tasks ps`).
fn pids(s: &Suite, id: &str) -> Vec<u32> {
    let out = crate::ok("ctr tasks ps", s.ctr(&["tasks", "ps", id]));
    out.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Adds to a spec's `linux` what `patch` holds (a user namespace, maps).
fn with_linux(patch: serde_json::Value) -> impl Fn(&mut serde_json::Value) {
    move |spec| {
        for (k, v) in patch.as_object().into_iter().flatten() {
            if k == "namespaces" {
                let nss = spec["linux"]["namespaces"].as_array_mut();
                nss.expect("namespaces")
                    .extend(v.as_array().cloned().unwrap_or_default());
            } else {
                spec["linux"][k] = v.clone();
            }
        }
    }
}

/// A log every hook of a container appends `<kind> uid=<uid> map=<first
/// line of its uid_map>` to: a host directory anyone may write (the
/// container's users do), bound at the same path into the container, where
/// startContainer runs.
struct HookLog(std::path::PathBuf);

impl HookLog {
    fn new(case: &str, rt: Rt) -> HookLog {
        let d = std::env::temp_dir().join(format!(
            "berth-conf-{case}-{}-{}",
            rt.name(),
            std::process::id()
        ));
        std::fs::create_dir_all(&d).expect("hook log directory");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let log = d.join("log");
        std::fs::write(&log, "").expect("hook log");
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        HookLog(d)
    }

    fn path(&self) -> std::path::PathBuf {
        self.0.join("log")
    }

    fn patch(&self, spec: &mut serde_json::Value) {
        let log = self.path().display().to_string();
        let mut hooks = serde_json::Map::new();
        for k in [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop",
        ] {
            let body = format!(
                "echo \"{k} uid=$(id -u) map=$(head -n 1 /proc/self/uid_map | tr -s ' ' | sed 's/^ //')\" >> {log}"
            );
            hooks.insert(
                k.to_string(),
                json!([{"path": "/bin/sh", "args": ["sh", "-c", body],
                        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "timeout": 20}]),
            );
        }
        spec["hooks"] = serde_json::Value::Object(hooks);
        spec["mounts"].as_array_mut().expect("mounts").push(json!({
            "destination": self.0, "type": "bind", "source": self.0,
            "options": ["rbind", "rw"],
        }));
    }
}

impl Drop for HookLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The deliberate difference of docs/compat.md, checked for what each
/// runtime does: runc ignores maps without a user namespace (its check is
/// unreachable from a spec), the built-in runtime refuses them.
fn documented(rt: Rt, what: &str, answer: String) -> String {
    let expected = match rt {
        Rt::Builtin => "create refused",
        Rt::Runc => "ran",
    };
    if what == "maps without a user namespace" && answer == expected {
        "as docs/compat.md says".into()
    } else {
        answer
    }
}

pub fn user_namespaces(s: &Suite) {
    // The container's root (host uid 100000) passes through the daemon's
    // directories to its rootfs, as through /run/berth (0711); the test's
    // temp directory is 0700.
    std::fs::set_permissions(s.d.dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("open the daemon's directory to others");
    let maps = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    // ctr remaps the image's snapshot once per map and reuses it while a
    // container holds it; held here, so the runtimes' containers never
    // race to make it again (each would fail on the other's).
    let warm = format!("conf-{}-warm", s.case.replace('_', "-"));
    s.run_detached(Rt::Runc, &warm, &MAP, &["sleep", "600"]);
    let obs = both(|rt| {
        let id = |n| s.id(rt, n);
        let mut o = String::new();
        // The init.
        let a = id(1);
        let out = show(&a, &s.run(rt, &a, &MAP, &sh(PROBE)));
        let (head, mi) = out.split_once("---\n").unwrap_or((&out, ""));
        o.push_str(&format!("run:\n{head}{}", mountinfo(mi)));
        // From the host, an exec into it, and a second container joining
        // its user namespace by path.
        let b = id(2);
        let mut flags = MAP.to_vec();
        flags.extend(["--env", "FOO=init"]);
        s.run_detached(rt, &b, &flags, &["sleep", "300"]);
        let (pid, _) = s.task(&b).expect("running");
        o.push_str(&format!("init from the host:\n{}", host_view(pid)));
        let ns = userns_of(pid);
        let exec_probe = "cat /proc/self/uid_map; id; grep -E '^(CapEff|CapBnd):' /proc/self/status; \
            [ $(readlink /proc/self/ns/user) = $(readlink /proc/1/ns/user) ] && echo user shared with init; \
            echo FOO=$FOO; echo reopened > /dev/stderr";
        let mut args = vec!["tasks", "exec", "--exec-id", "e1", &b];
        args.extend(sh(exec_probe));
        o.push_str(&format!("exec:\n{}", show(&b, &s.ctr(&args))));
        let args = [
            "tasks",
            "exec",
            "-d",
            "--exec-id",
            "e2",
            "--user",
            "1000:1000",
            &b,
            "sleep",
            "300",
        ];
        crate::ok("ctr tasks exec -d", s.ctr(&args));
        let mut execs: Vec<String> = pids(s, &b)
            .into_iter()
            .filter(|p| *p != pid)
            .map(|p| format!("{}{}", host_view(p), userns_of(p) == ns))
            .collect();
        execs.sort();
        o.push_str(&format!(
            "exec --user 1000:1000 from the host:\n{}\n",
            execs.join("\n")
        ));
        let c = id(3);
        let with_ns = format!("user:/proc/{pid}/ns/user");
        let mut flags = MAP.to_vec();
        flags.extend(["--with-ns", &with_ns]);
        let joined = "cat /proc/self/uid_map; id; readlink /proc/self/ns/user";
        let out = show(&c, &s.run(rt, &c, &flags, &sh(joined)));
        o.push_str(&format!(
            "joined by path:\n{}",
            out.replace(&ns, "<the init's>")
        ));
        s.remove(&b);
        // What runc refuses.
        let refusals = [
            (
                "a user namespace without maps",
                json!({"namespaces": [{"type": "user"}]}),
            ),
            (
                "maps without a user namespace",
                json!({"uidMappings": maps, "gidMappings": maps}),
            ),
            (
                "maps leaving root unmapped",
                json!({"namespaces": [{"type": "user"}],
                       "uidMappings": [{"containerID": 1, "hostID": 100001, "size": 100}],
                       "gidMappings": maps}),
            ),
        ];
        for (n, (what, patch)) in (4..).zip(refusals) {
            let c = id(n);
            s.create_patched(rt, &c, &[], &["true"], &with_linux(patch));
            let answer = s.create_and_start(&c);
            o.push_str(&format!("{what}: {}\n", documented(rt, what, answer)));
            s.remove(&c);
        }
        // sysfs cannot be mounted in a user namespace without its own
        // network namespace: runc fails the create, and so must we.
        let c = id(7);
        let mut flags = MAP.to_vec();
        flags.push("--net-host");
        let out = s.run(rt, &c, &flags, &["true"]);
        let said = String::from_utf8_lossy(&out.stderr).contains("sysfs");
        o.push_str(&format!(
            "--net-host: exit={} names sysfs={said}\n",
            super::normalise::code(&out)
        ));
        let _ = s.ctr(&["containers", "rm", &c]);
        // `--remap-labels` asks the snapshotter to shift ownership, which
        // berth's do not: refused at prepare, naming what to do, nothing
        // left (containerd 1.6's overlayfs ignored the labels).
        let c = id(19);
        let mut flags = MAP.to_vec();
        flags.push("--remap-labels");
        let out = s.run(rt, &c, &flags, &["true"]);
        let said = String::from_utf8_lossy(&out.stderr).contains("does not remap ids");
        let left = s.ctr(&["containers", "info", &c]).status.success();
        o.push_str(&format!(
            "--remap-labels: exit={} refused by the snapshotter={said} container left={left}\n",
            super::normalise::code(&out)
        ));
        if left {
            s.remove(&c);
        }
        // A rootfs the mapped root does not own: it cannot make its mount
        // points, and the create fails (ctr remaps only for `run`).
        let c = id(8);
        let userns =
            json!({"namespaces": [{"type": "user"}], "uidMappings": maps, "gidMappings": maps});
        s.create_patched(rt, &c, &[], &["true"], &with_linux(userns));
        o.push_str(&format!(
            "rootfs not remapped: {}\n",
            s.create_and_start(&c)
        ));
        s.remove(&c);
        // Without the mount point it cannot make (busybox has no /run), a
        // spec ctr has no flags for: a new cgroup namespace, made inside
        // the user namespace, and a user of its own with a group.
        // Its hooks log who runs them, and in which user namespace: the
        // shim's on the host, createContainer and startContainer in the
        // container (the latter as its user, just before the program).
        let c = id(10);
        let hooks = HookLog::new(s.case, rt);
        let patch = |spec: &mut serde_json::Value| {
            let nss = json!({"namespaces": [{"type": "user"}, {"type": "cgroup"}],
                "uidMappings": maps, "gidMappings": maps});
            with_linux(nss)(spec);
            if let Some(m) = spec["mounts"].as_array_mut() {
                m.retain(|m| m["destination"] != "/run");
            }
            spec["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10]});
            hooks.patch(spec);
        };
        let probe = "id; grep -E '^(Uid|Gid|Groups|CapEff):' /proc/self/status; \
            grep -E '^(0::|[0-9]+:memory:)' /proc/self/cgroup";
        let out = s.run_patched(rt, &c, &[], &sh(probe), &patch);
        o.push_str(&format!(
            "own user and cgroup namespace:\n{}",
            show(&c, &out)
        ));
        let logged = std::fs::read_to_string(hooks.path()).unwrap_or_default();
        o.push_str(&format!("its hooks:\n{logged}"));
        // The shim's cgroup namespace by path, joined before the user
        // namespace is made (the user namespace could not join it).
        let c = id(11);
        let with_ns = format!("cgroup:/proc/{}/ns/cgroup", std::process::id());
        let mut flags = MAP.to_vec();
        flags.extend(["--with-ns", &with_ns]);
        let probe = "[ $(readlink /proc/self/ns/cgroup) = $CG ] && echo cgroup joined; \
            grep -E '^0::' /proc/self/cgroup";
        let cg = format!(
            "CG={}",
            std::fs::read_link("/proc/self/ns/cgroup")
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        flags.extend(["--env", &cg]);
        let out = show(&c, &s.run(rt, &c, &flags, &sh(probe)));
        o.push_str(&format!(
            "cgroup namespace by path:\n{}",
            out.replace(&c, "<id>")
        ));
        // A terminal: made inside, owned by the container's root.
        if let Some(script) = crate::peer("script") {
            let c = id(9);
            let mut flags = MAP.to_vec();
            flags.push("-t");
            let tty = "stat -c '%n %u:%g %a' $(tty) /dev/console /dev/pts/ptmx";
            let run = s.run_args(rt, "--rm", &flags, &c, &sh(tty));
            let out = s.ctr_in_terminal(&script, (80, 24), &run);
            let text = show(&c, &out).replace("\r\n", "\n").replace("^@", "");
            o.push_str(&format!("run -t:\n{text}"));
        }
        o
    });
    s.remove(&warm);
    check("user_namespaces", &obs, |o| {
        let mut p = Vec::new();
        let (run, rest) = o.split_once("init from the host:\n").unwrap_or((o, ""));
        for want in [
            "exit=0",
            "         0     100000      65536",
            "setgroups=allow",
            "uid=0(root) gid=0(root) groups=0(root)",
            "Uid:\t0\t0\t0\t0",
            "Gid:\t0\t0\t0\t0",
            "CapEff:\t00000000a80425fb",
            "CapBnd:\t00000000a80425fb",
            "/ 0:0 755 directory",
            "/etc/passwd 0:0 644 regular file",
            // Owned by the host's root, which is nobody in here.
            "/proc 65534:65534 555 directory",
            "/dev/null 65534:65534 666 character special file",
            "/dev/pts 0:0 755 directory",
            "root-owned=writable",
            "/made 0:0",
            "/tmp/f 1000:1000",
            "chown: /tmp/f: Invalid argument",
            "mknod: /tmp/n: Operation not permitted",
            "mknod=1",
            "mount=1",
            "null=writable",
            "4",
            // The pipes are the container's root's (ctr's IoUid/IoGid).
            "reopened",
            "stdout 0:0 600",
            "/proc on / root=/ proc proc rw,nosuid,nodev,noexec,relatime | rw",
            "/sys on / root=/ sysfs sysfs ro,nosuid,nodev,noexec,relatime | ro",
        ] {
            p.extend(has_line(run, want).map(|e| format!("run: {e}")));
        }
        if !run
            .lines()
            .any(|l| l.starts_with("/dev/null on /dev root=/null devtmpfs"))
        {
            p.push("run: /dev/null is not the host's node bound on".into());
        }
        for want in [
            "host Uid:\t100000\t100000\t100000\t100000",
            "host Gid:\t100000\t100000\t100000\t100000",
            "host uid_map: 0 100000 65536",
            "host gid_map: 0 100000 65536",
            "host setgroups: allow",
            "uid=0(root) gid=0(root) groups=0(root)",
            "CapEff:\t00000000a80425fb",
            "user shared with init",
            "FOO=init",
            "reopened",
            "host Uid:\t101000\t101000\t101000\t101000",
            "host Gid:\t101000\t101000\t101000\t101000",
            "true",
            "         0     100000      65536",
            "<the init's>",
            "a user namespace without maps: create refused",
            "maps without a user namespace: as docs/compat.md says",
            "maps leaving root unmapped: create refused",
            "--net-host: exit=1 names sysfs=true",
            "--remap-labels: exit=1 refused by the snapshotter=true container left=false",
            "rootfs not remapped: create refused",
            "uid=1000 gid=1000 groups=10",
            "Uid:\t1000\t1000\t1000\t1000",
            "Groups:\t10 ",
            "CapEff:\t0000000000000000",
            "0::/",
            "prestart uid=0 map=0 0 4294967295",
            "createRuntime uid=0 map=0 0 4294967295",
            "createContainer uid=0 map=0 100000 65536",
            "poststart uid=0 map=0 0 4294967295",
            "startContainer uid=1000 map=0 100000 65536",
            "poststop uid=0 map=0 0 4294967295",
            "cgroup joined",
        ] {
            p.extend(has_line(rest, want));
        }
        p
    });
}
