//! The process that enters a container must not be reachable from inside
//! it (the CVE-2016-9962 / CVE-2019-5736 class): while an exec is being
//! set up, a racer in the container looks at every process that is not
//! yet the container's own program and tries what an attack needs —
//! `/proc/N/exe`, `/proc/N/fd`, `/proc/N/environ`, writing through
//! `/proc/N/fd/K`. And CVE-2019-5736 itself, on both runtimes: the
//! runtime's binary must not be writable from a container that gets it to
//! run inside (`#!/proc/self/exe`) or catches it setting up. Root only.

use berth_tests::*;
use std::path::{Path, PathBuf};
use std::process::Output;
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

/// The sha256 of a file.
fn sha256(p: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).expect("read")))
}

/// Waits up to `limit` for `p` to exist.
fn wait_for(p: &Path, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    while !p.exists() {
        assert!(Instant::now() < deadline, "{what}: no {}", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of the processes whose command line has `-address <sock>` and
/// `-id <id>`: the shim serving that container.
fn shims_of(sock: &Path, id: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let has = |k: &[u8], v: &[u8]| args.windows(2).any(|w| w[0] == k && w[1] == v);
        if has(b"-address", sock.as_os_str().as_encoded_bytes()) && has(b"-id", id.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// One CVE-2019-5736 attempt on the runtime `runc` selects (the built-in
/// one without it): the attacker container `A` (CAP_SYS_PTRACE added, so
/// it passes the ptrace check on the runtime's non-dumpable processes
/// too) watches while five containers are created in its pid namespace
/// and 20 processes are executed in it, each running `#!/proc/self/exe`:
/// the runtime's own binary, if /proc/self/exe is the runtime's when it
/// executes the program (the host's libraries are bound in read-only, as
/// a glibc image has them, so the binary can start). Then A's shim is
/// killed — a shim that crashed, leaving its container — so the shim's
/// binary is no longer being executed and ETXTBSY no longer guards it
/// until the daemon's cleanup runs it again. What the attacker logged and
/// counted (it may be dead by then: the cleanup kills the container).
fn attack(d: &Daemon, ctr_bin: &Path, runc: Option<&Path>, attack: &Path, tag: &str) -> String {
    for f in ["ready", "stop", "log", "counts"] {
        let _ = std::fs::remove_file(attack.join(f));
    }
    let ctr = |args: &[&str]| -> Output {
        let mut c = std::process::Command::new(ctr_bin);
        c.arg("--address")
            .arg(&d.sock)
            .arg("--namespace")
            .arg(CVE_NS)
            .args(args);
        output_within(c, b"", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("ctr {args:?} hung"))
    };
    let mut common: Vec<String> = runc
        .map(|r| vec!["--runc-binary".to_string(), r.display().to_string()])
        .unwrap_or_default();
    let mut mounts = vec![format!(
        "type=bind,src={},dst=/attack,options=rbind:rw",
        attack.display()
    )];
    for (src, dst) in [("/usr/lib", "/lib"), ("/usr/lib64", "/lib64")] {
        if Path::new(src).is_dir() {
            mounts.push(format!("type=bind,src={src},dst={dst},options=rbind:ro"));
        }
    }
    for m in mounts {
        common.extend(["--mount".to_string(), m]);
    }
    let common: Vec<&str> = common.iter().map(String::as_str).collect();
    let path = format!("PATH={}/attack:/bin", "/loop:".repeat(3000));
    let a = format!("cve-{tag}-a");
    let mut args: Vec<&str> = vec!["run", "-d"];
    args.extend(&common);
    args.extend([
        "--cap-add",
        "CAP_SYS_PTRACE",
        "--env",
        &path,
        "docker.io/library/busybox:latest",
        &a,
        "/attack/attacker",
        "/attack",
    ]);
    ok("ctr run -d the attacker", ctr(&args));
    wait_for(
        &attack.join("ready"),
        Duration::from_secs(10),
        "the attacker",
    );
    let ls = ok("tasks ls", ctr(&["tasks", "ls"]));
    let init: i32 = ls
        .lines()
        .find(|l| l.split_whitespace().next() == Some(a.as_str()))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the attacker's pid in {ls}"));
    let pidns = format!("pid:/proc/{init}/ns/pid");
    let mut ran = Vec::new();
    for i in 0..5 {
        let b = format!("cve-{tag}-b{i}");
        let mut args: Vec<&str> = vec!["run", "--rm"];
        args.extend(&common);
        args.extend([
            "--with-ns",
            &pidns,
            "docker.io/library/busybox:latest",
            &b,
            "/attack/exe-script",
        ]);
        // The runtime's binary, run as the program, refuses its arguments.
        ran.push(ctr(&args));
    }
    for i in 0..20 {
        let id = format!("e{i}");
        ran.push(ctr(&["tasks", "exec", "--exec-id", &id, &a, "exe-script"]));
    }
    let shims = shims_of(&d.sock, &a);
    assert!(!shims.is_empty(), "no shim serves {a}");
    for pid in &shims {
        // SAFETY: kill(2) of the shim our own daemon started for `a`.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(attack.join("stop"), "").expect("stop the attacker");
    std::thread::sleep(Duration::from_millis(500));
    let read = |f: &str| std::fs::read_to_string(attack.join(f)).unwrap_or_default();
    let report = format!("{}{}", read("log"), read("counts"));
    // SAFETY: kill(2) of the attacker's init (gone already if the
    // daemon's cleanup killed it: then the pid is not reused this soon).
    unsafe { libc::kill(init, libc::SIGKILL) };
    let _ = ctr(&["tasks", "rm", "-f", &a]);
    let _ = ctr(&["containers", "rm", &a]);
    // What the runtime binary said when run as the program: that it ran
    // (runc's log lines carry a time, dropped so they collapse).
    let said: std::collections::BTreeSet<String> = ran
        .iter()
        .map(|o| {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().last().unwrap_or("");
            let last = match last.split_once("\" level=") {
                Some((t, rest)) if t.starts_with("time=") => rest,
                _ => last,
            };
            last.chars().take(160).collect()
        })
        .collect();
    format!("{report}programs said: {said:?}\n")
}

const CVE_NS: &str = "cve-2019-5736";

/// CVE-2019-5736 on both runtimes: a container tries to overwrite the
/// runtime's binary through /proc/N/exe of every runtime process it can
/// see, directly (O_WRONLY) and through an O_PATH handle reopened for
/// writing via /proc/self/fd — during creates, during execs, and after the
/// shim died. The shim's and runc's binaries (copies: the attack must not
/// hit the build's) are the same bytes afterwards, the attacker reached
/// the runtime's executable (it is not vacuous) but only unwritable ones:
/// a read-only overlay (the built-in runtime's sealed shim, runc ≥1.2) or
/// a sealed memfd (runc 1.1).
#[test]
fn a_container_cannot_overwrite_the_runtime_binary() {
    let (Some(ctr_bin), Some(runc), Some(rustc)) = (peer("ctr"), peer("runc"), peer("rustc"))
    else {
        return;
    };
    if !require_root("running containers") {
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("berth-cve-")
        .tempdir()
        .expect("tempdir");
    let bins = work.path().join("bin");
    std::fs::create_dir(&bins).expect("bin dir");
    let shim = bins.join("containerd-shim-berth-v2");
    let runc_copy = bins.join("runc");
    std::fs::copy(bin("containerd-shim-berth-v2"), &shim).expect("copy the shim");
    std::fs::copy(&runc, &runc_copy).expect("copy runc");
    let before = (sha256(&shim), sha256(&runc_copy));
    let attack_dir = work.path().join("attack");
    std::fs::create_dir(&attack_dir).expect("attack dir");
    let src = repo_root().join("tests/fixtures/exe_attacker.rs");
    let attacker = attack_dir.join("attacker");
    ok(
        "build the static attacker",
        std::process::Command::new(&rustc)
            .args([
                "--edition",
                "2024",
                "-C",
                "target-feature=+crt-static",
                "-C",
                "opt-level=2",
                "-o",
            ])
            .arg(&attacker)
            .arg(&src)
            .output()
            .expect("run rustc"),
    );
    let script = attack_dir.join("exe-script");
    std::fs::write(&script, "#!/proc/self/exe\n").expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let d = Daemon::start_with_config(&format!(
        "[runtimes.\"io.containerd.runc.v2\"]\nshim = {:?}\n",
        shim.display().to_string()
    ));
    ok(
        "import busybox",
        d.berthctl(
            CVE_NS,
            &[
                "images",
                "import",
                fixtures().join("busybox-docker.tar").to_str().unwrap(),
            ],
        ),
    );
    let builtin = attack(&d, &ctr_bin, None, &attack_dir, "b");
    let with_runc = attack(&d, &ctr_bin, Some(&runc_copy), &attack_dir, "r");
    drop(d);
    remove_cgroups(&format!("/{CVE_NS}"));
    let after = (sha256(&shim), sha256(&runc_copy));
    eprintln!("built-in runtime, the attacker's report:\n{builtin}");
    eprintln!("runc, the attacker's report:\n{with_runc}");
    let mut problems = Vec::new();
    if after.0 != before.0 {
        problems.push("the shim's binary was changed".to_string());
    }
    if after.1 != before.1 {
        problems.push("runc's binary was changed".to_string());
    }
    for (rt, r) in [("built-in", &builtin), ("runc", &with_runc)] {
        if !r.lines().any(|l| l.starts_with("scans ")) {
            problems.push(format!("{rt}: the attacker never counted"));
        }
        let reached: Vec<&str> = r.lines().filter(|l| l.starts_with("reached ")).collect();
        if reached.is_empty() {
            problems.push(format!(
                "{rt}: the attacker never reached the runtime's executable"
            ));
        }
        for l in reached {
            if !l.contains(" ro=true") && !l.contains(" sealed=true") {
                problems.push(format!("{rt}: writable runtime executable {l}"));
            }
        }
        for l in r.lines().filter(|l| l.starts_with("wrote ")) {
            problems.push(format!("{rt}: the attacker {l}"));
        }
    }
    assert!(
        problems.is_empty(),
        "CVE-2019-5736:\n- {}",
        problems.join("\n- ")
    );
}
