//! Driving a runc-compatible runtime binary (runc, crun) through its CLI,
//! selected by the `BinaryName` runtime option. It is also the oracle the
//! built-in runtime is tested against.

use super::oci::{CreateOpts, Created, ExecOpts, OciRuntime, signal_process};
use crate::cgroup::{Hierarchy, Stats};
use crate::{Error, Result};
use berth_proto::pb::io::containerd::cgroups::v1 as m;
use oci_spec::runtime::LinuxResources;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// A runc-compatible runtime.
pub struct External {
    binary: String,
    root: String,
    systemd: bool,
    bundle: Mutex<Option<PathBuf>>,
}

/// The runtime's state directory (`--root`) for a container of namespace
/// `ns` whose bundle is `bundle`: `<root>/<ns>` when the runtime options
/// name a root (containerd's runc shim does the same, so dockerd's
/// `<exec-root>/runtime-runc` holds `moby/` and `plugins.moby/` apart);
/// otherwise `<state>/runc/<ns>` of the daemon that made the bundle
/// (`<state>/io.containerd.runtime.v2.task/<ns>/<id>`), so that two
/// daemons never share runtime state; for a bundle laid out otherwise,
/// `<bundle>/runc/<ns>` (never a fixed host path another daemon could use).
pub fn state_root(root: &str, bundle: &std::path::Path, ns: &str) -> String {
    if !root.is_empty() {
        return std::path::Path::new(root)
            .join(ns)
            .to_string_lossy()
            .to_string();
    }
    let state = bundle
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n == ns))
        .and_then(|p| p.parent())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n == "io.containerd.runtime.v2.task")
        })
        .and_then(|p| p.parent());
    match state {
        Some(state) => state.join("runc").join(ns),
        None => bundle.join("runc").join(ns),
    }
    .to_string_lossy()
    .to_string()
}

impl External {
    /// `root` is the runtime's state directory ([`state_root`]).
    pub fn new(binary: &str, root: &str, systemd: bool) -> Self {
        Self {
            binary: binary.to_string(),
            root: root.to_string(),
            systemd,
            bundle: Mutex::new(None),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        if self.systemd {
            c.arg("--systemd-cgroup");
        }
        c
    }

    fn run(&self, mut c: Command, what: &str) -> Result<Vec<u8>> {
        let out = c
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Error::io(format!("run {} {what}", self.binary), e))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(Error::new(
                failure_kind(&msg),
                format!("{} {what}: {msg}", self.binary),
            ));
        }
        Ok(out.stdout)
    }

    /// The pid of the container's init, from the runtime's `state`; a
    /// container that is not running is NotFound.
    fn init_pid(&self, id: &str) -> Result<u32> {
        let mut c = self.cmd();
        c.arg("state").arg(id);
        let out = self.run(c, "state")?;
        let v: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| Error::caused(berth_proto::errdefs::Kind::Internal, "state output", e))?;
        match v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
            Some(pid) if pid > 0 => Ok(pid),
            _ => Err(Error::not_found(format!("container {id} is not running"))),
        }
    }

    fn bundle(&self) -> Result<PathBuf> {
        self.bundle
            .lock()
            .map_err(|_| Error::internal("runtime state poisoned"))?
            .clone()
            .ok_or_else(|| Error::not_found("the container has not been created"))
    }
}

/// What a runtime's complaint means: a container or process that is gone,
/// or a request that cannot be done now.
fn failure_kind(msg: &str) -> berth_proto::errdefs::Kind {
    if msg.contains("does not exist") || msg.contains("not running") {
        berth_proto::errdefs::Kind::NotFound
    } else {
        berth_proto::errdefs::Kind::FailedPrecondition
    }
}

fn stdio(fd: Option<std::os::fd::OwnedFd>) -> Stdio {
    fd.map_or_else(Stdio::null, Stdio::from)
}

/// Where runc hands over a terminal's master (`--console-socket`): runc
/// connects while it creates the process, sends the master over
/// SCM_RIGHTS and exits, so the connection waits in the backlog until
/// [`take`](Self::take) after runc returned. The socket lives in a private
/// directory because a bundle path can exceed the 108 bytes a socket path
/// may have. Removed on drop.
struct ConsoleSocket {
    dir: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    fn new() -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "berth-console-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of a shim with this pid that died: bind would fail.
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::io(format!("remove stale {}", dir.display()), e));
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let listener = std::os::unix::net::UnixListener::bind(dir.join("s"))
            .map_err(|e| Error::io("bind the console socket", e));
        match listener {
            Ok(listener) => Ok(Self { dir, listener }),
            Err(e) => {
                if let Err(r) = std::fs::remove_dir_all(&dir) {
                    eprintln!("remove {}: {r}", dir.display());
                }
                Err(e)
            }
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("s")
    }

    /// The master runc sent; an error when it sent none.
    fn take(&self, binary: &str) -> Result<std::os::fd::OwnedFd> {
        self.listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("console socket", e))?;
        let (conn, _) = self.listener.accept().map_err(|e| {
            Error::precondition(format!(
                "{binary} did not hand over the terminal on --console-socket: {e}"
            ))
        })?;
        // The listener's O_NONBLOCK is inherited: the master may come a
        // moment after the connection, so wait for it.
        conn.set_nonblocking(false)
            .map_err(|e| Error::io("console socket connection", e))?;
        let fd = std::os::fd::OwnedFd::from(conn);
        let (_, master) = super::builtin::sync::recv_fd(&fd)?;
        master.ok_or_else(|| {
            Error::precondition(format!(
                "{binary} connected to the console socket but sent no terminal"
            ))
        })
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("remove {}: {e}", self.dir.display());
        }
    }
}

