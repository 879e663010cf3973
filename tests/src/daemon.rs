//! A berthd under test ([`Daemon`]) on its own temp directories, and
//! running berthctl against a daemon's socket.

use crate::guard;
use crate::paths::bin;
use crate::process::{ok, terminate};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// A berthd running on its own temp root, state and socket.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    /// Starts a daemon and waits until its socket answers.
    pub fn start() -> Daemon {
        Self::start_with_config("")
    }

    /// Starts a daemon with `toml` as its configuration file.
    pub fn start_with_config(toml: &str) -> Daemon {
        Self::start_prepared(toml, |_| {})
    }

    /// Starts a daemon after `prepare` has set up its directory (e.g.
    /// pre-created root and state directories, as an admin leaves them).
    pub fn start_prepared(toml: &str, prepare: impl FnOnce(&Path)) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("tempdir");
        prepare(dir.path());
        if !toml.is_empty() {
            std::fs::write(dir.path().join("config.toml"), toml).expect("write config");
        }
        let sock = dir.path().join("berth.sock");
        let mut d = Daemon {
            dir,
            sock,
            child: None,
            starts: 0,
        };
        d.spawn();
        d
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `unix://` address of the gRPC socket.
    pub fn address(&self) -> String {
        self.sock.display().to_string()
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.path().join(format!("berthd.{}.log", self.starts)))
                .expect("log file");
        let child = self
            .berthd_on(&self.root(), &self.state(), &self.sock)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        self.child = Some(child);
        let child = self.child.as_mut().expect("just spawned");
        if let Err(e) = wait_listening("berthd", &self.sock, Duration::from_secs(20), child) {
            panic!("{e}:\n{}", self.log());
        }
    }

    /// A berthd command line on `root`, `state` and `sock` with this
    /// daemon's configuration: a second daemon beside this one.
    pub fn berthd_on(&self, root: &Path, state: &Path, sock: &Path) -> Command {
        let mut c = Command::new(bin("berthd"));
        c.arg("--root")
            .arg(root)
            .arg("--state")
            .arg(state)
            .arg("--address")
            .arg(sock)
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null());
        c
    }

    /// SIGKILLs the daemon and starts it again at once, before the old
    /// process is reaped (as a supervisor restarting a crashed daemon
    /// does, racing the kernel's teardown of the old one).
    pub fn crash_and_restart(&mut self) {
        let mut old = self.child.take().expect("running");
        // SAFETY: signalling our own child by pid, not yet reaped.
        unsafe {
            libc::kill(old.id() as i32, libc::SIGKILL);
        }
        self.spawn();
        let _ = old.wait();
        // The first wait may have been answered by the dying daemon.
        let child = self.child.as_mut().expect("just spawned");
        if let Err(e) = wait_listening("berthd", &self.sock, Duration::from_secs(20), child) {
            panic!("{e}:\n{}", self.log());
        }
    }

    /// Everything the daemon has logged, across restarts.
    pub fn log(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.starts {
            if let Ok(mut f) = std::fs::File::open(self.dir.path().join(format!("berthd.{i}.log")))
            {
                let _ = f.read_to_string(&mut s);
            }
        }
        s
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILLs the daemon (a crash) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A host reboot as berthd sees it: berthd, its shims and containers
    /// killed, their mounts and cgroups gone, the state directory (a tmpfs
    /// on a host) emptied; then berthd starts again on the same root.
    pub fn reboot(&mut self) {
        self.reboot_with(|| {});
    }

    /// [`Self::reboot`], running `while_down` before berthd starts again
    /// (to undo more of what a reboot undoes, e.g. a namespace's links).
    pub fn reboot_with(&mut self, while_down: impl FnOnce()) {
        self.kill9();
        let state = self.state();
        guard::power_off(&self.sock, &state);
        std::fs::remove_dir_all(&state).expect("empty the state directory");
        while_down();
        self.spawn();
    }

    /// SIGTERMs the daemon and waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        terminate(&mut c, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("berthd ignored SIGTERM for 10s"))
    }

    /// Starts the daemon again on the same directories.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the daemon first");
        self.spawn();
    }

    /// A gRPC channel to the daemon.
    pub async fn channel(&self) -> Channel {
        match berth_proto::client::connect(&self.address()).await {
            Ok(c) => c,
            Err(e) => panic!("connect to berthd: {e:?}\nberthd's log:\n{}", self.log()),
        }
    }

    /// Runs the real `ctr` against this daemon.
    pub fn ctr(&self, ctr: &Path, ns: &str, args: &[&str]) -> Output {
        Command::new(ctr)
            .arg("--address")
            .arg(&self.sock)
            .arg("--namespace")
            .arg(ns)
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// Runs `berthctl` against this daemon.
    pub fn berthctl(&self, ns: &str, args: &[&str]) -> Output {
        self.berthctl_command(ns, args)
            .output()
            .expect("run berthctl")
    }

    /// berthctl against this daemon, to spawn and talk to while it runs.
    pub fn berthctl_command(&self, ns: &str, args: &[&str]) -> Command {
        berthctl_at(&self.sock, self.dir.path(), ns, args)
    }

    /// Imports an image archive into namespace `default` (`extra` flags go
    /// before the file); returns berthctl's output.
    pub fn import(&self, archive: &Path, extra: &[&str]) -> String {
        let mut args = vec!["images", "import"];
        args.extend_from_slice(extra);
        let file = archive.to_str().expect("utf-8 path");
        args.push(file);
        ok(&format!("import {file}"), self.berthctl("default", &args))
    }

    /// Runs `berthctl` on a fresh pseudo-terminal of `cols`x`rows` made by
    /// `script(1)` (the `script` peer), as an operator at a terminal would.
    pub fn berthctl_in_terminal(
        &self,
        script: &Path,
        (cols, rows): (u16, u16),
        args: &[&str],
    ) -> Output {
        let quote = |a: &str| format!("'{}'", a.replace('\'', "'\\''"));
        let mut cmd = format!(
            "stty cols {cols} rows {rows}; exec {} --address {} --namespace default",
            quote(bin("berthctl").to_str().unwrap()),
            quote(self.sock.to_str().unwrap()),
        );
        for a in &without_network(args) {
            cmd.push(' ');
            cmd.push_str(&quote(a));
        }
        Command::new(script)
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .env_remove("BERTH_ADDRESS")
            .env_remove("BERTH_NAMESPACE")
            .env("BERTH_FIFO_DIR", self.dir.path().join("fifo"))
            .output()
            .expect("run script")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // A test that failed midway leaves shims (they outlive berthd by
        // design), their containers and mounts behind.
        guard::after_daemon(&self.sock, self.dir.path());
    }
}

