//! The process that enters a container must not be reachable from inside
//! it (the CVE-2016-9962 / CVE-2019-5736 class): while an exec is being
//! set up, a racer in the container looks at every process that is not
//! yet the container's own program and tries what an attack needs —
//! `/proc/N/exe`, `/proc/N/fd`, `/proc/N/environ`, writing through
//! `/proc/N/fd/K`. Root only.

use berth_tests::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Runs as the container's init (busybox has no ptrace tool; the /proc
/// files it probes pass the same ptrace access check as an attach). The exec's program is looked up on a
/// PATH of self-looping symlinks first (the container's env, which the
/// image controls), which keeps the exec's setup on the CPU a while after
/// it has the container's capabilities: the race is won every time rather
/// than by luck. Every process whose exe is not busybox is logged as
/// `seen <pid> <comm>` (so the test knows the racer saw the execs), and
/// anything the probes get is logged as `REACHABLE …`.
const RACER: &str = r#"
export PATH=/bin:/sbin:/usr/bin
ln -s /loop /loop
: > /racer.log
touch /racer.ready
while [ ! -e /racer.stop ]; do
  for d in /proc/[0-9]*; do
    n=${d#/proc/}
    [ "$n" = $$ ] && continue
    exe=$(readlink "$d/exe" 2>/dev/null)
    # The container's own programs; the runtime's binary is not in it.
    [ -n "$exe" ] && [ -e "$exe" ] && continue
    read -r stat 2>/dev/null < "$d/stat" || continue
    comm=${stat#*(}; comm=${comm%%)*}
    echo "seen $n $comm" >> /racer.log
    [ -n "$exe" ] && echo "REACHABLE exe $n $exe" >> /racer.log
    # Each probe may land just after the process became the container's
    # program (its own, with only stdio); what only the runtime's side
    # holds counts: a descriptor above stderr, the shim's environment.
    # (Listing the numbers passes a plain permission check, the directory
    # being root's; what a descriptor is takes the ptrace access check.)
    if ls -l "$d/fd" > /tmp/fds 2>/dev/null && grep -Eq ' ([3-9]|[1-9][0-9]+) -> ' /tmp/fds; then
      echo "REACHABLE fd $n: $(tr '\n' ' ' < /tmp/fds)" >> /racer.log
    fi
    if cat "$d/environ" > /tmp/env 2>/dev/null && [ -s /tmp/env ] && ! grep -q /loop: /tmp/env; then
      echo "REACHABLE environ $n" >> /racer.log
    fi
    for f in "$d"/fd/*; do
      case "${f##*/}" in 0|1|2) continue ;; esac
      [ -e "$f" ] || continue
      if { echo RACER-WROTE >> "$f"; } 2>/dev/null; then
        echo "REACHABLE write $f" >> /racer.log
      fi
    done
  done
done
touch /racer.done
exec sleep 3600
"#;

/// A file of the container, read from the host through its init.
fn in_container(init: u32, path: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{init}/root{path}")).ok()
}

#[test]
fn a_racer_in_the_container_finds_no_reachable_exec_process() {
    let Some(ctr_bin) = peer("ctr") else {
        return;
    };
    if !require_root("running containers") {
        return;
    }
    let d = Daemon::start();
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    let ctr = |args: &[&str]| d.ctr(&ctr_bin, "default", args);
    let path = format!("PATH={}/bin", "/loop:".repeat(3000));
    ok(
        "ctr run -d racer",
        ctr(&[
            "run",
            "-d",
            "--env",
            &path,
            "docker.io/library/busybox:latest",
            "racer",
            "sh",
            "-c",
            RACER,
        ]),
    );
    let ls = ok("tasks ls", ctr(&["tasks", "ls"]));
    let init: u32 = ls
        .lines()
        .find(|l| l.starts_with("racer "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("racer's pid in {ls}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_container(init, "/racer.ready").is_none() {
        assert!(Instant::now() < deadline, "the racer did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..40 {
        let id = format!("e{i}");
        ok(
            "exec",
            ctr(&["tasks", "exec", "--exec-id", &id, "racer", "true"]),
        );
    }
    ok(
        "stop the racer",
        ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            "stop",
            "racer",
            "touch",
            "/racer.stop",
        ]),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while in_container(init, "/racer.done").is_none() {
        assert!(Instant::now() < deadline, "the racer did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = in_container(init, "/racer.log").expect("the racer's log");
    ok("kill", ctr(&["tasks", "kill", "-s", "SIGKILL", "racer"]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok("ls", ctr(&["tasks", "ls"])).contains("STOPPED") {
        assert!(Instant::now() < deadline, "the racer did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let bundle: PathBuf = d
        .state()
        .join("io.containerd.runtime.v2.task/default/racer");
    let shim_log = std::fs::read_to_string(bundle.join("shim.log")).unwrap_or_default();
    ok("tasks rm", ctr(&["tasks", "rm", "racer"]));
    ok("c rm", ctr(&["containers", "rm", "racer"]));

    let reachable: Vec<&str> = log.lines().filter(|l| l.starts_with("REACHABLE")).collect();
    let mut kinds = std::collections::BTreeMap::new();
    for l in &reachable {
        *kinds
            .entry(l.split_whitespace().nth(1).unwrap_or(""))
            .or_insert(0) += 1;
    }
    assert!(
        reachable.is_empty(),
        "{} probes reached a process of the runtime from inside the container \
         ({kinds:?}), the first:\n{}",
        reachable.len(),
        reachable[..reachable.len().min(12)].join("\n")
    );
    assert!(
        !shim_log.contains("RACER-WROTE"),
        "the container wrote into the host's shim.log:\n{shim_log}"
    );
    // Not vacuous: the racer did see the execs before their program ran.
    let seen = log
        .lines()
        .filter(|l| l.starts_with("seen ") && l.contains("containerd-shim"))
        .count();
    assert!(seen > 0, "the racer never saw an exec being set up:\n{log}");
    eprintln!("the racer saw {seen} exec processes being set up, reached none");
    no_leftover(Path::new(d.dir.path()));
}

fn no_leftover(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.display().to_string();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&d)).collect();
    assert!(left.is_empty(), "mounts left behind: {left:#?}");
}
