//! The `start` and `delete` actions: starting (or finding) the serving
//! shim, and cleaning up after one that died. May use `crate::bundle`,
//! `crate::runtime` (crash cleanup) and `crate::service` (to serve).

use crate::bundle::{Bundle, SavedExit};
use crate::flags::Flags;
use crate::{Error, Result};
use berth_proto::pb::containerd::task::v2::DeleteResponse;
use prost::Message;
use sha2::Digest as _;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

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
    // Before anything else: what serves and forks into the container must
    // not run from the host's writable binary (CVE-2019-5736; the bundle
    // is the overlay's spare layer). Returns in the sealed execution.
    crate::exe_seal::ensure(&bundle)?;
    // Runtime options may arrive on stdin; Create carries them too, so
    // what came here is only drained (containerd waits for us to read it).
    let mut opts = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut opts) {
        eprintln!("containerd-shim-berth-v2: read options from stdin: {e}");
    }
    let sock = socket_path(&flags.address, &flags.namespace, &flags.id);
    let address = format!("unix://{}", sock.display());
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        println!("{address}");
        return Ok(());
    }
    // Only root talks to shims; containerd's own shims share the directory.
    if let Some(d) = sock.parent() {
        berth_mount::private::dir_tightened(d, berth_mount::private::OWNER_ONLY)
            .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
    }
    // A socket no shim answers on is stale; if it cannot be removed, bind
    // below says why.
    if let Err(e) = std::fs::remove_file(&sock)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("remove stale {}: {e}", sock.display());
    }
    let listener = std::os::unix::net::UnixListener::bind(&sock)
        .map_err(|e| Error::io(format!("listen on {}", sock.display()), e))?;
    std::fs::set_permissions(
        &sock,
        std::os::unix::fs::PermissionsExt::from_mode(berth_mount::private::OWNER_FILE),
    )
    .map_err(|e| Error::io(format!("chmod {}", sock.display()), e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(berth_mount::private::OWNER_FILE)
        .open(Bundle::new(&bundle).log())
        .map_err(|e| Error::io("open shim log", e))?;
    // The serving shim is a fork of this process, not a new execution of
    // the binary: one exec and dynamic link fewer per container start.
    // SAFETY: this process is single-threaded (no runtime has started).
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork the serving shim", e))? {
        nix::unistd::ForkResult::Child => {
            let code = match become_server(flags, &bundle, &sock, &address, listener, log) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("containerd-shim-berth-v2: {}", e.chain());
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
    crate::bundle::write_file(&Bundle::new(bundle).address(), address.as_bytes())?;
    let mut f = flags.clone();
    f.socket = sock.display().to_string();
    f.bundle = bundle.display().to_string();
    retitle_serving();
    crate::service::task::serve(&f, listener)
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

/// `delete`: clean up after a shim that is gone — stop what is left of the
/// container, unmount its rootfs — and print the saved exit.
pub fn delete(flags: &Flags) -> Result<()> {
    let bundle = Bundle::new(bundle_dir(flags)?);
    let pid = bundle.read_pid();
    // Best effort, each step said in the log: delete must still answer
    // with the exit status so the client can forget the task.
    if let Err(e) = crate::runtime::cleanup_after_crash(bundle.dir(), &flags.id, pid) {
        eprintln!("cleanup of {}: {}", flags.id, e.chain());
    }
    if let Err(e) = berth_mount::unmount(&bundle.rootfs()) {
        eprintln!("unmount rootfs of {}: {e}", flags.id);
    }
    if !flags.address.is_empty() && !flags.namespace.is_empty() {
        let sock = socket_path(&flags.address, &flags.namespace, &flags.id);
        match std::fs::remove_file(&sock) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                eprintln!("remove {}: {e}", sock.display());
            }
            _ => {}
        }
    }
    let exit: SavedExit = bundle.read_exit().unwrap_or(SavedExit {
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

use berth_proto::time::{now, timestamp};

/// The binary's entry: parses the flags and runs `start` or `delete`.
/// It lives here, not in the crate root, so the root only declares and
/// re-exports and no module that imports `crate::Error` is imported back.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags = match crate::flags::parse_flags(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-berth-v2: {e}");
            return 2;
        }
    };
    if flags.version {
        println!(
            "containerd-shim-berth-v2:\n  Version: {}",
            env!("CARGO_PKG_VERSION")
        );
        return 0;
    }
    let r = match flags.action.as_str() {
        "start" => start(&flags),
        "delete" => delete(&flags),
        "" => Err(Error::invalid("no action: expected start or delete")),
        other => Err(Error::invalid(format!(
            "unknown action {other:?}: expected start or delete"
        ))),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-berth-v2: {}", e.chain());
            1
        }
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
