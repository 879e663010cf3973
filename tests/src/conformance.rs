//! The `OciRuntime` conformance harness: one berthd whose shim runs each
//! case's containers twice, once with its built-in runtime and once driving
//! runc (the container's runtime options name `BinaryName`, as
//! `ctr run --runc-binary` does), so the two differ in nothing but the
//! runtime. A case computes one observation per runtime, from inside the
//! container or from the host, and [`check`] fails unless both are equal and
//! meet the case's absolute expectation (so they cannot agree on a wrong
//! answer). Containers are driven by the real `ctr` (and `berthctl` where
//! ctr has no flag), in namespace [`NS`], with ids `conf-<case>-<b|r>…`.

pub mod agent;
pub mod hooks;
pub mod normalise;
pub mod process;
pub mod propagation;
pub mod security;
pub mod userns;
pub mod world;

use crate::{Daemon, fixtures, ok, output_within, peer, require_root};
use berth_proto::client::request;
use berth_proto::services::containers::v1 as capi;
use berth_proto::services::containers::v1::containers_client::ContainersClient;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The containerd namespace of every conformance container; its cgroup
/// level (`/conformance`) goes when the last case of the run ends.
pub const NS: &str = "conformance";
/// The busybox fixture, as `berthctl images import` names it.
pub const IMAGE: &str = "docker.io/library/busybox:latest";

/// The runtime a container runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rt {
    Builtin,
    Runc,
}

impl Rt {
    pub fn name(self) -> &'static str {
        match self {
            Rt::Builtin => "built-in",
            Rt::Runc => "runc",
        }
    }
}

/// Cases of this test binary still running: the last one out removes the
/// namespace's cgroup level (removing it under a live case could take a
/// cgroup its runtime just made and has not filled yet).
static LIVE: Mutex<usize> = Mutex::new(0);

struct LiveGuard;

impl LiveGuard {
    fn enter() -> LiveGuard {
        *LIVE.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        LiveGuard
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut n = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            crate::remove_cgroups(&format!("/{NS}"));
        }
    }
}

/// Runs the case `name`: starts its suite (or reports the skip) and hands
/// it to `body`.
pub fn run(name: &'static str, body: fn(&Suite)) {
    if let Some(s) = Suite::start(name) {
        body(&s);
    }
}

/// A daemon holding busybox in [`NS`], and the peers a case drives.
pub struct Suite {
    pub case: &'static str,
    pub ctr: PathBuf,
    pub runc: PathBuf,
    // Dropped before the guard: the daemon's own guard kills what is left.
    pub d: Daemon,
    _live: LiveGuard,
}

impl Suite {
    /// Starts the suite for `case`; `None` (SKIPPED, or a failure under
    /// BERTH_REQUIRE_PEERS=1) without root, ctr or runc.
    pub fn start(case: &'static str) -> Option<Suite> {
        let ctr = peer("ctr")?;
        let runc = peer("runc")?;
        if !require_root(&format!("OCI conformance case {case} (running containers)")) {
            return None;
        }
        let live = LiveGuard::enter();
        let d = Daemon::start();
        let archive = fixtures().join("busybox-docker.tar");
        ok(
            "import busybox",
            d.berthctl(NS, &["images", "import", archive.to_str().expect("utf-8")]),
        );
        Some(Suite {
            case,
            ctr,
            runc,
            d,
            _live: live,
        })
    }

    /// The id of the `n`th container of this case on `rt`.
    pub fn id(&self, rt: Rt, n: u32) -> String {
        let tag = if rt == Rt::Builtin { 'b' } else { 'r' };
        format!("conf-{}-{tag}{n}", self.case.replace('_', "-"))
    }

    /// ctr's flags selecting `rt`.
    pub fn rt_flags(&self, rt: Rt) -> Vec<String> {
        match rt {
            Rt::Builtin => vec![],
            Rt::Runc => vec!["--runc-binary".into(), self.runc.display().to_string()],
        }
    }

