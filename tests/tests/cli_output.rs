//! berthctl's machine output against a real berthd: every listing's
//! `--format json` parses with typed values (sizes in bytes, times in RFC
//! 3339, event payloads as objects), and events read as fields in table
//! mode. The operator's hygiene (errors, logs, systemd) is in
//! cli_hygiene.rs. Root only.

use berth_tests::*;
use serde_json::Value;
use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn daemon() -> Option<Daemon> {
    if !require_root("running berthd") {
        return None;
    }
    Some(Daemon::start())
}

/// `berthctl --format json ARGS` parsed, or a failure showing the text.
fn json(d: &Daemon, args: &[&str]) -> Value {
    let mut v = vec!["--format", "json"];
    v.extend_from_slice(args);
    let out = ok(&args.join(" "), d.berthctl("default", &v));
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("berthctl {args:?} --format json is not JSON ({e}):\n{out}"))
}

/// Keys that hold a count of bytes or another number.
const NUMBERS: &[&str] = &["size", "pid", "exit_status", "inodes", "reclaimed_bytes"];

fn is_time_key(k: &str) -> bool {
    k.ends_with("_at") || ["created", "updated", "timestamp", "Created", "CreatedAt"].contains(&k)
}

/// A size in words ("2.0 MiB") where a number belongs.
fn looks_like_human_size(s: &str) -> bool {
    let Some((n, unit)) = s.split_once(' ') else {
        return false;
    };
    n.parse::<f64>().is_ok() && ["B", "KiB", "MiB", "GiB", "TiB"].contains(&unit)
}

