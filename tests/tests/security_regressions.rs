//! Regressions of the security issue's defects, each against the real ctr
//! on berthd. Root only.
//!
//! - 3: runc's state is per namespace: one container id runs in two
//!   namespaces at once, and a failed create in a third never touches them.
//! - 4: 200 parallel creates on the built-in runtime all succeed.
//! - 5: `lo` is up in a new network namespace; 127.0.0.1 answers.
//! - 6: `/proc/sys` is read-only, nosuid, nodev and noexec.

use berth_tests::*;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

const IMAGE: &str = "docker.io/library/busybox:latest";

/// A daemon holding busybox in namespaces `nss`, the real ctr (and runc
/// with `runc`); the namespaces' cgroups are removed when it drops.
struct Env {
    ctr: PathBuf,
    runc: Option<PathBuf>,
    nss: Vec<&'static str>,
    d: Daemon,
}

impl Env {
    fn start(what: &str, nss: &[&'static str], runc: bool) -> Option<Env> {
        let ctr = peer("ctr")?;
        let runc = if runc { Some(peer("runc")?) } else { None };
        if !require_root(what) {
            return None;
        }
        let d = Daemon::start();
        let archive = fixtures().join("busybox-docker.tar");
        for ns in nss {
            ok(
                "import busybox",
                d.berthctl(ns, &["images", "import", archive.to_str().unwrap()]),
            );
        }
        Some(Env {
            ctr,
            runc,
            nss: nss.to_vec(),
            d,
        })
    }

    /// ctr in `ns`; one hanging for a minute fails the test.
    fn ctr(&self, ns: &str, args: &[&str]) -> Output {
        let mut c = std::process::Command::new(&self.ctr);
        c.arg("--address")
            .arg(&self.d.sock)
            .arg("--namespace")
            .arg(ns)
            .args(args);
        output_within(c, b"", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("ctr {args:?} hung"))
    }

    /// `ctr run MODE [--runc-binary] busybox ID CMD…` in `ns`.
    fn run(&self, ns: &str, mode: &str, id: &str, cmd: &[&str]) -> Output {
        let runc = self.runc.as_ref().map(|p| p.display().to_string());
        let mut args = vec!["run", mode];
        if let Some(r) = &runc {
            args.extend(["--runc-binary", r.as_str()]);
        }
        args.extend([IMAGE, id]);
        args.extend_from_slice(cmd);
        self.ctr(ns, &args)
    }

    /// `sh -c SCRIPT` in a fresh container; its stdout.
    fn sh(&self, id: &str, script: &str) -> String {
        ok(
            &format!("run {script}"),
            self.run(self.nss[0], "--rm", id, &["sh", "-c", script]),
        )
    }

    fn task_status(&self, ns: &str, id: &str) -> String {
        let out = ok("tasks ls", self.ctr(ns, &["tasks", "ls"]));
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("absent")
            .to_string()
    }

    fn remove(&self, ns: &str, id: &str) {
        let _ = self.ctr(ns, &["tasks", "kill", "-s", "KILL", id]);
        let _ = self.ctr(ns, &["tasks", "rm", "-f", id]);
        let _ = self.ctr(ns, &["containers", "rm", id]);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for ns in &self.nss {
            remove_cgroups(&format!("/{ns}"));
        }
    }
}

#[test]
fn defect3_one_id_runs_in_two_namespaces_under_runc() {
    let Some(e) = Env::start(
        "runc containers in two namespaces",
        &["secreg-a", "secreg-b", "secreg-c"],
        true,
    ) else {
        return;
    };
    let id = "secreg-same";
    for ns in ["secreg-a", "secreg-b"] {
        ok(
            &format!("run -d {id} in {ns}"),
            e.run(ns, "-d", id, &["sleep", "1000"]),
        );
    }
    for ns in ["secreg-a", "secreg-b"] {
        assert_eq!(e.task_status(ns, id), "RUNNING", "{id} in {ns}");
    }
    // Fails in runc's create (no such program): the cleanup of the failed
    // container must stay inside its own namespace's runc state.
    let failed = e.run("secreg-c", "--rm", id, &["/no/such/program"]);
    assert!(
        !failed.status.success(),
        "a missing program ran: {}",
        String::from_utf8_lossy(&failed.stdout)
    );
    for ns in ["secreg-a", "secreg-b"] {
        assert_eq!(
            e.task_status(ns, id),
            "RUNNING",
            "{id} in {ns} after a failed create in secreg-c"
        );
        let out = ok(
            "exec",
            e.ctr(
                ns,
                &["tasks", "exec", "--exec-id", "probe", id, "echo", "alive"],
            ),
        );
        assert_eq!(out.trim(), "alive");
    }
    for ns in ["secreg-a", "secreg-b", "secreg-c"] {
        e.remove(ns, id);
    }
}

#[test]
fn defect4_200_parallel_creates_all_succeed() {
    let Some(e) = Env::start("parallel creates", &["secreg-par"], false) else {
        return;
    };
    let started = std::time::Instant::now();
    let failures: Vec<String> = std::thread::scope(|s| {
        let loops: Vec<_> = (0..8)
            .map(|l| {
                let e = &e;
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for i in 0..25 {
                        let id = format!("secreg-par-{l}-{i}");
                        let out = e.run("secreg-par", "--rm", &id, &["true"]);
                        if !out.status.success() {
                            failed.push(format!(
                                "{id}: {}",
                                String::from_utf8_lossy(&out.stderr).trim()
                            ));
                        }
                    }
                    failed
                })
            })
            .collect();
        loops
            .into_iter()
            .flat_map(|h| h.join().expect("loop"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of 200 creates failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("200 creates in {:?}", started.elapsed());
}

#[test]
fn defect5_loopback_is_up_and_answers() {
    let Some(e) = Env::start("loopback in a container", &["secreg-lo"], false) else {
        return;
    };
    let flags = e.sh("secreg-lo-flags", "cat /sys/class/net/lo/flags");
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("lo flags {flags:?}"));
    assert_ne!(
        flags & libc::IFF_UP as u32,
        0,
        "lo is down: flags {flags:#x}"
    );
    let link = e.sh("secreg-lo-link", "ip link show lo");
    assert!(link.contains("<LOOPBACK,UP"), "{link}");
    // A server and a client in the container, over 127.0.0.1.
    let got = e.sh(
        "secreg-lo-nc",
        "nc -l -p 5555 > /tmp/got & sleep 0.3; echo hello | nc -w 2 127.0.0.1 5555; wait; cat /tmp/got",
    );
    assert_eq!(got.trim(), "hello", "over 127.0.0.1");
}

#[test]
fn defect6_proc_sys_is_read_only_nosuid_nodev_noexec() {
    let Some(e) = Env::start("/proc/sys in a container", &["secreg-sys"], false) else {
        return;
    };
    let info = e.sh("secreg-sys", "cat /proc/self/mountinfo");
    // The last mount on /proc/sys is the one the container sees.
    let line = info
        .lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some("/proc/sys"))
        .unwrap_or_else(|| panic!("/proc/sys is not a mount:\n{info}"));
    let opts: Vec<&str> = line
        .split_whitespace()
        .nth(5)
        .expect("mount options")
        .split(',')
        .collect();
    for want in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(opts.contains(&want), "/proc/sys lacks {want}: {line}");
    }
}
