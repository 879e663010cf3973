//! Conformance cases about what runs around the container's program: OCI
//! hooks (every kind, their order, argv, env and the state on stdin) and
//! `linux.sysctl`.

use super::{Rt, Suite, both, check, has_line, sh, show};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Every hook kind, in the order runc runs them for a container that is
/// created, started, exits and is deleted: poststart at the end of create,
/// so before startContainer.
const KINDS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "poststart",
    "startContainer",
    "poststop",
];

/// Each hook appends `<kind> <argv0> status=<status> <pid|nopid> <id> env=`
/// to `log`; it is a host path bound at the same place into the container,
/// where startContainer runs.
fn hooks_patch<'a>(log: &'a str, fail: Option<&'a str>) -> impl Fn(&mut Value) + 'a {
    move |spec: &mut Value| {
        let script = format!(
            "s=$(cat); st=$(echo \"$s\" | sed -n 's/.*\"status\":\"\\([a-z]*\\)\".*/\\1/p'); \
             p=nopid; echo \"$s\" | grep -q '\"pid\":[1-9]' && p=pid; \
             echo \"$1 $0 status=$st $p $(echo \"$s\" | grep -o '\"id\":\"[^\"]*\"') env=$HOOKENV\" >> {log}"
        );
        let mut hooks = serde_json::Map::new();
        for k in KINDS {
            let body = if fail == Some(k) {
                format!("{script}; echo hook-{k}-out; echo hook-{k}-says-no >&2; exit 7")
            } else {
                script.clone()
            };
            hooks.insert(
                k.to_string(),
                json!([{
                    "path": "/bin/sh",
                    "args": ["sh", "-c", body, "argv0x", k],
                    "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOOKENV=given"],
                    "timeout": 20,
                }]),
            );
        }
        spec["hooks"] = Value::Object(hooks);
        let dir = std::path::Path::new(log).parent().expect("a directory");
        spec["mounts"].as_array_mut().expect("mounts").push(json!({
            "destination": dir, "type": "bind", "source": dir,
            "options": ["rbind", "rw"],
        }));
    }
}

/// A host directory for one runtime's hook logs, removed afterwards.
struct LogDir(PathBuf);

impl LogDir {
    fn new(case: &str, rt: Rt) -> LogDir {
        let d = std::env::temp_dir().join(format!(
            "berth-conf-{case}-{}-{}",
            rt.name(),
            std::process::id()
        ));
        std::fs::create_dir_all(&d).expect("hook log directory");
        LogDir(d)
    }

    fn log(&self, n: u32) -> String {
        self.0.join(format!("log{n}")).display().to_string()
    }

    fn read(&self, n: u32, id: &str) -> String {
        std::fs::read_to_string(self.log(n))
            .unwrap_or_else(|e| format!("<{e}>\n"))
            .replace(id, "<id>")
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("remove {}: {e}", self.0.display());
        }
    }
}

