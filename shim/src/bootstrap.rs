//! The `start` and `delete` actions.

use crate::{Error, Flags, Result};
use berth_proto::pb::containerd::task::v2::DeleteResponse;
use prost::Message;
use sha2::Digest as _;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// Files the shim keeps in the bundle.
pub mod files {
    /// The shim's socket address.
    pub const ADDRESS: &str = "address";
    /// The init process's pid.
    pub const INIT_PID: &str = "init.pid";
    /// The init process's exit (JSON), written durably when it exits.
    pub const INIT_EXIT: &str = "init.exit";
    /// Which runtime runs the container (JSON).
    pub const RUNTIME: &str = "runtime.json";
    /// The shim's own log.
    pub const LOG: &str = "shim.log";
}

/// Where the shim for `ns`/`id` of the daemon at `address` listens.
pub fn socket_path(address: &str, ns: &str, id: &str) -> PathBuf {
    let addr = berth_proto::ttrpc::socket_path(address);
    let dir = Path::new(addr)
        .parent()
        .unwrap_or(Path::new("/run/berth"))
        .join("s");
    let h = sha2::Sha256::digest(
        Path::new(addr)
            .join(ns)
            .join(id)
            .display()
            .to_string()
            .as_bytes(),
    );
    dir.join(hex::encode(h))
}

fn bundle_dir(flags: &Flags) -> Result<PathBuf> {
    if !flags.bundle.is_empty() {
        return Ok(PathBuf::from(&flags.bundle));
    }
    std::env::current_dir().map_err(|e| Error::io("working directory (the bundle)", e))
}

fn require(flags: &Flags) -> Result<()> {
    if flags.namespace.is_empty() {
        return Err(Error::invalid("-namespace is required"));
    }
    if flags.id.is_empty() {
        return Err(Error::invalid("-id is required"));
    }
    Ok(())
}

/// `start`: serve the container's task API from a daemonised shim and
/// print its address (reusing a shim already serving it).
pub fn start(flags: &Flags) -> Result<()> {
    require(flags)?;
    let bundle = bundle_dir(flags)?;
    // Runtime options may arrive on stdin; Create carries them too.
    let mut opts = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut opts);
    let sock = socket_path(&flags.address, &flags.namespace, &flags.id);
    let address = format!("unix://{}", sock.display());
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        println!("{address}");
        return Ok(());
    }
    if let Some(d) = sock.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(format!("create {}", d.display()), e))?;
    }
    let _ = std::fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock)
        .map_err(|e| Error::io(format!("listen on {}", sock.display()), e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(bundle.join(files::LOG))
        .map_err(|e| Error::io("open shim log", e))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("find own binary", e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "-namespace",
        &flags.namespace,
        "-id",
        &flags.id,
        "-address",
        &flags.address,
    ])
    .args(["-publish-binary", &flags.publish_binary, "-socket"])
    .arg(&sock)
    .arg("-bundle")
    .arg(&bundle);
    if flags.debug {
        cmd.arg("-debug");
    }
    cmd.arg("serve")
        .current_dir(&bundle)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    let lfd = listener.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The listening socket becomes fd 3 of the serving shim (dup2
            // onto itself would keep close-on-exec, so clear it then).
            if lfd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(lfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| Error::io("start the serving shim", e))?;
    drop(listener);
    write_file(&bundle.join(files::ADDRESS), address.as_bytes())?;
    println!("{address}");
    std::io::stdout()
        .flush()
        .map_err(|e| Error::io("print address", e))
}

/// Writes a file durably: temp file, fsync, rename.
pub fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("rename to {}", path.display()), e))?;
    if let Some(d) = path.parent()
        && let Ok(df) = std::fs::File::open(d)
    {
        let _ = df.sync_all();
    }
    Ok(())
}

/// The saved exit of a process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct SavedExit {
    pub pid: u32,
    pub status: u32,
    pub exited_at: i64,
}

/// `delete`: clean up after a shim that is gone — stop what is left of the
/// container, unmount its rootfs — and print the saved exit.
pub fn delete(flags: &Flags) -> Result<()> {
    let bundle = bundle_dir(flags)?;
    let pid: u32 = std::fs::read_to_string(bundle.join(files::INIT_PID))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if let Err(e) = crate::runtime::cleanup_after_crash(&bundle, &flags.id, pid) {
        eprintln!("cleanup of {}: {e}", flags.id);
    }
    let rootfs = bundle.join("rootfs");
    let _ = berth_snapshotter::mount::unmount(&rootfs);
    if !flags.address.is_empty() && !flags.namespace.is_empty() {
        let _ = std::fs::remove_file(socket_path(&flags.address, &flags.namespace, &flags.id));
    }
    let exit: SavedExit = std::fs::read(bundle.join(files::INIT_EXIT))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(SavedExit {
            pid,
            status: 128 + libc::SIGKILL as u32,
            exited_at: now(),
        });
    let resp = DeleteResponse {
        pid: exit.pid,
        exit_status: exit.status,
        exited_at: Some(timestamp(exit.exited_at)),
    };
    std::io::stdout()
        .write_all(&resp.encode_to_vec())
        .and_then(|()| std::io::stdout().flush())
        .map_err(|e| Error::io("write delete response", e))
}

/// Nanoseconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// A protobuf timestamp.
pub fn timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::socket_path;

    #[test]
    fn socket_paths_are_short_and_distinct() {
        let a = socket_path("unix:///run/berth/berth.sock", "default", "c1");
        let b = socket_path("/run/berth/berth.sock", "default", "c2");
        assert!(a.starts_with("/run/berth/s/"));
        assert_ne!(a, b);
        assert!(a.as_os_str().len() < 108);
    }
}
