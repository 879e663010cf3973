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

/// `linux.rootfsPropagation`: the propagation fields of the container's
/// `/` in its mountinfo (peer group numbers masked), or only the exit
/// status of a create that fails (the messages differ). `rshared` is
/// refused by the built-in runtime (docs/compat.md).
pub fn rootfs_propagation(s: &Suite) {
    let probe = sh(
        "awk '$5 == \"/\" { for (i = 7; $i != \"-\"; i++) printf \"%s \", $i; print \"end\" }' /proc/self/mountinfo | sed 's/:[0-9]*/:N/g'",
    );
    let values = ["rprivate", "private", "rslave", "runbindable"];
    let obs = both(|rt| {
        let mut o = String::new();
        for (n, v) in (1..).zip(values) {
            let id = s.id(rt, n);
            let patch = |spec: &mut Value| spec["linux"]["rootfsPropagation"] = json!(v);
            let out = s.run_patched(rt, &id, &[], &probe, &patch);
            let shown = if out.status.success() {
                show(&id, &out)
            } else {
                format!("failed ({})\n", super::normalise::code(&out))
            };
            o.push_str(&format!("{v}: {shown}"));
        }
        o
    });
    check("rootfs_propagation", &obs, |o| {
        ["rprivate: exit=0", "private: exit=0", "rslave: exit=0"]
            .iter()
            .filter_map(|l| has_line(o, l))
            .chain(has_line(o, "end"))
            .chain((!o.contains("runbindable: failed")).then(|| "runbindable ran".to_string()))
            .collect()
    });
}