pub fn hooks(s: &Suite) {
    let obs = both(|rt| {
        let dir = LogDir::new("hooks", rt);
        let (a, b) = (s.id(rt, 1), s.id(rt, 2));
        // Created, started, exits, deleted: every kind runs.
        let (log_a, log_b) = (dir.log(1), dir.log(2));
        let ran = show(
            &a,
            &s.run_patched(rt, &a, &[], &sh("echo ran"), &hooks_patch(&log_a, None)),
        );
        // A failing createRuntime hook fails the create, and nothing after
        // it runs but poststop: the runtime deletes what it made.
        s.create_patched(
            rt,
            &b,
            &[],
            &sh("true"),
            &hooks_patch(&log_b, Some("createRuntime")),
        );
        let (failed, why) = s.create_and_start_why(&b);
        if s.ctr(&["containers", "info", &b]).status.success() {
            s.remove(&b);
        }
        // What the client hears names the failure and carries the hook's
        // output (the wording differs between the runtimes).
        let why = why.unwrap_or_default();
        let yes = |b: bool| if b { "yes" } else { "no" };
        let said = |t: &str| yes(why.contains(t));
        format!(
            "run:\n{ran}hooks:\n{}failing createRuntime: {failed}\n\
             error has exit status 7: {}\nerror has stdout: {}\nerror has stderr: {}\nhooks:\n{}",
            dir.read(1, &a),
            yes(why.contains("exit status 7") || why.contains("exit status: 7")),
            said("hook-createRuntime-out"),
            said("hook-createRuntime-says-no"),
            dir.read(2, &b)
        )
    });
    check("hooks", &obs, |o| {
        let mut p = Vec::new();
        let (run, failed) = o.split_once("failing createRuntime").unwrap_or((o, ""));
        let kinds: Vec<&str> = run
            .lines()
            .filter_map(|l| l.split_once(" argv0x ").map(|(k, _)| k))
            .collect();
        if kinds != KINDS {
            p.push(format!("hooks ran as {kinds:?}, not {KINDS:?}"));
        }
        for (k, st) in [
            ("prestart", "creating"),
            ("createRuntime", "creating"),
            ("createContainer", "creating"),
            ("poststart", "created"),
            ("startContainer", "created"),
            ("poststop", "stopped"),
        ] {
            // The container's pid while there is one.
            let pid = if k == "poststop" { "nopid" } else { "pid" };
            let line = format!("{k} argv0x status={st} {pid} \"id\":\"<id>\" env=given");
            p.extend(has_line(run, &line));
        }
        p.extend(has_line(run, "ran"));
        let after: Vec<&str> = failed
            .lines()
            .filter_map(|l| l.split_once(" argv0x ").map(|(k, _)| k))
            .collect();
        if after != ["prestart", "createRuntime", "poststop"] {
            p.push(format!("a failing createRuntime ran {after:?}"));
        }
        p.extend(has_line(failed, ": create refused"));
        for l in [
            "error has exit status 7: yes",
            "error has stdout: yes",
            "error has stderr: yes",
        ] {
            p.extend(has_line(failed, l));
        }
        p
    });
}

pub fn sysctls(s: &Suite) {
    let probe = sh(
        "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/ip_default_ttl",
    );
    let patch = |spec: &mut Value| {
        spec["linux"]["sysctl"] = json!({
            "kernel.shm_rmid_forced": "1",
            "net.ipv4.ip_forward": "1",
            "net.ipv4.ip_default_ttl": "42",
        });
    };
    let obs = both(|rt| {
        let (a, b) = (s.id(rt, 1), s.id(rt, 2));
        let default = show(&a, &s.run(rt, &a, &[], &probe));
        let spec = show(&b, &s.run_patched(rt, &b, &[], &probe, &patch));
        format!("default:\n{default}spec'd:\n{spec}")
    });
    check("sysctls", &obs, |o| {
        let (_, spec) = o.split_once("spec'd:\n").unwrap_or((o, ""));
        if spec == "exit=0\n1\n1\n42\n" {
            vec![]
        } else {
            vec![format!("spec'd sysctls read {spec:?}, not 1, 1, 42")]
        }
    });
}

/// `process.oomScoreAdj` is the init's and, as runc's nsexec writes it for
/// every process it starts, each exec's too (not the shim's own score).
pub fn oom_score_adj(s: &Suite) {
    let patch = |spec: &mut Value| spec["process"]["oomScoreAdj"] = json!(321);
    let obs = both(|rt| {
        let id = s.id(rt, 1);
        s.create_patched(rt, &id, &[], &["sleep", "300"], &patch);
        crate::ok(
            &format!("{}: start {id}", s.case),
            s.ctr(&["tasks", "start", "-d", "--null-io", &id]),
        );
        let host = s
            .task(&id)
            .and_then(|(pid, _)| std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).ok())
            .unwrap_or_default();
        let mut args = vec!["tasks", "exec", "--exec-id", "e1", &id];
        args.extend(sh("cat /proc/1/oom_score_adj /proc/self/oom_score_adj"));
        let exec = show(&id, &s.ctr(&args));
        s.remove(&id);
        format!("init from the host: {host}exec reads init, self:\n{exec}")
    });
    check("oom_score_adj", &obs, |o| {
        let want = "init from the host: 321\nexec reads init, self:\nexit=0\n321\n321\n";
        if o == want {
            vec![]
        } else {
            vec![format!("read {o:?}, want {want:?}")]
        }
    });
}

