//! A real dockerd (Debian's docker.io 20.10) on temp directories, driving
//! containers through a berthd given as its `--containerd`, and the docker
//! CLI that talks to it.
//!
//! Nothing it does reaches the network or the host's own docker: its data
//! root, exec root, socket, pid file and CLI config live under a temp dir,
//! it makes no bridge, iptables rules or sysctl changes, and its
//! containers' cgroups live under a parent of its own, removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The name of a dockerd runtime (`docker run --runtime`) that runs on the
/// shim's built-in runtime: dockerd 20.10 passes a runtime's `path` as
/// the runc options' `BinaryName`, and an empty one is the built-in.
pub const BUILTIN_RUNTIME: &str = "berth-builtin";

/// The docker CLI that matches Debian's dockerd. `/usr/local/bin/docker`
/// on some machines is an unrelated newer client that shadows it on PATH.
pub const DOCKER_CLI: &str = "/usr/bin/docker";

/// A running dockerd; stopped with SIGTERM on drop, after which whatever
/// it left mounted under its directories is unmounted and its cgroups are
/// removed (it may have been killed mid-way).
pub struct Dockerd {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    cli: PathBuf,
    /// The containerd (berthd) socket it was given.
    containerd: PathBuf,
    /// The cgroup parent of its containers (relative to each hierarchy).
    cgroup_parent: String,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts `dockerd` with `containerd` (a berthd gRPC socket) as its
    /// containerd, and waits until its API answers. `cli` is the docker
    /// client used by [`docker`](Self::docker).
    pub fn start(dockerd: &Path, cli: &Path, containerd: &Path) -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd-")
            .tempdir()
            .expect("tempdir");
        let sock = dir.path().join("docker.sock");
        assert!(
            sock.as_os_str().len() < 108,
            "{} is too long for a unix socket: set TMPDIR to a shorter directory",
            sock.display()
        );
        let name = dir
            .path()
            .file_name()
            .expect("temp dir name")
            .to_string_lossy()
            .to_string();
        let cgroup_parent = format!("/{name}");
        // Network settings are flags (as an operator would pass them); the
        // rest is in the config file. dockerd refuses a setting given both ways.
        let config = serde_json::json!({
            "debug": true,
            "cgroup-parent": cgroup_parent,
            // A container left running at shutdown is killed this soon.
            "shutdown-timeout": 2,
            "live-restore": false,
            "features": {"buildkit": false},
            "registry-mirrors": [],
            "insecure-registries": [],
            "runtimes": {BUILTIN_RUNTIME: {"path": ""}},
        });
        let config_file = dir.path().join("daemon.json");
        std::fs::write(&config_file, config.to_string()).expect("write daemon.json");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("log file");
        let child = Command::new(dockerd)
            .arg("--config-file")
            .arg(&config_file)
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .arg("--containerd")
            .arg(containerd)
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--userland-proxy=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let mut d = Dockerd {
            dir,
            sock,
            cli: cli.to_path_buf(),
            containerd: containerd.to_path_buf(),
            cgroup_parent,
            child: Some(child),
        };
        // dockerd listens only once it has initialised (containerd reached).
        let child = d.child.as_mut().expect("just spawned");
        if let Err(e) =
            crate::daemon::wait_listening("dockerd", &d.sock, Duration::from_secs(60), child)
        {
            panic!("{e}:\n{}", d.log());
        }
        d
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything dockerd has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// The cgroup (v1 path, relative to a hierarchy) of its container `id`.
    pub fn cgroup_of(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent)
    }

    /// The docker CLI pointed at this dockerd, with a config dir of its own
    /// (no credentials or contexts of the host's user leak in).
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cli);
        c.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("cli"))
            .env("DOCKER_BUILDKIT", "0")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        c
    }

    /// Runs the docker CLI against this dockerd; panics if it takes over a
    /// minute (a lost exit event makes `docker run`/`wait` hang for ever).
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_with_input(args, b"")
    }

    /// Like [`docker`](Self::docker), with `input` as its stdin.
    pub fn docker_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let limit = Duration::from_secs(60);
        crate::process::output_within(self.docker_command(args), input, limit).unwrap_or_else(
            || {
                panic!(
                    "docker {args:?} did not finish within {limit:?}; dockerd's log:\n{}",
                    self.log()
                )
            },
        )
    }

    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // Its own shutdown stops containers within shutdown-timeout (2s).
        if crate::process::terminate(&mut c, Duration::from_secs(20)).is_none() {
            eprintln!("dockerd ignored SIGTERM for 20s; killed it");
        }
    }

    /// Deletes what a dockerd that died uncleanly left in berthd (a clean
    /// shutdown stops and deletes its containers itself): tasks killed and
    /// deleted, so their shims exit, then the container records. If berthd
    /// is not answering, runc (by the state under dockerd's exec root) at
    /// least kills the processes, so that their cgroups can go.
    fn delete_leftover_containers(&self) {
        let berthctl = |args: &[&str]| {
            Command::new(crate::paths::bin("berthctl"))
                .arg("--address")
                .arg(&self.containerd)
                .args(["--namespace", "moby"])
                .args(args)
                .env_remove("BERTH_ADDRESS")
                .env_remove("BERTH_NAMESPACE")
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
        };
        if let Some(ls) = berthctl(&["containers", "ls", "-q"]) {
            for id in String::from_utf8_lossy(&ls.stdout).split_whitespace() {
                let _ = berthctl(&["tasks", "rm", "--force", id]);
                let _ = berthctl(&["containers", "rm", id]);
            }
        }
        let root = self.dir.path().join("exec/runtime-runc/moby");
        let Ok(rd) = std::fs::read_dir(&root) else {
            return;
        };
        for e in rd.flatten() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force"])
                .arg(e.file_name())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        self.delete_leftover_containers();
        // overlay2 layers, shm, volumes: never remove the dir into a mount.
        crate::guard::unmount_under(self.dir.path());
        crate::guard::remove_cgroups(&self.cgroup_parent);
    }
}