impl OciRuntime for External {
    fn create(&self, opts: CreateOpts) -> Result<Created> {
        let console = opts.io.terminal.then(ConsoleSocket::new).transpose()?;
        let b = crate::bundle::Bundle::new(&opts.bundle);
        let (pidfile, log) = (b.runtime_pid(), b.runtime_log());
        let mut c = self.cmd();
        // The container inherits runc's stdio; runc's own errors go to its log.
        c.arg("--log")
            .arg(&log)
            .arg("create")
            .arg("--bundle")
            .arg(&opts.bundle)
            .arg("--pid-file")
            .arg(&pidfile);
        if let Some(cs) = &console {
            c.arg("--console-socket").arg(cs.path());
        }
        c.arg(&opts.id)
            .stdin(stdio(opts.io.stdin))
            .stdout(stdio(opts.io.stdout))
            .stderr(stdio(opts.io.stderr));
        let st = c
            .status()
            .map_err(|e| Error::io(format!("run {} create", self.binary), e))?;
        if !st.success() {
            let msg = std::fs::read_to_string(&log).unwrap_or_default();
            let last = msg.lines().last().unwrap_or("").to_string();
            return Err(Error::precondition(format!(
                "{} create failed ({st}): {last}",
                self.binary
            )));
        }
        let console = console.map(|cs| cs.take(&self.binary)).transpose()?;
        *self
            .bundle
            .lock()
            .map_err(|_| Error::internal("runtime state poisoned"))? = Some(opts.bundle.clone());
        let pid = std::fs::read_to_string(&pidfile)
            .map_err(|e| Error::io("read the runtime's pid file", e))?
            .trim()
            .parse()
            .map_err(|_| Error::internal("the runtime's pid file holds no pid"))?;
        Ok(Created { pid, console })
    }

    fn start(&self, id: &str) -> Result<()> {
        let mut c = self.cmd();
        c.arg("start").arg(id);
        self.run(c, "start").map(|_| ())
    }

    fn exec(&self, id: &str, opts: ExecOpts) -> Result<Created> {
        let console = opts.io.terminal.then(ConsoleSocket::new).transpose()?;
        let bundle = self.bundle()?;
        let [pfile, pidfile, log] = crate::bundle::Bundle::new(bundle).exec_files(&opts.exec_id);
        std::fs::write(
            &pfile,
            serde_json::to_vec(&opts.process).map_err(|e| {
                Error::caused(
                    berth_proto::errdefs::Kind::Internal,
                    "encode process spec",
                    e,
                )
            })?,
        )
        .map_err(|e| Error::io("write process spec", e))?;
        let mut c = self.cmd();
        // The process inherits runc's stdio, all three; runc's own errors
        // go to its log (a pipe would also be the process's stderr, and
        // reading it to its end would wait for the process).
        c.arg("--log")
            .arg(&log)
            .arg("exec")
            .arg("--process")
            .arg(&pfile)
            .arg("--pid-file")
            .arg(&pidfile)
            .arg("--detach");
        if let Some(cs) = &console {
            c.arg("--console-socket").arg(cs.path());
        }
        c.arg(id)
            .stdin(stdio(opts.io.stdin))
            .stdout(stdio(opts.io.stdout))
            .stderr(stdio(opts.io.stderr));
        let st = c.status();
        if let Err(e) = std::fs::remove_file(&pfile) {
            eprintln!("remove {}: {e}", pfile.display());
        }
        let st = st.map_err(|e| Error::io(format!("run {} exec", self.binary), e))?;
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        if let Err(e) = std::fs::remove_file(&log) {
            eprintln!("remove {}: {e}", log.display());
        }
        if !st.success() {
            let last = said.lines().last().unwrap_or("");
            return Err(Error::new(
                failure_kind(last),
                format!("{} exec failed ({st}): {last}", self.binary),
            ));
        }
        let console = console.map(|cs| cs.take(&self.binary)).transpose()?;
        let pid = std::fs::read_to_string(&pidfile)
            .map_err(|e| Error::io("read exec pid file", e))?
            .trim()
            .parse()
            .map_err(|_| Error::internal("exec pid file holds no pid"))?;
        Ok(Created { pid, console })
    }

    fn kill(&self, id: &str, pid: u32, signal: u32, all: bool) -> Result<()> {
        if !all && pid > 0 {
            // A single process (an exec): signal it directly.
            return signal_process(pid, signal);
        }
        let mut c = self.cmd();
        c.arg("kill");
        if all {
            c.arg("--all");
        }
        c.arg(id).arg(signal.to_string());
        self.run(c, "kill").map(|_| ())
    }