/// Rust Debug syntax (`SnapshotPrepare { key: …`, `Timestamp { seconds`).
fn looks_like_debug(s: &str) -> bool {
    s.match_indices(" { ").any(|(i, _)| {
        let word = s[..i].rsplit([' ', '(', '[']).next().unwrap_or("");
        let after = &s[i + 3..];
        let field = after.split(':').next().unwrap_or("");
        word.starts_with(|c: char| c.is_ascii_uppercase())
            && after.contains(':')
            && !field.is_empty()
            && field.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

/// Every problem with the types under `v`: numbers that are text, times
/// that are not RFC 3339, sizes in words, Debug strings.
fn type_problems(path: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                if NUMBERS.contains(&k.as_str()) && !x.is_number() && !x.is_null() {
                    out.push(format!("{p} should be a number: {x}"));
                }
                if is_time_key(k) {
                    match x {
                        Value::Null => {}
                        Value::String(s) => {
                            if let Err(e) = chrono::DateTime::parse_from_rfc3339(s) {
                                out.push(format!("{p} is not RFC 3339 ({e}): {s}"));
                            }
                        }
                        other => out.push(format!("{p} should be an RFC 3339 time: {other}")),
                    }
                }
                type_problems(&p, x, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                type_problems(&format!("{path}[{i}]"), x, out);
            }
        }
        Value::String(s) if looks_like_human_size(s) => {
            out.push(format!("{path} is a size in words: {s}"))
        }
        Value::String(s) if looks_like_debug(s) => {
            out.push(format!("{path} is Rust Debug text: {s}"))
        }
        _ => {}
    }
}

fn assert_typed(what: &str, v: &Value) {
    let mut problems = Vec::new();
    type_problems("", v, &mut problems);
    assert!(
        problems.is_empty(),
        "{what}:\n{}\n{v:#}",
        problems.join("\n")
    );
}

/// A `berthctl events` running in the background, its lines collected.
struct Events {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Events {
    fn start(d: &Daemon, format: &str) -> Events {
        let mut child = d
            .berthctl_command("default", &["--format", format, "events"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn berthctl events");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l2.lock().expect("lines").push(line);
            }
        });
        Events { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Waits until a line satisfies `f` (10 s at most).
    fn wait_for(&self, f: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.lines().iter().any(|l| f(l)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Subscribes both event printers and waits until both see the daemon's
/// events (a namespace made for the purpose), so nothing later is missed.
fn subscribed(d: &Daemon) -> (Events, Events) {
    let ej = Events::start(d, "json");
    let et = Events::start(d, "table");
    for i in 0.. {
        let ns = format!("probe{i}");
        ok(
            "probe",
            d.berthctl("default", &["namespaces", "create", &ns]),
        );
        if ej.wait_for(|l| l.contains(&ns)) && et.wait_for(|l| l.contains(&ns)) {
            break;
        }
        assert!(i < 5, "berthctl events saw nothing");
    }
    (ej, et)
}

#[test]
fn every_listing_prints_typed_json() {
    let Some(d) = daemon() else {
        return;
    };
    let (ej, et) = subscribed(&d);

    // import --format json: the images made, progress kept off stdout.
    let fixture = fixtures().join("busybox-docker.tar");
    let imported = json(&d, &["images", "import", fixture.to_str().unwrap()]);
    assert_typed("images import", &imported);
    assert_eq!(
        imported[0]["name"], "docker.io/library/busybox:latest",
        "{imported:#}"
    );
    assert!(imported[0]["size"].as_u64().unwrap() > 0, "{imported:#}");

    // Something of every kind to list.
    ok(
        "namespace",
        d.berthctl("default", &["namespaces", "create", "outns", "team=ops"]),
    );
    ok(
        "lease",
        d.berthctl("default", &["leases", "create", "--id", "outlease", "a=b"]),
    );
    ok(
        "volume",
        d.berthctl("default", &["volume", "create", "outvol"]),
    );
    let snaps = json(&d, &["snapshots", "ls"]);
    let top = snaps[0]["key"]
        .as_str()
        .expect("a committed layer")
        .to_string();
    ok(
        "prepare",
        d.berthctl("default", &["snapshots", "prepare", "outsnap", &top]),
    );
    ok(
        "run -d",
        d.berthctl(
            "default",
            &["run", "-d", "--name", "outweb", "busybox", "sleep", "300"],
        ),
    );

    let images = json(&d, &["images", "ls"]);
    assert_typed("images ls", &images);
    let size = images[0]["size"].as_u64();
    assert!(
        size.is_some_and(|s| s > 1 << 20),
        "size in bytes: {images:#}"
    );
    assert_eq!(images[0]["platforms"], serde_json::json!(["linux/amd64"]));

    let tree = json(&d, &["snapshots", "tree"]);
    assert_typed("snapshots tree", &tree);
    let root = tree
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["key"] == top.as_str())
        .unwrap_or_else(|| panic!("{top} is a root: {tree:#}"));
    let kids: Vec<&str> = root["children"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["key"].as_str())
        .collect();
    assert!(
        kids.contains(&"outsnap") && kids.contains(&"outweb"),
        "{tree:#}"
    );

    let tasks = json(&d, &["tasks", "ls"]);
    assert_typed("tasks ls", &tasks);
    let web = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "outweb")
        .unwrap_or_else(|| panic!("{tasks:#}"));
    assert!(web["pid"].as_u64().unwrap() > 0, "{web}");
    assert_eq!(web["status"], "RUNNING");
    assert_eq!(web["exited_at"], Value::Null, "not exited yet: {web}");

    for args in [
        &["images", "inspect", "busybox"][..],
        &["content", "ls"],
        &["snapshots", "ls"],
        &["snapshots", "usage"],
        &["snapshots", "info", "outsnap"],
        &["leases", "ls"],
        &["namespaces", "ls"],
        &["tasks", "ps", "outweb"],
        &["tasks", "metrics", "outweb"],
        &["containers", "ls"],
        &["containers", "info", "outweb"],
        &["volume", "ls"],
        &["volume", "inspect", "outvol"],
        &["network", "ls"],
        &["plugins", "ls"],
        &["version"],
        // The container commands in docker's grammar.
        &["ps", "-a"],
        &["inspect", "outweb"],
        &["top", "outweb"],
        &["stats", "--no-stream", "outweb"],
        &["system", "df"],
        &["network", "inspect", "bridge"],
    ] {
        let v = json(&d, args);
        assert_typed(&args.join(" "), &v);
    }
    let content = json(&d, &["content", "ls"]);
    assert!(
        content
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["size"].is_u64()),
        "{content:#}"
    );
    let usage = json(&d, &["snapshots", "usage", &top]);
    assert!(usage[0]["size"].is_u64(), "{usage:#}");

    // Events: one JSON object per line, the payload decoded.
    assert!(
        ej.wait_for(|l| l.contains("/containers/create") && l.contains("outweb")),
        "{:#?}",
        ej.lines()
    );
    let mut prepared = false;
    for line in ej.lines() {
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("event line is not JSON ({e}): {line}"));
        assert_typed("events", &v);
        assert!(v["event"].is_object(), "payload as an object: {line}");
        assert!(v["type"].is_string(), "{line}");
        if v["topic"] == "/snapshot/prepare" && v["event"]["key"] == "outsnap" {
            assert_eq!(v["event"]["parent"], top.as_str(), "{line}");
            prepared = true;
        }
    }
    assert!(
        prepared,
        "no /snapshot/prepare of outsnap: {:#?}",
        ej.lines()
    );

    // Table mode: fields as key=value, never Rust Debug syntax.
    assert!(et.wait_for(|l| l.contains("/containers/create")));
    let table = et.lines();
    assert!(
        table
            .iter()
            .any(|l| l.contains("/snapshot/prepare") && l.contains("key=outsnap")),
        "{table:#?}"
    );
    for l in &table {
        assert!(
            !l.contains("{ ") && !l.contains("Timestamp"),
            "Debug text: {l}"
        );
        let ts = l.split(' ').next().unwrap_or("");
        assert!(
            chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
            "starts with an RFC 3339 time: {l}"
        );
    }

    ok(
        "rm task",
        d.berthctl("default", &["tasks", "rm", "-f", "outweb"]),
    );
    ok(
        "rm container",
        d.berthctl("default", &["containers", "rm", "outweb"]),
    );
}

#[test]
fn the_checker_catches_what_it_looks_for() {
    let bad = serde_json::json!({
        "size": "2.0 MiB",
        "created_at": "Timestamp { seconds: 1, nanos: 0 }",
        "event": "SnapshotPrepare { key: \"j2\", parent: \"\" }",
        "nested": [{"pid": "42", "updated": "yesterday"}],
    });
    let mut p = Vec::new();
    type_problems("", &bad, &mut p);
    assert_eq!(p.len(), 7, "{p:#?}");
    let good = serde_json::json!({
        "size": 2_097_152, "created_at": "2026-12-02T00:00:00Z", "updated_at": null,
        "event": {"key": "j2"}, "cmd": "sh -c 'f() { x; }'",
    });
    let mut p = Vec::new();
    type_problems("", &good, &mut p);
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn push_and_pull_print_json() {
    let Some(reg_bin) = peer("docker-registry") else {
        return;
    };
    let Some(d) = daemon() else {
        return;
    };
    let reg = berth_tests::registry::Registry::start(&reg_bin);
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    let remote = format!("{}/bb:1", reg.host());
    ok(
        "tag",
        d.berthctl("default", &["images", "tag", "busybox", &remote]),
    );
    // push --format json: what went where, one document on stdout.
    let pushed = json(&d, &["images", "push", &remote]);
    assert_typed("images push", &pushed);
    let local = json(&d, &["images", "ls"]);
    let want = local
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == remote.as_str()))
        .map(|i| i["digest"].clone())
        .expect("the tagged image listed");
    assert_eq!(pushed["reference"], remote.as_str(), "{pushed:#}");
    assert_eq!(pushed["image"], remote.as_str(), "{pushed:#}");
    assert_eq!(pushed["digest"], want, "{pushed:#}");
    ok("rm", d.berthctl("default", &["images", "rm", &remote]));
    // Progress goes to stderr: stdout is one JSON document.
    let v = json(&d, &["images", "pull", &remote]);
    assert_typed("images pull", &v);
    assert_eq!(v["name"], remote.as_str(), "{v:#}");
    assert!(v["size"].as_u64().is_some_and(|s| s > 0), "{v:#}");
    assert!(
        v["digest"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:")),
        "{v:#}"
    );
}
