//! The `start` and `delete` actions.

use crate::{Error, Flags, Result};
use berth_proto::pb::containerd::task::v2::DeleteResponse;
use prost::Message;
use sha2::Digest as _;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
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
    // The serving shim is a fork of this process, not a new execution of
    // the binary: one exec and dynamic link fewer per container start.
    // SAFETY: this process is single-threaded (no runtime has started).
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork the serving shim", e))? {
        nix::unistd::ForkResult::Child => {
            let code = match become_server(flags, &bundle, &sock, &address, listener, log) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("containerd-shim-berth-v2: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
        nix::unistd::ForkResult::Parent { .. } => {}
    }
    drop(listener);
    println!("{address}");
    std::io::stdout()
        .flush()
        .map_err(|e| Error::io("print address", e))
}

/// In the forked child of `start`: detach from the caller (own session,
/// stdio off its pipes, stderr to the shim log) and serve.
fn become_server(
    flags: &Flags,
    bundle: &Path,
    sock: &Path,
    address: &str,
    listener: std::os::unix::net::UnixListener,
    log: std::fs::File,
) -> Result<()> {
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    // The caller reads our parent's stdout to its end: let go of it first.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| Error::io("open /dev/null", e))?;
    let onto = |fd: &dyn AsRawFd, to: i32, what: &str| {
        // SAFETY: dup2 onto a standard descriptor.
        if unsafe { libc::dup2(fd.as_raw_fd(), to) } < 0 {
            return Err(Error::io(what.to_string(), std::io::Error::last_os_error()));
        }
        Ok(())
    };
    onto(&null, 0, "stdin to /dev/null")?;
    onto(&null, 1, "stdout to /dev/null")?;
    onto(&log, 2, "stderr to the shim log")?;
    std::env::set_current_dir(bundle)
        .map_err(|e| Error::io(format!("enter {}", bundle.display()), e))?;
    write_file(&bundle.join(files::ADDRESS), address.as_bytes())?;
    let mut f = flags.clone();
    f.socket = sock.display().to_string();
    f.bundle = bundle.display().to_string();
    retitle_serving();
    crate::service::serve(&f, listener)
}

/// Makes `ps` show the serving shim as `… serve`: the fork still has
/// `start`'s command line, whose last word is rewritten in place (the
/// classic setproctitle way; the same length, so nothing moves).
fn retitle_serving() {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // After the parenthesised command name (which may hold spaces), the
    // fields start at the 3rd; arg_start and arg_end are the 48th and 49th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    let fields: Vec<usize> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let (Some(&start), Some(&end)) = (fields.get(45), fields.get(46)) else {
        return;
    };
    if start == 0 || end <= start + 6 {
        return;
    }
    // SAFETY: [arg_start, arg_end) is this process's argument block, mapped
    // writable for its whole life; nothing holds a Rust reference into it.
    let args = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) };
    if let Some(word) = args.strip_suffix(b"start\0".as_slice()) {
        let at = word.len();
        args[at..at + 5].copy_from_slice(b"serve");
    }
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
    let _ = berth_mount::unmount(&rootfs);
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

pub use berth_proto::time::{now, timestamp};

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