    /// The real ctr against the daemon, in [`NS`].
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("--address")
            .arg(&self.d.sock)
            .arg("--namespace")
            .arg(NS)
            .args(args);
        c
    }

    /// Runs ctr; a ctr that hangs for a minute is killed and fails the case.
    pub fn ctr(&self, args: &[&str]) -> Output {
        output_within(self.ctr_cmd(args), b"", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{}: ctr {args:?} hung", self.case))
    }

    /// `ctr run --rm [runtime] FLAGS busybox ID CMD…`, attached.
    pub fn run(&self, rt: Rt, id: &str, flags: &[&str], cmd: &[&str]) -> Output {
        let args = self.run_args(rt, "--rm", flags, id, cmd);
        self.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `ctr run -d …`: the container keeps running; [`Suite::remove`] it.
    pub fn run_detached(&self, rt: Rt, id: &str, flags: &[&str], cmd: &[&str]) {
        let args = self.run_args(rt, "-d", flags, id, cmd);
        ok(
            &format!("{}: ctr run -d {id}", self.case),
            self.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>()),
        );
    }

    /// The arguments of `ctr run MODE [runtime] FLAGS busybox ID CMD…`.
    pub fn run_args(
        &self,
        rt: Rt,
        mode: &str,
        flags: &[&str],
        id: &str,
        cmd: &[&str],
    ) -> Vec<String> {
        let mut args = vec!["run".to_string(), mode.to_string()];
        args.extend(self.rt_flags(rt));
        args.extend(flags.iter().map(|s| s.to_string()));
        args.extend([IMAGE.to_string(), id.to_string()]);
        args.extend(cmd.iter().map(|s| s.to_string()));
        args
    }

    /// `berthctl run [--runc-binary] --name ID FLAGS busybox CMD…`: for what
    /// ctr 1.6 has no flag for (`--user`, `--hostname`, `--pids-limit`).
    pub fn berthctl_run(&self, rt: Rt, id: &str, flags: &[&str], cmd: &[&str]) -> Output {
        let mut args = vec!["run".to_string()];
        if rt == Rt::Runc {
            args.extend(["--runc-binary".into(), self.runc.display().to_string()]);
        }
        args.extend(["--name".into(), id.to_string()]);
        args.extend(flags.iter().map(|s| s.to_string()));
        args.push(IMAGE.to_string());
        args.extend(cmd.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        output_within(
            self.d.berthctl_command(NS, &args),
            b"",
            Duration::from_secs(60),
        )
        .unwrap_or_else(|| panic!("{}: berthctl {args:?} hung", self.case))
    }

    /// A container made by `ctr containers create FLAGS busybox …` whose
    /// spec `patch` then changes (for what no client has a flag for:
    /// rlimits, additional groups, a device of our own), with `rt` as its
    /// runtime; run it with `ctr tasks start`. ctr cannot pick runc for a
    /// created container, so the record is made again through the API with
    /// runc's options, as `ctr run --runc-binary` would have stored them.
    pub fn create_patched(
        &self,
        rt: Rt,
        id: &str,
        flags: &[&str],
        cmd: &[&str],
        patch: &dyn Fn(&mut Value),
    ) {
        let tmpl = format!("{id}-t");
        let mut args = vec!["containers", "create"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[IMAGE, &tmpl, "--"]);
        args.extend_from_slice(cmd);
        ok(
            &format!("{}: ctr containers create", self.case),
            self.ctr(&args),
        );
        let runtime_options = (rt == Rt::Runc).then(|| {
            berth_proto::typeurl::pack(&berth_proto::pb::containerd::runc::v1::Options {
                binary_name: self.runc.display().to_string(),
                ..Default::default()
            })
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            let mut cc = ContainersClient::new(self.d.channel().await);
            let mut c = cc
                .get(request(NS, capi::GetContainerRequest { id: tmpl.clone() }))
                .await
                .expect("get the created container")
                .into_inner()
                .container
                .expect("a container");
            let any = c.spec.as_mut().expect("a spec");
            let mut spec: Value = serde_json::from_slice(&any.value).expect("spec json");
            patch(&mut spec);
            any.value = serde_json::to_vec(&spec).expect("spec json");
            c.id = id.to_string();
            if let Some(opts) = runtime_options {
                c.runtime.as_mut().expect("a runtime").options = Some(opts);
            }
            // The new record takes over the snapshot (its key stays the
            // template's) before the template goes, so GC never sees it
            // unreferenced.
            cc.create(request(
                NS,
                capi::CreateContainerRequest { container: Some(c) },
            ))
            .await
            .expect("create the patched container");
            cc.delete(request(NS, capi::DeleteContainerRequest { id: tmpl }))
                .await
                .expect("delete the template record");
        });
    }

    /// Creates the task of the container `id` through the API, without
    /// stdio, and starts it if that worked: `create refused`, `start
    /// refused` or `ran`. A task that was made is waited for and deleted.
    pub fn create_and_start(&self, id: &str) -> String {
        self.create_and_start_why(id).0
    }

    /// [`Suite::create_and_start`], with the error message of a refused
    /// create or start.
    pub fn create_and_start_why(&self, id: &str) -> (String, Option<String>) {
        use berth_proto::services::snapshots::v1 as sapi;
        use berth_proto::services::tasks::v1 as tapi;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            let ch = self.d.channel().await;
            let c = ContainersClient::new(ch.clone())
                .get(request(NS, capi::GetContainerRequest { id: id.into() }))
                .await
                .expect("get the container")
                .into_inner()
                .container
                .expect("a container");
            let rootfs = sapi::snapshots_client::SnapshotsClient::new(ch.clone())
                .mounts(request(
                    NS,
                    sapi::MountsRequest {
                        snapshotter: c.snapshotter,
                        key: c.snapshot_key,
                    },
                ))
                .await
                .expect("the rootfs mounts")
                .into_inner()
                .mounts;
            let mut tc = tapi::tasks_client::TasksClient::new(ch);
            let create = tapi::CreateTaskRequest {
                container_id: id.into(),
                rootfs,
                ..Default::default()
            };
            if let Err(e) = tc.create(request(NS, create)).await {
                return ("create refused".to_string(), Some(e.message().to_string()));
            }
            let start = tapi::StartRequest {
                container_id: id.into(),
                exec_id: String::new(),
            };
            let (answer, why) = match tc.start(request(NS, start)).await {
                Ok(_) => ("ran", None),
                Err(e) => ("start refused", Some(e.message().to_string())),
            };
            let wait = tapi::WaitRequest {
                container_id: id.into(),
                exec_id: String::new(),
            };
            if answer != "ran" {
                // A task whose start failed must not linger on our wait.
                let kill = tapi::KillRequest {
                    container_id: id.into(),
                    signal: 9,
                    ..Default::default()
                };
                let _ = tc.kill(request(NS, kill)).await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), tc.wait(request(NS, wait))).await;
            let delete = tapi::DeleteTaskRequest {
                container_id: id.into(),
            };
            let _ = tc.delete(request(NS, delete)).await;
            (answer.to_string(), why)
        })
    }

    /// [`Suite::create_patched`], run attached with `ctr tasks start`, then
    /// removed.
    pub fn run_patched(
        &self,
        rt: Rt,
        id: &str,
        flags: &[&str],
        cmd: &[&str],
        patch: &dyn Fn(&mut Value),
    ) -> Output {
        self.create_patched(rt, id, flags, cmd, patch);
        let out = self.ctr(&["tasks", "start", id]);
        self.remove(id);
        out
    }

    /// Kills and deletes a container's task (if any) and the container.
    pub fn remove(&self, id: &str) {
        if self.status(id).is_some_and(|s| s != "STOPPED") {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            self.wait_status(id, "STOPPED");
        }
        let _ = self.ctr(&["tasks", "rm", id]);
        ok(
            &format!("{}: ctr containers rm {id}", self.case),
            self.ctr(&["containers", "rm", id]),
        );
    }

    /// The task's `(pid, status)` from `ctr tasks ls`.
    pub fn task(&self, id: &str) -> Option<(u32, String)> {
        let ls = ok("ctr tasks ls", self.ctr(&["tasks", "ls"]));
        ls.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == id).then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
        })
    }

    pub fn status(&self, id: &str) -> Option<String> {
        self.task(id).map(|(_, s)| s)
    }

    /// Waits (up to 10 s) until the task reports `want`.
    pub fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = self.status(id);
            if st.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {id} is {st:?}, not {want}",
                self.case
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ctr` on a fresh `cols`x`rows` pseudo-terminal made by `script(1)`.
    pub fn ctr_in_terminal(
        &self,
        script: &Path,
        (cols, rows): (u16, u16),
        args: &[String],
    ) -> Output {
        let quote = |a: &str| format!("'{}'", a.replace('\'', "'\\''"));
        let mut cmd = format!(
            "stty cols {cols} rows {rows}; exec {} --address {} --namespace {NS}",
            quote(self.ctr.to_str().expect("utf-8")),
            quote(self.d.sock.to_str().expect("utf-8")),
        );
        for a in args {
            cmd.push(' ');
            cmd.push_str(&quote(a));
        }
        let mut c = Command::new(script);
        c.args(["-q", "-e", "-c", &cmd, "/dev/null"]);
        output_within(c, b"", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{}: ctr in a terminal {args:?} hung", self.case))
    }

    /// Spawns an attached `ctr run --rm` and waits for its first line of
    /// output (the container saying it is ready); returns the child.
    pub fn spawn_until_ready(&self, rt: Rt, id: &str, cmd: &[&str]) -> std::process::Child {
        let args = self.run_args(rt, "--rm", &[], id, cmd);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = self
            .ctr_cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr run");
        let mut first = [0u8; 6];
        let out = child.stdout.as_mut().expect("stdout");
        std::io::Read::read_exact(out, &mut first)
            .unwrap_or_else(|e| panic!("{}: {id} never said ready: {e}", self.case));
        assert_eq!(&first, b"ready\n", "{}: {id}", self.case);
        child
    }

    /// The host-side file `file` of the container's cgroup under `ctrl`.
    pub fn cgroup_file(&self, ctrl: &str, id: &str, file: &str) -> String {
        let p = format!("/sys/fs/cgroup/{ctrl}/{NS}/{id}/{file}");
        std::fs::read_to_string(&p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("<{e}>"))
    }
}

/// An observation of a finished command: exit status, stdout and stderr,
/// with the container's id replaced by `<id>`.
pub fn show(id: &str, out: &Output) -> String {
    let mut s = format!("exit={}\n", normalise::code(out));
    s.push_str(&String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.is_empty() {
        s.push_str("stderr:\n");
        s.push_str(&err);
    }
    s.replace(id, "<id>")
}

/// Computes the observation on both runtimes at once.
pub fn both(observe: impl Fn(Rt) -> String + Sync) -> (String, String) {
    std::thread::scope(|s| {
        let b = s.spawn(|| observe(Rt::Builtin));
        let r = observe(Rt::Runc);
        (b.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), r)
    })
}

/// Fails the case unless the built-in runtime's observation equals runc's
/// and both meet `expect` (which lists what is wrong with one observation).
pub fn check(case: &str, (builtin, runc): &(String, String), expect: impl Fn(&str) -> Vec<String>) {
    let mut problems = Vec::new();
    if builtin != runc {
        problems.push(format!(
            "the built-in runtime and runc differ:\n{}",
            normalise::diff(builtin, runc)
        ));
    }
    for (rt, obs) in [("built-in", builtin), ("runc", runc)] {
        for p in expect(obs) {
            problems.push(format!("{rt}: {p}"));
        }
    }
    assert!(
        problems.is_empty(),
        "OCI conformance case `{case}` failed:\n- {}\n\n=== built-in observed:\n{builtin}\n=== runc observed:\n{runc}",
        problems.join("\n- ")
    );
    eprintln!("conformance {case}: built-in and runc agree");
}

/// `expect` helper: a problem unless `obs` has a line equal to `line`.
pub fn has_line(obs: &str, line: &str) -> Option<String> {
    (!obs.lines().any(|l| l == line)).then(|| format!("no line {line:?}"))
}

/// Runs a shell script in the container.
pub fn sh(script: &str) -> [&str; 3] {
    ["sh", "-c", script]
}

/// `expect` for observations without an absolute answer of their own
/// beyond the lines listed.
pub fn lines(want: &'static [&'static str]) -> impl Fn(&str) -> Vec<String> {
    move |obs| want.iter().filter_map(|l| has_line(obs, l)).collect()
}

/// The line of a normalised mountinfo for mount point `point`.
pub fn mount_line<'a>(obs: &'a str, point: &str) -> Option<&'a str> {
    obs.lines()
        .find(|l| l.strip_prefix(point).is_some_and(|r| r.starts_with(" on ")))
}

/// Problems unless the mount at `point` has every per-mount flag in `flags`.
pub fn mount_flags(obs: &str, point: &str, flags: &[&str]) -> Vec<String> {
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