/// `berthctl` against the API socket `sock` in namespace `ns`, blind to the
/// caller's `BERTH_*` settings, its FIFOs under `dir`. A `run`
/// that names no network gets `--net none` (see [`without_network`]).
pub fn berthctl_at(sock: &Path, dir: &Path, ns: &str, args: &[&str]) -> Command {
    berthctl_at_default_net(sock, dir, ns, &without_network(args))
}

/// [`berthctl_at`] without the `--net none` it adds: `run` joins the
/// daemon's default network unless told otherwise. Only for tests of that
/// choice against a daemon without networks (containerd), or a berthd in a
/// private network namespace (`unshare --net --mount`).
pub fn berthctl_at_default_net(sock: &Path, dir: &Path, ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin("berthctl"));
    c.arg("--address")
        .arg(sock)
        .arg("--namespace")
        .arg(ns)
        .args(args)
        .env_remove("BERTH_ADDRESS")
        .env_remove("BERTH_NAMESPACE")
        .env_remove("BERTH_SNAPSHOTTER")
        .env("BERTH_FIFO_DIR", dir.join("fifo"));
    c
}

/// berthctl's arguments, with `--net none` right after `run` when they name
/// no network (`--net`, `--network`, `--net-host`). The tests run on the
/// host's network, where `run`'s default (berthd's default network) would
/// make a bridge, addresses and iptables rules: those are made only by
/// tests in a private network namespace, which name their networks. Any
/// mention of a network flag, even in the container's command, leaves the
/// arguments alone (so none is ever added next to another).
pub fn without_network<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut out = args.to_vec();
    let names_net = |a: &&str| {
        ["--net", "--network", "--net-host"].contains(a)
            || a.starts_with("--net=")
            || a.starts_with("--network=")
    };
    if args.iter().any(names_net) {
        return out;
    }
    // The subcommand is the first word that is neither a global option nor
    // the value of one.
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match *a {
            "--address" | "-n" | "--namespace" | "--format" | "--snapshotter" => i += 2,
            a if a.starts_with('-') => i += 1,
            "run" => {
                out.splice(i + 1..i + 1, ["--net", "none"]);
                break;
            }
            _ => break,
        }
    }
    out
}

/// Waits until `child` (a daemon called `what`) accepts connections on
/// `sock`; says why not when it exits first or takes over `limit` (the
/// caller adds its log; the child is left to the caller's Drop).
pub fn wait_listening(
    what: &str,
    sock: &Path,
    limit: Duration,
    child: &mut Child,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("{what} exited during start ({st})"));
        }
        if Instant::now() >= deadline {
            return Err(format!("{what} did not listen within {}s", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::without_network;

    #[test]
    fn run_gets_no_network_unless_it_names_one() {
        assert_eq!(
            without_network(&["run", "--rm", "busybox", "true"]),
            ["run", "--net", "none", "--rm", "busybox", "true"]
        );
        assert_eq!(
            without_network(&["--format", "json", "-n", "run", "run", "-d", "bb"]),
            [
                "--format", "json", "-n", "run", "run", "--net", "none", "-d", "bb"
            ]
        );
        for named in [
            &["run", "--net", "host", "bb"][..],
            &["run", "--network=n1", "bb"][..],
            &["run", "--net-host", "bb"][..],
            &["--format=json", "run", "--net=none", "bb"][..],
        ] {
            assert_eq!(without_network(named), named);
        }
        // Not a run: untouched, even with "run" further on.
        for other in [
            &["tasks", "exec", "c1", "run"][..],
            &["images", "ls"][..],
            &[][..],
        ] {
            assert_eq!(without_network(other), other);
        }
    }
}
