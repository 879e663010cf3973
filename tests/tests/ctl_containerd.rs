//! berthctl against both daemons it speaks to: berthd and a private real
//! containerd 1.6. One scenario holds the assertions and runs against
//! each: imports (OCI and docker archives), images ls/rm/export, run --rm
//! and -d, tasks ls/exec/kill/rm, containers rm, a named snapshotter, and
//! events. containerd 1.6 has no Transfer service, so there berthctl
//! imports and exports client-side, and `images pull` must say it needs
//! berthd. Root only (containers run).

use berth_tests::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the scenario needs of a daemon.
struct Target<'a> {
    /// berthctl against the daemon, in a namespace.
    berthctl: &'a dyn Fn(&str, &[&str]) -> Command,
    /// A directory for files the test writes.
    scratch: &'a Path,
    /// The namespace to work in: one per daemon, as their containers'
    /// cgroups (`/<ns>/<id>`) share the host while the tests run at once.
    ns: &'a str,
    /// Does the daemon serve the Transfer service (berthd) or not (containerd 1.6)?
    transfer: bool,
}

impl Target<'_> {
    fn run(&self, ns: &str, args: &[&str]) -> Output {
        (self.berthctl)(ns, args).output().expect("run berthctl")
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(&format!("berthctl {args:?}"), self.run(self.ns, args))
    }

    /// berthctl with `input` on its stdin.
    fn with_input(&self, args: &[&str], input: &[u8]) -> String {
        // A process that never sees EOF would hang the test: it is ended.
        let limit = Duration::from_secs(30);
        let out =
            output_within((self.berthctl)(self.ns, args), input, limit).unwrap_or_else(|| {
                panic!("berthctl {args:?} did not end within 30s (its process never saw EOF?)")
            });
        ok(&format!("berthctl {args:?} with input"), out)
    }

    fn tasks(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["--format", "json", "tasks", "ls"])).expect("tasks json")
    }

    /// Task `id` as `tasks ls` lists it.
    fn task(&self, id: &str) -> serde_json::Value {
        let tasks = self.tasks();
        let found = tasks.as_array().unwrap().iter().find(|x| x["id"] == id);
        found
            .cloned()
            .unwrap_or_else(|| panic!("{id} listed: {tasks}"))
    }
}

/// `berthctl events`, its output collected as it arrives.
struct Events {
    child: Child,
    seen: Arc<Mutex<String>>,
}

