//! berthctl's machine output and the operator's daily hygiene, against a
//! real berthd: every listing's `--format json` parses with typed values
//! (sizes in bytes, times in RFC 3339, event payloads as objects), events
//! read as fields in table mode, berthd logs without colour codes and tells
//! systemd when it serves, install.sh installs built binaries without
//! cargo, and the error paths say what happened. Root only.

use berth_tests::*;
use serde_json::Value;
use std::io::BufRead;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
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
fn berthd_logs_carry_no_colour_codes() {
    let Some(d) = daemon() else {
        return;
    };
    // The harness sends berthd's stderr to a file, at debug level.
    ok("images ls", d.berthctl("default", &["images", "ls"]));
    let log = d.log();
    assert!(log.contains("berthd ready"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "ANSI escape codes in a log file:\n{log}"
    );
}

/// A berthd beside `d` (own root, state and socket) to stop and reap.
struct Second(Child);

impl Drop for Second {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn berthd_tells_systemd_when_it_serves() {
    let Some(d) = daemon() else {
        return;
    };
    let dir = d.dir.path().join("second");
    std::fs::create_dir_all(&dir).unwrap();
    let notify = dir.join("notify.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let sock = dir.join("b.sock");
    let log = std::fs::File::create(dir.join("berthd.log")).unwrap();
    let child = d
        .berthd_on(&dir.join("root"), &dir.join("state"), &sock)
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn berthd");
    let mut second = Second(child);
    let mut buf = [0u8; 512];
    let n = rx
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no sd_notify datagram in 30s ({e})"));
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(msg.trim_end(), "READY=1");
    // Ready means serving: the API answers at once.
    let out = ok(
        "version",
        berthctl_at(&sock, &dir, "default", &["version"])
            .output()
            .unwrap(),
    );
    assert!(out.contains("Server"), "{out}");

    let st = terminate(&mut second.0, Duration::from_secs(10)).expect("berthd stops on SIGTERM");
    assert!(st.success(), "{st}");
    let n = rx.recv(&mut buf).expect("STOPPING=1 before exit");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim_end(), "STOPPING=1");
    let unit = std::fs::read_to_string(repo_root().join("deploy/berthd.service")).unwrap();
    assert!(unit.lines().any(|l| l == "Type=notify"), "{unit}");
}

#[test]
fn install_sh_installs_built_binaries_without_cargo() {
    let tmp = tempfile::tempdir().unwrap();
    // A cargo that fails: installing must not build.
    let fake = tmp.path().join("fakebin");
    std::fs::create_dir(&fake).unwrap();
    std::fs::write(
        fake.join("cargo"),
        "#!/bin/sh\necho cargo was run >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        fake.join("cargo"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let stage = tmp.path().join("stage");
    let bins = bin("berthd").parent().unwrap().to_path_buf();
    let out = Command::new("bash")
        .arg(repo_root().join("deploy/install.sh"))
        .arg("--bin-dir")
        .arg(&bins)
        .env("DESTDIR", &stage)
        .env("PATH", format!("{}:/usr/bin:/bin", fake.display()))
        .output()
        .unwrap();
    ok("install.sh --bin-dir", out);
    for f in [
        "usr/local/bin/berthd",
        "usr/local/bin/berthctl",
        "usr/local/bin/containerd-shim-berth-v2",
        "etc/berth/config.toml",
        "etc/systemd/system/berthd.service",
    ] {
        assert!(stage.join(f).is_file(), "{f} not installed");
    }
    assert_eq!(
        std::fs::read(stage.join("usr/local/bin/berthctl")).unwrap(),
        std::fs::read(bins.join("berthctl")).unwrap()
    );
    // Without --bin-dir or --no-build it builds, with the fake cargo: fails.
    let out = Command::new("bash")
        .arg(repo_root().join("deploy/install.sh"))
        .env("DESTDIR", tmp.path().join("stage2"))
        .env("PATH", format!("{}:/usr/bin:/bin", fake.display()))
        .output()
        .unwrap();
    let err = fails("install.sh building", out);
    assert!(err.contains("cargo was run"), "{err}");
}

/// berthctl copied where an unprivileged user can run it (the build tree
/// may sit under a private home).
fn berthctl_for_nobody(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = dir.join("berthctl");
    std::fs::copy(bin("berthctl"), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn errors_say_what_happened_and_what_to_do() {
    let Some(d) = daemon() else {
        return;
    };
    // No daemon vs. not allowed on the socket.
    let missing = d.dir.path().join("nothing-here.sock");
    let err = fails(
        "no daemon",
        berthctl_at(&missing, d.dir.path(), "default", &["images", "ls"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains(&format!(
            "no berthd at {}: is it running?",
            missing.display()
        )),
        "{err}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let ctl = berthctl_for_nobody(tmp.path());
    let err = fails(
        "as nobody",
        Command::new(&ctl)
            .arg("--address")
            .arg(&d.sock)
            .args(["images", "ls"])
            .env_remove("BERTH_ADDRESS")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap(),
    );
    assert!(
        err.contains(&format!(
            "permission denied on {}: run as root",
            d.sock.display()
        )),
        "{err}"
    );

    // import says why it cannot open the file.
    let err = fails(
        "import missing",
        d.berthctl_command("default", &["images", "import", "missing.tar"])
            .current_dir(d.dir.path())
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("open missing.tar: No such file or directory") && !err.contains("os error"),
        "{err}"
    );

    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    // -t with a pipe on stdin: a usage error at once, not a hang.
    let out = output_within(
        d.berthctl_command("default", &["run", "--rm", "-it", "busybox", "sh"]),
        b"echo x\n",
        Duration::from_secs(20),
    )
    .expect("run -it with a pipe for stdin hung");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the input device is not a TTY"), "{err}");
    assert!(
        ok(
            "containers ls",
            d.berthctl("default", &["containers", "ls", "-q"])
        )
        .trim()
        .is_empty(),
        "nothing made"
    );

    // Short names, as run and tag take them.
    let out = json(&d, &["images", "inspect", "busybox"]);
    assert_eq!(out["name"], "docker.io/library/busybox:latest");
    let tar = d.dir.path().join("bb.tar");
    ok(
        "export busybox",
        d.berthctl(
            "default",
            &["images", "export", tar.to_str().unwrap(), "busybox"],
        ),
    );
    assert!(std::fs::metadata(&tar).unwrap().len() > 1 << 20);
    let mnt = d.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    ok(
        "mount busybox",
        d.berthctl("default", &["images", "mount", "busybox", m]),
    );
    let mounted = mnt.join("bin/busybox").exists();
    ok("unmount", d.berthctl("default", &["images", "unmount", m]));
    assert!(mounted, "the image's files at the mount point");

    // A failed export leaves no file: a missing image, a missing blob, and
    // an export interrupted half-way.
    let out_tar = d.dir.path().join("out.tar");
    let o = out_tar.to_str().unwrap();
    let err = fails(
        "export missing",
        d.berthctl("default", &["images", "export", o, "nosuch"]),
    );
    assert!(err.contains("nosuch"), "{err}");
    assert!(!out_tar.exists(), "export of a missing image left {o}");
    interrupted_export_leaves_nothing(&d);
    let inspect = json(&d, &["images", "inspect", "busybox"]);
    let layer = inspect["manifest"]["layers"][0]["digest"].as_str().unwrap();
    ok(
        "content rm",
        d.berthctl("default", &["content", "rm", layer]),
    );
    let err = fails(
        "export without a layer",
        d.berthctl("default", &["images", "export", o, "busybox"]),
    );
    assert!(err.contains(layer), "{err}");
    assert!(!out_tar.exists(), "a failed export left {o}");

    ok(
        "rm busybox",
        d.berthctl("default", &["images", "rm", "busybox"]),
    );
    assert!(
        ok("images ls", d.berthctl("default", &["images", "ls", "-q"]))
            .trim()
            .is_empty()
    );
}

/// Exports into a FIFO nobody reads (berthctl blocks once the pipe is
/// full), interrupts it, and checks the output is gone.
fn interrupted_export_leaves_nothing(d: &Daemon) {
    let fifo = d.dir.path().join("slow.tar");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Held open for reading, never read: the writer stalls, not fails.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let mut child = d
        .berthctl_command(
            "default",
            &["images", "export", fifo.to_str().unwrap(), "busybox"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Until the pipe is full (64 KiB): the export is under way.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&reader),
                libc::FIONREAD,
                &mut n,
            )
        };
        if n >= 60_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the export never filled the pipe ({n} bytes)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child by pid, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("an interrupted export did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    assert_eq!(st.code(), Some(130), "{st} {err}");
    assert!(
        !fifo.exists(),
        "the interrupted export left its output: {err}"
    );
    drop(reader);
}