/// The daemon's state directory bound onto itself and made shared, for one
/// case: the containers' rootfs mounts (the shim makes them in bundles
/// there) are then shared with the host, as on a host whose `/` is shared
/// (systemd's default), so what a runtime does about the rootfs's mount
/// is seen. Unmounted when dropped.
struct SharedState(std::ffi::CString);

impl SharedState {
    fn new(dir: &std::path::Path) -> SharedState {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("no NUL");
        let mount = |flags: libc::c_ulong, what: &str| {
            // SAFETY: mount(2) with valid NUL-terminated paths and no data.
            let r = unsafe {
                libc::mount(
                    c.as_ptr(),
                    c.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                )
            };
            assert_eq!(
                r,
                0,
                "{what} {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            );
        };
        mount(libc::MS_BIND | libc::MS_REC, "bind");
        let guard = SharedState(c.clone());
        mount(libc::MS_SHARED, "make shared");
        guard
    }
}

impl Drop for SharedState {
    fn drop(&mut self) {
        // SAFETY: umount2 with a valid NUL-terminated path.
        if unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!("unmount {:?}: {}", self.0, std::io::Error::last_os_error());
        }
    }
}

/// The peer groups of the host's (this process's) mounts.
pub(super) fn host_groups() -> std::collections::HashSet<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .flat_map(|l| l.split(' ').skip(6).take_while(|f| *f != "-"))
        .filter_map(|f| f.strip_prefix("shared:").map(str::to_string))
        .collect()
}

/// Mounts of the host at or under `dir`.
fn host_mounts_under(dir: &std::path::Path) -> usize {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == d || p.starts_with(&format!("{d}/")))
        .count()
}