impl Events {
    /// Subscribes, and returns once the subscription provably sees events
    /// (a namespace created after it started shows up).
    fn follow(t: &Target) -> Events {
        let mut child = (t.berthctl)("default", &["events"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn berthctl events");
        let seen = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut s = s.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let e = Events { child, seen };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut made = Vec::new();
        for i in 0.. {
            let ns = format!("evprobe{i}");
            ok("ns create", t.run(t.ns, &["namespaces", "create", &ns]));
            made.push(ns);
            std::thread::sleep(Duration::from_millis(100));
            if e.text().contains("/namespaces/create") {
                break;
            }
            assert!(Instant::now() < deadline, "the event stream saw nothing");
        }
        for ns in made {
            ok("ns rm", t.run(t.ns, &["namespaces", "rm", &ns]));
        }
        e
    }

    fn text(&self) -> String {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until every topic has been seen; returns the stream so far.
    fn expect(&self, topics: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text();
            let missing: Vec<&&str> = topics.iter().filter(|t| !text.contains(**t)).collect();
            if missing.is_empty() {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "events {missing:?} never arrived; the stream:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes the namespace's parent cgroup (`/<ns>` under every hierarchy)
/// the runtimes leave behind once its containers' cgroups are gone.
struct NamespaceCgroups(&'static str);

impl Drop for NamespaceCgroups {
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in rd.flatten() {
            // Fails (and is left) while a container's cgroup is inside.
            let _ = std::fs::remove_dir(h.path().join(self.0));
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(self.0));
    }
}

/// Kills and removes whatever containers a failed run left in the
/// namespace: their shims outlive the daemon, and so would their mounts
/// and cgroups.
struct LeaveNoContainers<'a>(&'a Target<'a>);

impl Drop for LeaveNoContainers<'_> {
    fn drop(&mut self) {
        let t = self.0;
        let out = t.run(t.ns, &["containers", "ls", "-q"]);
        let ids = String::from_utf8_lossy(&out.stdout);
        for id in lines(&ids) {
            let _ = t.run(t.ns, &["tasks", "rm", "-f", id]);
            let _ = t.run(t.ns, &["containers", "rm", id]);
        }
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

/// The scenario, with the same assertions on every daemon.
fn scenario(t: &Target) {
    let fx = fixtures();
    let busybox = "docker.io/library/busybox:latest";
    let bb = "docker.io/local/bb:latest";
    let _cleanup = LeaveNoContainers(t);
    let events = Events::follow(t);

    // A truncated archive fails clearly and leaves nothing behind.
    let whole = std::fs::read(fx.join("busybox-docker.tar")).unwrap();
    let cut = t.scratch.join("cut.tar");
    std::fs::write(&cut, &whole[..whole.len() * 2 / 3]).unwrap();
    let cut_ns = format!("{}-cut", t.ns);
    let err = fails(
        "import truncated",
        t.run(&cut_ns, &["images", "import", cut.to_str().unwrap()]),
    );
    assert!(err.contains("truncated"), "{err}");
    for what in [["images", "ls"], ["content", "ls"], ["leases", "ls"]] {
        let left = ok("ls", t.run(&cut_ns, &[what[0], what[1], "-q"]));
        assert!(
            left.trim().is_empty(),
            "{what:?} after a failed import: {left}"
        );
    }

    // Imports: docker archive and OCI layout, each unpacked.
    let out = t.ok(&[
        "images",
        "import",
        fx.join("busybox-docker.tar").to_str().unwrap(),
    ]);
    assert!(out.contains(&format!("image: {busybox}")), "{out}");
    assert!(out.contains(&format!("unpacked: {busybox}")), "{out}");
    let out = t.ok(&[
        "images",
        "import",
        "--base-name",
        "docker.io/local/bb",
        fx.join("busybox-oci.tar").to_str().unwrap(),
    ]);
    assert!(out.contains(&format!("image: {bb}")), "{out}");
    let mut names = lines(&t.ok(&["images", "ls", "-q"]))
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    names.sort();
    assert_eq!(names, [busybox, bb]);
    let ls = t.ok(&["images", "ls"]);
    let row = ls.lines().find(|l| l.starts_with(bb)).expect("bb listed");
    assert!(
        row.contains(&fixture_digest("manifest"))
            && row.contains(&format!("linux/{}", host_arch())),
        "{ls}"
    );
    // Both images share one layer: one committed snapshot, named by its chain ID.
    let snaps = t.ok(&["snapshots", "ls"]);
    let committed: Vec<&str> = snaps.lines().filter(|l| l.ends_with("Committed")).collect();
    assert_eq!(committed.len(), 1, "{snaps}");

    // run --rm: output, exit code, and nothing left.
    let out = t.run(
        t.ns,
        &[
            "run",
            "--rm",
            "--name",
            "r1",
            "busybox",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err"),
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(
        t.ok(&["run", "--rm", "--name", "r2", bb, "echo", "from-oci"]),
        "from-oci\n"
    );
    assert!(t.ok(&["containers", "ls", "-q"]).trim().is_empty());
    assert!(!t.ok(&["snapshots", "ls"]).contains("r1"));
    // Piped stdin reaches the process, all of it, then EOF (a slow reader
    // holds up the shim while the rest waits in the FIFO).
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let out = t.with_input(
        &[
            "run",
            "--rm",
            "-i",
            "--name",
            "i1",
            "busybox",
            "sh",
            "-c",
            "sleep 1; sha256sum",
        ],
        &input,
    );
    assert_eq!(out.split_whitespace().next(), Some(&sha256(&input)[7..]));

    // The snapshotter named on the command line is the one used.
    t.ok(&[
        "--snapshotter",
        "native",
        "run",
        "--rm",
        "--name",
        "n1",
        "busybox",
        "true",
    ]);
    let native = t.ok(&["snapshots", "--snapshotter", "native", "ls"]);
    assert!(native.lines().any(|l| l.ends_with("Committed")), "{native}");

    // run -d, then tasks ls / exec / kill / rm, containers rm.
    assert_eq!(
        t.ok(&[
            "run",
            "-d",
            "--name",
            "d1",
            "busybox",
            "sh",
            "-c",
            "echo started; exec sleep 300"
        ]),
        "d1\n"
    );
    let d1 = t.task("d1");
    assert_eq!(d1["status"], "RUNNING", "{d1}");
    assert!(d1["pid"].as_u64().unwrap() > 1);
    assert_eq!(lines(&t.ok(&["tasks", "ls", "-q"])), ["d1"]);
    // docker's grammar. The name is the ID: a taken one is refused and the
    // running container is left alone.
    let err = fails(
        "a taken name",
        t.run(t.ns, &["run", "--rm", "--name", "d1", "busybox", "true"]),
    );
    assert!(err.contains("\"d1\" is already in use"), "{err}");
    assert_eq!(t.task("d1")["status"], "RUNNING");
    // Everything after IMAGE is the command's, options included.
    assert_eq!(
        t.ok(&[
            "run",
            "--rm",
            "-e",
            "X=1",
            "busybox",
            "sh",
            "-c",
            "echo $X $0",
            "--rm"
        ]),
        "1 --rm\n"
    );
    // A bad value is a usage error naming the flag, before anything exists.
    let err = fails(
        "memory 0",
        t.run(t.ns, &["run", "--rm", "-m", "0", "busybox", "true"]),
    );
    assert!(err.contains("--memory"), "{err}");
    // No --name: a generated one, printed by -d, usable by later commands.
    let generated = t.ok(&["run", "-d", "busybox", "sleep", "300"]);
    let generated = generated.trim();
    assert!(
        generated.len() == 12 && generated.chars().all(|c| c.is_ascii_hexdigit()),
        "{generated}"
    );
    assert_eq!(t.task(generated)["status"], "RUNNING");
    t.ok(&["tasks", "rm", "-f", generated]);
    t.ok(&["containers", "rm", generated]);
    assert_eq!(lines(&t.ok(&["containers", "ls", "-q"])), ["d1"]);
    let ex = t.run(
        t.ns,
        &["tasks", "exec", "d1", "sh", "-c", "echo from-exec; exit 4"],
    );
    assert_eq!(String::from_utf8_lossy(&ex.stdout), "from-exec\n");
    assert_eq!(ex.status.code(), Some(4), "{ex:?}");
    assert_eq!(
        t.with_input(&["tasks", "exec", "-i", "d1", "wc", "-l"], b"a\nb\n")
            .trim(),
        "2"
    );
    // An empty input is an EOF too.
    assert_eq!(
        t.with_input(&["tasks", "exec", "-i", "d1", "wc", "-c"], b"")
            .trim(),
        "0"
    );
    let err = fails("rm with a task", t.run(t.ns, &["containers", "rm", "d1"]));
    assert!(err.contains("tasks rm d1"), "{err}");
    t.ok(&["tasks", "kill", "-s", "SIGKILL", "d1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d1 = t.task("d1");
        if d1["status"] == "STOPPED" {
            assert_eq!(d1["exit_status"], 137, "{d1}");
            break;
        }
        assert!(Instant::now() < deadline, "d1 did not stop: {d1}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(t.ok(&["tasks", "rm", "d1"]), "d1 (exit status 137)\n");
    assert_eq!(t.ok(&["containers", "rm", "d1"]), "d1\n");
    assert!(t.ok(&["containers", "ls", "-q"]).trim().is_empty());
    assert!(!t.ok(&["snapshots", "ls"]).contains("d1"));

    // Export, then images rm and import the export back.
    let exported = t.scratch.join("export.tar");
    let out = t.ok(&["images", "export", exported.to_str().unwrap(), bb]);
    assert!(out.contains(&format!("exported: {bb}")), "{out}");
    for blob in ["manifest", "config", "layer"] {
        let d = fixture_digest(blob);
        let member = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        let data = tar_member(&exported, &member).unwrap_or_else(|| panic!("{member} exported"));
        assert_eq!(sha256(&data), d);
    }
    let manifest = tar_member(&exported, "manifest.json").expect("manifest.json");
    assert!(String::from_utf8_lossy(&manifest).contains("local/bb:latest"));
    assert_eq!(t.ok(&["images", "rm", bb]), format!("{bb}\n"));
    assert_eq!(lines(&t.ok(&["images", "ls", "-q"])), [busybox]);
    let out = t.ok(&["images", "import", exported.to_str().unwrap()]);
    assert!(out.contains(&format!("image: {bb}")), "{out}");
    assert_eq!(
        t.ok(&["run", "--rm", "--name", "r3", bb, "echo", "back"]),
        "back\n"
    );

    let seen = events.expect(&[
        "/images/create",
        "/images/delete",
        "/snapshot/prepare",
        "/containers/create",
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/exit",
        "/tasks/delete",
        "/containers/delete",
    ]);
    assert!(seen.contains("d1") && seen.contains(t.ns), "{seen}");

    networking(t);

    // Pull needs a Transfer service; without one it says so and makes nothing.
    if !t.transfer {
        let err = fails(
            "pull without Transfer",
            t.run(t.ns, &["images", "pull", "127.0.0.1:9/none/x:1"]),
        );
        assert!(
            err.contains("needs berthd's Transfer service") && err.contains("ctr images pull"),
            "{err}"
        );
        assert_eq!(lines(&t.ok(&["images", "ls", "-q"])).len(), 2);
    }
}

/// `run`'s network modes that need no bridge (the tests share the host's
/// network), and failures that must leave nothing behind.
fn networking(t: &Target) {
    let nothing_left = |what: &str, id: &str| {
        assert!(
            t.ok(&["containers", "ls", "-q"]).trim().is_empty(),
            "{what}: a container is left"
        );
        assert!(
            !t.ok(&["snapshots", "ls"]).contains(id),
            "{what}: {id}'s snapshot is left"
        );
        assert!(
            t.ok(&["leases", "ls", "-q"]).trim().is_empty(),
            "{what}: a lease is left"
        );
    };
    // A task that cannot be created (here its runtime binary fails) takes
    // its container and snapshot with it, even without --rm.
    fails(
        "a failing runtime",
        t.run(
            t.ns,
            &[
                "run",
                "--runc-binary",
                "/bin/false",
                "--name",
                "tf",
                "busybox",
                "true",
            ],
        ),
    );
    nothing_left("failed task create", "tf");

    // none: a namespace of its own with only lo.
    let devs = t.ok(&[
        "run",
        "--rm",
        "--net",
        "none",
        "busybox",
        "cat",
        "/proc/net/dev",
    ]);
    let ifaces: Vec<&str> = devs
        .lines()
        .filter_map(|l| l.split_once(':').map(|(i, _)| i.trim()))
        .collect();
    assert_eq!(ifaces, ["lo"], "{devs}");
    // host: the host's interfaces and its /etc/hosts (read-only).
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert_eq!(
        t.ok(&[
            "run",
            "--rm",
            "--net",
            "host",
            "busybox",
            "cat",
            "/etc/hosts"
        ]),
        hosts
    );
    let host_devs = std::fs::read_to_string("/proc/net/dev").unwrap();
    let out = t.ok(&[
        "run",
        "--rm",
        "--net-host",
        "busybox",
        "cat",
        "/proc/net/dev",
    ]);
    assert_eq!(out.lines().count(), host_devs.lines().count(), "{out}");
    let err = fails(
        "write the host's /etc/hosts",
        t.run(
            t.ns,
            &[
                "run",
                "--rm",
                "--net",
                "host",
                "busybox",
                "sh",
                "-c",
                "echo x >> /etc/hosts",
            ],
        ),
    );
    assert!(err.contains("Read-only file system"), "{err}");

    // Flags that need a network are usage errors with host or none.
    let out = t.run(
        t.ns,
        &[
            "run", "--rm", "--net", "none", "-p", "8080:80", "busybox", "true",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("-p/--publish cannot be used with --net none"),
        "{err}"
    );
    // An unknown network fails before anything is made; a daemon without
    // networks (containerd) says so.
    let err = fails(
        "an unknown network",
        t.run(
            t.ns,
            &[
                "run", "--rm", "--net", "nosuch", "--name", "nn", "busybox", "true",
            ],
        ),
    );
    let says = if t.transfer {
        "--net nosuch: no such network"
    } else {
        "--net nosuch: this daemon has no networks service"
    };
    assert!(err.contains(says), "{err}");
    nothing_left("unknown network", "nn");
}

#[test]
fn berthctl_drives_berthd() {
    if !require_root("running containers") {
        return;
    }
    let cg = NamespaceCgroups("ctl-berthd");
    let d = Daemon::start();
    let cmd = |ns: &str, args: &[&str]| d.berthctl_command(ns, args);
    scenario(&Target {
        berthctl: &cmd,
        scratch: d.dir.path(),
        ns: cg.0,
        transfer: true,
    });
}

#[test]
fn berthctl_drives_containerd() {
    let Some(containerd) = peer("containerd") else {
        return;
    };
    if peer("containerd-shim-runc-v2").is_none() || peer("runc").is_none() {
        return;
    }
    if !require_root("containerd") {
        return;
    }
    let cg = NamespaceCgroups("ctl-containerd");
    let c = berth_tests::containerd::Containerd::start(&containerd, "", None);
    let cmd = |ns: &str, args: &[&str]| c.berthctl_command(ns, args);
    scenario(&Target {
        berthctl: &cmd,
        scratch: c.dir.path(),
        ns: cg.0,
        transfer: false,
    });
    // Without the harness's --net none: containerd has no networks, so the
    // default is none (as ctr's), and flags that need one say why.
    let own = |args: &[&str]| berthctl_at_default_net(&c.sock, c.dir.path(), cg.0, args);
    let devs = ok(
        "run on the default network",
        own(&["run", "--rm", "busybox", "cat", "/proc/net/dev"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        devs.lines().filter(|l| l.contains(':')).count(),
        1,
        "{devs}"
    );
    assert!(devs.contains("lo:"), "{devs}");
    let err = fails(
        "publish on containerd",
        own(&["run", "--rm", "-p", "8080:80", "busybox", "true"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("-p/--publish needs a network") && err.contains("containerd has none"),
        "{err}"
    );
}
