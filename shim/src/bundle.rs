//! The bundle directory and the files the shim keeps in it, by name:
//! `config.json` (the OCI spec), `rootfs`, and the shim's own `address`,
//! `init.pid`, `init.exit`, `runtime.json` and `shim.log`. Writes are
//! durable (temp file, fsync, rename), so a restarted daemon or a `delete`
//! after a crash reads whole files. May use `crate::error` only.

use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The saved exit of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedExit {
    pub pid: u32,
    pub status: u32,
    pub exited_at: i64,
}

/// A container's bundle directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    pub fn new(dir: impl Into<PathBuf>) -> Bundle {
        Bundle { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The OCI runtime spec.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Where the shim mounts the root filesystem a Create request names.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The shim's socket address.
    pub fn address(&self) -> PathBuf {
        self.dir.join("address")
    }

    /// The init process's pid.
    pub fn init_pid(&self) -> PathBuf {
        self.dir.join("init.pid")
    }

    /// The init process's exit (JSON), written durably when it exits.
    pub fn init_exit(&self) -> PathBuf {
        self.dir.join("init.exit")
    }

    /// Which runtime runs the container (JSON).
    pub fn runtime(&self) -> PathBuf {
        self.dir.join("runtime.json")
    }

    /// The shim's own log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }

    /// runc/crun's pid file for the init.
    pub fn runtime_pid(&self) -> PathBuf {
        self.dir.join("runtime.pid")
    }

    /// runc/crun's own log (its errors, one JSON line each).
    pub fn runtime_log(&self) -> PathBuf {
        self.dir.join("runtime.log")
    }

    /// An exec's process spec, pid file and runc log, while runc execs it.
    pub fn exec_files(&self, exec_id: &str) -> [PathBuf; 3] {
        ["json", "pid", "log"].map(|ext| self.dir.join(format!("exec-{exec_id}.{ext}")))
    }

    /// The resources of an update, for `runc update -r`.
    pub fn update_spec(&self) -> PathBuf {
        self.dir.join("update.json")
    }

    pub fn write_pid(&self, pid: u32) -> Result<()> {
        write_file(&self.init_pid(), pid.to_string().as_bytes())
    }

    /// The init's pid; 0 when none was recorded.
    pub fn read_pid(&self) -> u32 {
        std::fs::read_to_string(self.init_pid())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn write_exit(&self, exit: &SavedExit) -> Result<()> {
        write_json(&self.init_exit(), exit)
    }

    pub fn read_exit(&self) -> Option<SavedExit> {
        read_json(&self.init_exit())
    }

    pub fn write_runtime<T: serde::Serialize>(&self, choice: &T) -> Result<()> {
        write_json(&self.runtime(), choice)
    }

    /// The recorded runtime choice; `None` when absent or unreadable.
    pub fn read_runtime<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        read_json(&self.runtime())
    }
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec(v).map_err(|e| {
        Error::caused(
            berth_proto::errdefs::Kind::Internal,
            format!("encode {}", path.display()),
            e,
        )
    })?;
    write_file(path, &bytes)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes a file durably: temp file, fsync, rename, fsync of the directory.
pub fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("rename to {}", path.display()), e))?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)
            .and_then(|df| df.sync_all())
            .map_err(|e| Error::io(format!("sync {}", d.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_durably() {
        let dir = std::env::temp_dir().join(format!("berth-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let b = Bundle::new(&dir);
        assert_eq!(b.config(), dir.join("config.json"));
        let [spec, pid, log] = b.exec_files("e1");
        assert_eq!(
            (spec, pid, log),
            (
                dir.join("exec-e1.json"),
                dir.join("exec-e1.pid"),
                dir.join("exec-e1.log")
            )
        );
        assert_eq!(b.read_pid(), 0);
        assert_eq!(b.read_exit(), None);
        b.write_pid(42).unwrap();
        assert_eq!(b.read_pid(), 42);
        let exit = SavedExit {
            pid: 42,
            status: 137,
            exited_at: 5,
        };
        b.write_exit(&exit).unwrap();
        assert_eq!(b.read_exit(), Some(exit));
        assert!(!dir.join("init.tmp").exists(), "no temp file is left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
