//! Network namespaces that outlive any process: each is bind-mounted at
//! `<state>/netns/<containerd namespace>/<id>`, made (as containerd's netns
//! package does) by a thread of its own that unshares its network
//! namespace, sets `lo` up and binds `/proc/self/task/<tid>/ns/net`, then
//! exits. The folders are owner-only: nobody but root can open them.

use crate::error::{Error, Result, io_err};
use berth_snapshotter::mount::private;
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// Sets IFF_UP on `lo` of the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let last = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: socket takes only integer arguments.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    last(s)?;
    // SAFETY: `s` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into
    // `req`, which outlives the call.
    last(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    let up = libc::c_short::try_from(libc::IFF_UP).map_err(std::io::Error::other)?;
    // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= up };
    // SAFETY: SIOCSIFFLAGS reads `req`, which outlives the call.
    last(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })
}

/// Where a daemon's namespaces live.
#[derive(Debug, Clone)]
pub struct NetnsDir {
    root: PathBuf,
}

impl NetnsDir {
    /// `state/netns`.
    pub fn new(state: &Path) -> Self {
        NetnsDir {
            root: state.join("netns"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `id`'s namespace in containerd namespace `ns`.
    pub fn path(&self, ns: &str, id: &str) -> Result<PathBuf> {
        for (what, s) in [("namespace", ns), ("container id", id)] {
            if s.is_empty() || s.contains('/') || s == "." || s == ".." {
                return Err(Error::invalid(format!(
                    "{what} {s:?} cannot name a network namespace file"
                )));
            }
        }
        Ok(self.root.join(ns).join(id))
    }

    /// Creates and mounts `id`'s namespace; its path is the result. An
    /// existing one is an error: two containers never share by accident.
    pub fn create(&self, ns: &str, id: &str) -> Result<PathBuf> {
        let path = self.path(ns, id)?;
        let dir = self.root.join(ns);
        for d in [&self.root, &dir] {
            private::dir(d, private::OWNER_ONLY)
                .map_err(|e| io_err(format!("create {}", d.display()), e))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::already_exists(format!(
                        "network namespace {} already exists",
                        path.display()
                    ))
                } else {
                    io_err(format!("create {}", path.display()), e)
                }
            })?;
        let target = path.clone();
        // A fresh thread: unshare changes only the calling thread's
        // namespace, and this thread dies afterwards so no task of the
        // runtime ever runs in the new namespace.
        let made = std::thread::spawn(move || -> std::io::Result<()> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            // Loopback up, as every container expects (runc leaves a
            // joined namespace as it finds it; CNI plugins add eth0 only).
            loopback_up()?;
            let tid = nix::unistd::gettid();
            let src = format!("/proc/self/task/{tid}/ns/net");
            nix::mount::mount(
                Some(src.as_str()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })
        .join()
        .map_err(|_| Error::internal("the network namespace thread panicked"))?;
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(io_err(
                format!("create network namespace {}", path.display()),
                e,
            ));
        }
        Ok(path)
    }

    /// Unmounts and removes `id`'s namespace; a missing one is fine, so
    /// teardown can be repeated after a crash.
    pub fn remove(&self, ns: &str, id: &str) -> Result<()> {
        let path = self.path(ns, id)?;
        match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (half made); ENOENT: already gone.
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(io_err(
                    format!("unmount network namespace {}", path.display()),
                    e.into(),
                ));
            }
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err(format!("remove {}", path.display()), e));
            }
            _ => {}
        }
        // The namespace's folder goes with its last file.
        let _ = std::fs::remove_dir(self.root.join(ns));
        Ok(())
    }

    /// The containerd namespaces with a folder here.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("read {}", self.root.display()), e)),
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        v.sort();
        Ok(v)
    }

    /// The ids with a namespace file in `ns` (restart reconciliation).
    pub fn list(&self, ns: &str) -> Result<Vec<String>> {
        let dir = self.root.join(ns);
        let rd = match std::fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("read {}", dir.display()), e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}