/// A mount's propagation fields with each peer group named by whose it
/// is: `host` (a group of the host's mounts: what the container mounts
/// there reaches the host, or the host's mounts reach the container) or
/// `own` (a group of the container's own). A private mount has none.
pub(super) fn normalise_groups(fields: &str, host: &std::collections::HashSet<String>) -> String {
    fields
        .split_whitespace()
        .map(|f| match f.split_once(':') {
            Some((k, n)) => format!("{k}:{}", if host.contains(n) { "host" } else { "own" }),
            None => f.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Values whose result runc 1.4 changed (it sets a shared or unbindable
/// propagation on the new `/` after pivot_root, and its rootfs mount is
/// always made private first; its main branch since makes it a slave for
/// slave values): what an older runc shows for each, given a shared rootfs
/// mount. The built-in runtime does what the newest runc does.
const OLD_RUNC: [(&str, &str); 4] = [
    ("slave", "slave: exit=0 | /: | /proc: | left on host: 0"),
    ("shared", "shared: exit=0 | /: | /proc: | left on host: 0"),
    ("rshared", "rshared: exit=0 | /: | /proc: | left on host: 0"),
    (
        "unbindable",
        "unbindable: exit=0 | /: | /proc: | left on host: 0",
    ),
];

/// `linux.rootfsPropagation`, on a rootfs mount shared with the host: the
/// propagation fields of the running container's `/` and `/proc` (peer
/// groups named as the host's or its own), or only the exit status of a
/// start that fails (the messages differ), and whether any mount is left
/// on the host under the container's bundle (a bind that propagated back).
pub fn rootfs_propagation(s: &Suite) {
    let _shared = SharedState::new(&s.d.state());
    let values = [
        "rprivate",
        "private",
        "rslave",
        "slave",
        "shared",
        "rshared",
        "unbindable",
        "runbindable",
    ];
    // The container's mountinfo and the host's are read at one moment,
    // while the container runs: a peer group's number is only its own
    // while some mount is in the group.
    let observe = |rt: Rt| {
        let mut o = String::new();
        for (n, v) in (1..).zip(values) {
            let id = s.id(rt, n);
            let patch = |spec: &mut Value| spec["linux"]["rootfsPropagation"] = json!(v);
            s.create_patched(rt, &id, &[], &["sleep", "60"], &patch);
            let out = s.ctr(&["tasks", "start", "-d", &id]);
            let shown = if out.status.success() {
                let pid = s.task(&id).map_or(0, |(p, _)| p);
                let inside =
                    std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
                let host = host_groups();
                let field = |point: &str| {
                    inside
                        .lines()
                        .map(|l| l.split(' ').collect::<Vec<_>>())
                        .find(|f| f.get(4) == Some(&point))
                        .map(|f| {
                            let opt: Vec<&str> =
                                f[6..].iter().take_while(|x| **x != "-").copied().collect();
                            normalise_groups(&opt.join(" "), &host)
                        })
                        .unwrap_or_else(|| "<absent>".into())
                };
                let sep = |f: String| if f.is_empty() { f } else { format!(" {f}") };
                format!(
                    "exit=0 | /:{} | /proc:{}",
                    sep(field("/")),
                    sep(field("/proc"))
                )
            } else {
                format!("failed ({})", super::normalise::code(&out))
            };
            s.remove(&id);
            let bundle =
                s.d.state()
                    .join("io.containerd.runtime.v2.task")
                    .join(super::NS)
                    .join(&id);
            let left = host_mounts_under(&bundle);
            o.push_str(&format!("{v}: {shown} | left on host: {left}\n"));
        }
        o
    };
    let (builtin, runc) = both(observe);
    let line = |o: &str, v: &str| -> String {
        o.lines()
            .find(|l| l.starts_with(&format!("{v}: ")))
            .unwrap_or("")
            .to_string()
    };
    // Compared on both: everything where every runc agrees, and for the
    // rest that each runs without leaking a mount to the host or sharing a
    // peer group with it.
    let common = |o: &str| {
        let mut c = String::new();
        for v in values {
            let l = line(o, v);
            if OLD_RUNC.iter().all(|(old, _)| *old != v) {
                c.push_str(&l);
            } else {
                let ran = l.contains("exit=0");
                // A mount in a host peer group propagates to the host.
                let host = l.contains("shared:host");
                let left = l.rsplit_once("left on host: ").map_or("?", |(_, n)| n);
                c.push_str(&format!(
                    "{v}: ran={ran} shared with host={host} left on host: {left}"
                ));
            }
            c.push('\n');
        }
        c
    };
    check(
        "rootfs_propagation",
        &(common(&builtin), common(&runc)),
        |o| {
            [
                "rprivate: exit=0 | /: | /proc: | left on host: 0",
                "private: exit=0 | /: | /proc: | left on host: 0",
                "rslave: exit=0 | /: master:host | /proc: | left on host: 0",
                // Old runc refuses to bind the rootfs, the newest to bind
                // /dev/null over a masked file: both fail, and so do we.
                "runbindable: failed (1) | left on host: 0",
                "slave: ran=true shared with host=false left on host: 0",
                "shared: ran=true shared with host=false left on host: 0",
                "rshared: ran=true shared with host=false left on host: 0",
                "unbindable: ran=true shared with host=false left on host: 0",
            ]
            .iter()
            .filter_map(|l| has_line(o, l))
            .collect()
        },
    );
    // The values runc 1.4 changed: the built-in runtime as the newest
    // runc; runc as itself, new or old.
    let want = [
        "slave: exit=0 | /: master:host | /proc: | left on host: 0",
        "shared: exit=0 | /: shared:own | /proc: | left on host: 0",
        "rshared: exit=0 | /: shared:own | /proc: shared:own | left on host: 0",
        "unbindable: exit=0 | /: unbindable | /proc: | left on host: 0",
    ];
    let mut problems: Vec<String> = want
        .iter()
        .filter_map(|l| has_line(&builtin, l).map(|p| format!("built-in: {p}")))
        .collect();
    for ((v, old), new) in OLD_RUNC.iter().zip(want) {
        let r = line(&runc, v);
        if r == new {
            continue;
        }
        if r == *old {
            eprintln!("conformance rootfs_propagation: runc shows {v} as runc before 1.4 did: {r}");
        } else {
            problems.push(format!("runc: {r:?} is neither {new:?} nor {old:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "OCI conformance case `rootfs_propagation` failed:\n- {}\n\n=== built-in observed:\n{builtin}\n=== runc observed:\n{runc}",
        problems.join("\n- ")
    );
}
