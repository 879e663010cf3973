//! A real containerd (the Debian package) on temp directories, for tests
//! that run berth's pieces under it and for benchmarks that compare.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running containerd; stopped with SIGTERM on drop.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    child: Child,
}

impl Containerd {
    /// Starts `binary` with CRI off, `extra` appended to its config (TOML,
    /// version 2) and `path` as its PATH when given (to find shims).
    pub fn start(binary: &Path, extra: &str, path: Option<&str>) -> Containerd {
        Self::launch(
            binary,
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
            extra,
            path,
        )
    }

    /// Starts `binary` with its CRI plugin on, `extra` appended to its
    /// config (the `[plugins."io.containerd.grpc.v1.cri"]` tables).
    pub fn start_cri(binary: &Path, extra: &str) -> Containerd {
        Self::launch(binary, "", extra, None)
    }

    fn launch(binary: &Path, disabled: &str, extra: &str, path: Option<&str>) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("berth-ctrd-")
            .tempdir()
            .expect("tempdir");
        let sock = dir.path().join("c.sock");
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\n{disabled}[grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}.ttrpc\"\n{extra}",
            dir.path().join("root").display(),
            dir.path().join("state").display(),
            sock.display(),
            sock.display()
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("containerd config");
        let mut cmd = Command::new(binary);
        cmd.arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("containerd.log")).expect("log"));
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        let child = cmd.spawn().expect("spawn containerd");
        let mut c = Containerd { dir, sock, child };
        let limit = Duration::from_secs(30);
        if let Err(e) = crate::daemon::wait_listening("containerd", &c.sock, limit, &mut c.child) {
            panic!("{e}:\n{}", c.log());
        }
        c
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `berthctl` against this containerd, its FIFOs and logs under the
    /// temp directory (as [`crate::daemon::Daemon::berthctl_command`] does).
    pub fn berthctl_command(&self, ns: &str, args: &[&str]) -> Command {
        crate::daemon::berthctl_at(&self.sock, self.dir.path(), ns, args)
    }

    /// Runs `berthctl` against this containerd.
    pub fn berthctl(&self, ns: &str, args: &[&str]) -> std::process::Output {
        self.berthctl_command(ns, args)
            .output()
            .expect("run berthctl")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        crate::process::terminate(&mut self.child, Duration::from_secs(10));
    }
}