    fn delete(&self, id: &str) -> Result<()> {
        let mut c = self.cmd();
        c.arg("delete").arg("--force").arg(id);
        match self.run(c, "delete") {
            Err(e) if e.kind() == berth_proto::errdefs::Kind::NotFound => Ok(()),
            r => r.map(|_| ()),
        }
    }

    fn pause(&self, id: &str) -> Result<()> {
        let mut c = self.cmd();
        c.arg("pause").arg(id);
        self.run(c, "pause").map(|_| ())
    }

    fn resume(&self, id: &str) -> Result<()> {
        let mut c = self.cmd();
        c.arg("resume").arg(id);
        self.run(c, "resume").map(|_| ())
    }

    fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let mut c = self.cmd();
        c.arg("ps").arg("--format").arg("json").arg(id);
        let out = self.run(c, "ps")?;
        serde_json::from_slice(&out).map_err(|e| {
            Error::caused(
                berth_proto::errdefs::Kind::Internal,
                format!("{} ps output", self.binary),
                e,
            )
        })
    }

    fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let f = crate::bundle::Bundle::new(self.bundle()?).update_spec();
        std::fs::write(
            &f,
            serde_json::to_vec(resources).map_err(|e| {
                Error::caused(berth_proto::errdefs::Kind::Internal, "encode resources", e)
            })?,
        )
        .map_err(|e| Error::io("write resources", e))?;
        let mut c = self.cmd();
        c.arg("update").arg("--resources").arg(&f).arg(id);
        self.run(c, "update").map(|_| ())
    }

    fn stats(&self, id: &str) -> Result<Stats> {
        // On a cgroup2 host containerd's runc shim reads the container's
        // cgroup itself, found from its init's pid, and answers the v2
        // type; runc's own statistics are v1-shaped.
        if let Hierarchy::V2(root) = Hierarchy::detect() {
            let dir = crate::cgroup::hierarchy::unified_dir(&root, self.init_pid(id)?)?;
            return Ok(Stats::V2(crate::cgroup::stats::v2(&dir)));
        }
        let mut c = self.cmd();
        c.arg("events").arg("--stats").arg(id);
        let out = self.run(c, "events --stats")?;
        let v: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| Error::caused(berth_proto::errdefs::Kind::Internal, "stats output", e))?;
        let d = &v["data"];
        let u = |p: &str| {
            d.pointer(p)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        let entry = |p: &str| m::MemoryEntry {
            limit: u(&format!("{p}/limit")),
            usage: u(&format!("{p}/usage")),
            max: u(&format!("{p}/max")),
            failcnt: u(&format!("{p}/failcnt")),
        };
        Ok(Stats::V1(m::Metrics {
            pids: Some(m::PidsStat {
                current: u("/pids/current"),
                limit: u("/pids/limit"),
            }),
            cpu: Some(m::CpuStat {
                usage: Some(m::CpuUsage {
                    total: u("/cpu/usage/total"),
                    kernel: u("/cpu/usage/kernel"),
                    user: u("/cpu/usage/user"),
                    per_cpu: d
                        .pointer("/cpu/usage/percpu")
                        .and_then(serde_json::Value::as_array)
                        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
                        .unwrap_or_default(),
                }),
                throttling: Some(m::Throttle {
                    periods: u("/cpu/throttling/periods"),
                    throttled_periods: u("/cpu/throttling/throttledPeriods"),
                    throttled_time: u("/cpu/throttling/throttledTime"),
                }),
            }),
            memory: Some(m::MemoryStat {
                cache: u("/memory/cache"),
                rss: u("/memory/raw/rss"),
                usage: Some(entry("/memory/usage")),
                swap: Some(entry("/memory/swap")),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    fn oom_watch(&self, id: &str) -> Option<crate::cgroup::OomWatch> {
        // The runtime made the cgroup; its init (waiting in `create`)
        // is in it, so that is where to find it, whichever cgroup driver
        // named it.
        let watch = || {
            let h = Hierarchy::detect();
            let path = h.cgroup_of(self.init_pid(id)?)?;
            h.open(&path).oom_watch()
        };
        match watch() {
            Ok(w) => Some(w),
            Err(e) => {
                // OOM events are lost, the container runs: say so.
                eprintln!("watch OOM kills: {}", e.chain());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::state_root;
    use std::path::Path;

    #[test]
    fn runtime_state_is_per_namespace_and_per_daemon() {
        let bundle = Path::new("/s/io.containerd.runtime.v2.task/moby/c1");
        assert_eq!(
            state_root("/x/runtime-runc", bundle, "moby"),
            "/x/runtime-runc/moby"
        );
        assert_eq!(state_root("", bundle, "moby"), "/s/runc/moby");
        // A bundle laid out otherwise keeps it inside.
        assert_eq!(
            state_root("", Path::new("/tmp/b"), "default"),
            "/tmp/b/runc/default"
        );
    }
}
