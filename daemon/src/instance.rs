//! One berthd per root and per socket: a lock file (`flock`, held for the
//! daemon's life, holding its pid so a refusal names the holder) guards
//! each, and the daemon only ever unlinks the sockets it bound itself.
//!
//! A daemon restarted right after a crash finds the old process's locks
//! still held while the kernel tears it down; it waits a bounded time for
//! them instead of failing at once.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a starting daemon waits for a lock a dying one still holds.
pub const WAIT: Duration = Duration::from_secs(5);

/// A held lock file; the lock goes with the descriptor.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Takes the lock file at `path` guarding `what`, waiting until `deadline`
/// while another process holds it; then fails naming that process.
pub fn lock(path: &Path, what: &str, deadline: Instant) -> anyhow::Result<Lock> {
    // Close-on-exec (std's default), so shims never inherit the lock.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("open lock file {}: {e}", path.display()))?;
    loop {
        // SAFETY: flock takes a descriptor we own and integer flags.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            anyhow::bail!("lock {}: {e}", path.display());
        }
        if Instant::now() >= deadline {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            let holder = if pid.is_empty() {
                "another process".to_string()
            } else {
                format!("another berthd (pid {pid})")
            };
            anyhow::bail!(
                "{holder} is using {what}: it holds {}; stop it first",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "{}", std::process::id())?;
    Ok(Lock { _file: f })
}

/// The lock file of a socket path: next to it, `<path>.lock`.
pub fn socket_lock_path(sock: &Path) -> PathBuf {
    let mut s = sock.as_os_str().to_owned();
    s.push(".lock");
    s.into()
}

/// Clears the way to bind `path`, under its lock: a socket someone still
/// answers on belongs to another program (not a berthd, or it would hold
/// the lock) and is left alone; one nobody answers on is a crashed
/// daemon's and is removed. Until `deadline` an answering socket is tried
/// again: a killed daemon's listener may outlive its lock by a moment.
pub fn clear_stale_socket(path: &Path, deadline: Instant) -> anyhow::Result<()> {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !m.file_type().is_socket() {
        anyhow::bail!("{} exists and is not a socket", path.display());
    }
    while std::os::unix::net::UnixStream::connect(path).is_ok() {
        if Instant::now() >= deadline {
            anyhow::bail!(
                "another process is serving on {}; stop it or choose another --address",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// A socket this daemon bound: its path and the inode it made there.
#[derive(Debug)]
pub struct Bound {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl Bound {
    /// Records the socket just bound at `path`.
    pub fn new(path: &Path) -> Bound {
        Bound {
            path: path.into(),
            id: inode(path),
        }
    }

    /// Unlinks the socket if it is still the one this daemon bound.
    pub fn remove(&self) {
        if self.id.is_some() && inode(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn inode(p: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let first = lock(&p, "root /r", Instant::now()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap().trim(),
            std::process::id().to_string()
        );
        // flock locks belong to open file descriptions: a second open in
        // this process conflicts like another process would.
        let e = lock(&p, "root /r", Instant::now()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("pid {}", std::process::id())) && e.contains("root /r"),
            "{e}"
        );
        drop(first);
        lock(&p, "root /r", Instant::now()).unwrap();
    }

    #[test]
    fn waits_for_a_lock_released_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let first = lock(&p, "it", Instant::now()).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(first);
        });
        lock(&p, "it", Instant::now() + Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn a_served_socket_is_kept_a_dead_one_removed_and_only_ours_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        let live = std::os::unix::net::UnixListener::bind(&p).unwrap();
        let e = clear_stale_socket(&p, Instant::now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("another process is serving"), "{e}");
        assert!(p.exists());
        drop(live);
        clear_stale_socket(&p, Instant::now()).unwrap();
        assert!(!p.exists());

        let _ours = std::os::unix::net::UnixListener::bind(&p).unwrap();
        let b = Bound::new(&p);
        std::fs::remove_file(&p).unwrap();
        let _theirs = std::os::unix::net::UnixListener::bind(&p).unwrap();
        b.remove();
        assert!(p.exists(), "someone else's socket at our path is kept");
    }
}
