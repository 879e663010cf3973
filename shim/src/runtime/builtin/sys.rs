//! The system calls the built-in runtime makes while building a container,
//! behind one trait: [`Host`] makes them, and under `cfg(test)` `Fake`
//! records them (and fails the ones it is told to), so what the runtime
//! decides — which mounts, in which order, with which flags; which devices,
//! limits, capabilities and ids — is unit-tested without root.
//!
//! Every method returns `io::Result`: nix's errno and the caps crate's
//! errors become I/O errors here, and the caller names the step.

use berth_mount::RecursiveAttrs;
use caps::{CapSet, Capability, CapsHashSet};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::SFlag;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// What is at a path, as far as the runtime cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// The system calls of container setup.
pub trait Sys {
    /// `mount(2)`; `None` fields are passed as NULL.
    fn mount(
        &self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    /// `mount_setattr(2)` with `AT_RECURSIVE`: sets and clears `attrs`'
    /// `MOUNT_ATTR_*` bits on the mount at `target` and every mount below
    /// it.
    fn mount_setattr_recursive(&self, target: &Path, attrs: RecursiveAttrs) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chdir(&self, dir: &Path) -> io::Result<()>;
    /// Opens the directory `dir` (`O_PATH`) to return to it with
    /// [`Sys::fchdir`] once a path no longer reaches the same mount.
    fn open_dir(&self, dir: &Path) -> io::Result<OwnedFd>;
    fn fchdir(&self, dir: &OwnedFd) -> io::Result<()>;
    /// What is at `path` (following symlinks); `None` when nothing is.
    fn kind(&self, path: &Path) -> Option<Kind>;
    fn mkdir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates an empty file (a bind-mount target).
    fn create_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a file; a missing one is not an error.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn mknod(&self, path: &Path, kind: SFlag, mode: u32, dev: u64) -> io::Result<()>;
    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Creates `link` pointing at `target`, unless something is at `link`.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// Writes a procfs file whole, in one write(2); anything not on procfs
    /// (what a container's image or mounts put there) is refused.
    fn write(&self, path: &Path, data: &str) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Sets IFF_UP on the network interface `name` of this process's
    /// network namespace (`SIOCSIFFLAGS` on a datagram socket).
    fn link_up(&self, name: &str) -> io::Result<()>;
    /// Joins the namespace at `path`.
    fn setns(&self, path: &Path, flag: CloneFlags) -> io::Result<()>;
    fn unshare(&self, flags: CloneFlags) -> io::Result<()>;
    fn setrlimit(
        &self,
        resource: libc::__rlimit_resource_t,
        soft: u64,
        hard: u64,
    ) -> io::Result<()>;
    /// Every capability the running kernel knows.
    fn supported_caps(&self) -> Vec<Capability>;
    fn drop_bounding(&self, cap: Capability) -> io::Result<()>;
    fn set_caps(&self, set: CapSet, caps: &CapsHashSet) -> io::Result<()>;
    fn raise_ambient(&self, cap: Capability) -> io::Result<()>;
    fn setgroups(&self, gids: &[u32]) -> io::Result<()>;
    fn setresgid(&self, gid: u32) -> io::Result<()>;
    fn setresuid(&self, uid: u32) -> io::Result<()>;
    /// `PR_SET_KEEPCAPS`.
    fn keep_caps(&self, on: bool) -> io::Result<()>;
    /// `PR_SET_NO_NEW_PRIVS`.
    fn no_new_privs(&self) -> io::Result<()>;
    /// The flags of the mount `path` is on (`statfs(2)`'s `f_flags`, whose
    /// bits are the `MS_*` ones): a bind remount must repeat the locked
    /// ones (nosuid, nodev, noexec, atime) or the kernel refuses it.
    fn mount_flags(&self, path: &Path) -> io::Result<MsFlags>;
    /// Reads a whole (small) file, e.g. the container's /etc/passwd.
    fn read_file(&self, path: &Path) -> io::Result<String>;
    /// `st_mode` of what is at `path` (following symlinks).
    fn mode(&self, path: &Path) -> Option<u32>;
    /// `faccessat(X_OK, AT_EACCESS)`: whether this process, as it now is,
    /// may execute `path`.
    fn eaccess_exec(&self, path: &Path) -> io::Result<()>;
    /// `PR_SET_DUMPABLE`: a non-dumpable process's /proc files are
    /// root's and pass the ptrace access check only with CAP_SYS_PTRACE
    /// in the initial user namespace.
    fn set_dumpable(&self, on: bool) -> io::Result<()>;
    /// Loads a seccomp filter (`seccomp(2)`): see `seccomp::load`.
    fn seccomp_load(&self, p: &super::seccomp::Program) -> super::seccomp::Loaded;
    /// Points stdin, stdout and stderr at /dev/null (unless listed) and
    /// closes every other descriptor not in `keep`.
    fn close_fds_except(&self, keep: &[RawFd]) -> io::Result<()>;
}

fn caps_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

fn last_os(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The real system.
#[derive(Debug, Default, Clone, Copy)]
pub struct Host;

impl Sys for Host {
    fn mount(
        &self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        Ok(nix::mount::mount(src, target, fstype, flags, data)?)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        Ok(nix::mount::umount2(target, flags)?)
    }

    fn mount_setattr_recursive(&self, target: &Path, attrs: RecursiveAttrs) -> io::Result<()> {
        berth_mount::setattr_recursive(target, attrs)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        Ok(nix::unistd::pivot_root(new_root, put_old)?)
    }

    fn chdir(&self, dir: &Path) -> io::Result<()> {
        Ok(nix::unistd::chdir(dir)?)
    }

    fn open_dir(&self, dir: &Path) -> io::Result<OwnedFd> {
        use nix::fcntl::OFlag;
        Ok(nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?)
    }

    fn fchdir(&self, dir: &OwnedFd) -> io::Result<()> {
        Ok(nix::unistd::fchdir(dir)?)
    }

    fn kind(&self, path: &Path) -> Option<Kind> {
        let m = std::fs::metadata(path).ok()?;
        Some(if m.is_dir() { Kind::Dir } else { Kind::File })
    }

    fn mkdir_all(&self, dir: &Path) -> io::Result<()> {
        // 0755 (less the umask), as runc makes mount points and the cwd.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o755)
            .create(dir)
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        std::fs::File::create(path).map(drop)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn mknod(&self, path: &Path, kind: SFlag, mode: u32, dev: u64) -> io::Result<()> {
        let mode = nix::sys::stat::Mode::from_bits_truncate(mode);
        Ok(nix::sys::stat::mknod(path, kind, mode, dev)?)
    }

    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        if link.symlink_metadata().is_ok() {
            return Ok(());
        }
        std::os::unix::fs::symlink(target, link)
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        super::procfs::write(path, data)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        Ok(nix::unistd::sethostname(name)?)
    }

    fn link_up(&self, name: &str) -> io::Result<()> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: socket takes only integer arguments.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `s` is a fresh descriptor nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(s) };
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= req.ifr_name.len() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        for (d, b) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = b as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags
        // into `req`, which outlives the call.
        last_os(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
        // IFF_UP is 1: it fits the short the kernel keeps flags in.
        let up = libc::c_short::try_from(libc::IFF_UP).map_err(io::Error::other)?;
        // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
        unsafe { req.ifr_ifru.ifru_flags |= up };
        // SAFETY: SIOCSIFFLAGS reads `req`, which outlives the call.
        last_os(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })
    }

    fn setns(&self, path: &Path, flag: CloneFlags) -> io::Result<()> {
        let f = std::fs::File::open(path)?;
        Ok(nix::sched::setns(f, flag)?)
    }

    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        Ok(nix::sched::unshare(flags)?)
    }

    fn setrlimit(
        &self,
        resource: libc::__rlimit_resource_t,
        soft: u64,
        hard: u64,
    ) -> io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the rlimit we pass, which outlives the call.
        last_os(unsafe { libc::setrlimit(resource, &lim) })
    }

    fn supported_caps(&self) -> Vec<Capability> {
        caps::runtime::thread_all_supported().into_iter().collect()
    }

    fn drop_bounding(&self, cap: Capability) -> io::Result<()> {
        caps::drop(None, CapSet::Bounding, cap).map_err(caps_err)
    }

    fn set_caps(&self, set: CapSet, caps: &CapsHashSet) -> io::Result<()> {
        caps::set(None, set, caps).map_err(caps_err)
    }

    fn raise_ambient(&self, cap: Capability) -> io::Result<()> {
        caps::raise(None, CapSet::Ambient, cap).map_err(caps_err)
    }

    fn setgroups(&self, gids: &[u32]) -> io::Result<()> {
        let gids: Vec<nix::unistd::Gid> = gids
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        Ok(nix::unistd::setgroups(&gids)?)
    }

    fn setresgid(&self, gid: u32) -> io::Result<()> {
        let g = nix::unistd::Gid::from_raw(gid);
        Ok(nix::unistd::setresgid(g, g, g)?)
    }

    fn setresuid(&self, uid: u32) -> io::Result<()> {
        let u = nix::unistd::Uid::from_raw(uid);
        Ok(nix::unistd::setresuid(u, u, u)?)
    }

    fn keep_caps(&self, on: bool) -> io::Result<()> {
        // SAFETY: PR_SET_KEEPCAPS takes only integer arguments.
        last_os(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, libc::c_ulong::from(on), 0, 0, 0) })
    }

    fn no_new_privs(&self) -> io::Result<()> {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes only integer arguments.
        last_os(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
    }

    fn mount_flags(&self, path: &Path) -> io::Result<MsFlags> {
        let st = nix::sys::statfs::statfs(path)?;
        // statfs's ST_* flags share MS_*'s bits.
        Ok(MsFlags::from_bits_truncate(st.flags().bits()))
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn mode(&self, path: &Path) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| m.mode())
    }

    fn eaccess_exec(&self, path: &Path) -> io::Result<()> {
        Ok(nix::unistd::faccessat(
            nix::fcntl::AT_FDCWD,
            path,
            nix::unistd::AccessFlags::X_OK,
            nix::fcntl::AtFlags::AT_EACCESS,
        )?)
    }

    fn set_dumpable(&self, on: bool) -> io::Result<()> {
        // SAFETY: PR_SET_DUMPABLE takes only integer arguments.
        last_os(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(on), 0, 0, 0) })
    }
    fn seccomp_load(&self, p: &super::seccomp::Program) -> super::seccomp::Loaded {
        super::seccomp::load(p)
    }

    fn close_fds_except(&self, keep: &[RawFd]) -> io::Result<()> {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        for to in 0..3 {
            // SAFETY: dup2 onto a standard descriptor we do not keep.
            if !keep.contains(&to) && unsafe { libc::dup2(null.as_raw_fd(), to) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        drop(null);
        let mut keep: Vec<u32> = keep.iter().filter_map(|f| u32::try_from(*f).ok()).collect();
        keep.sort_unstable();
        // The gaps between the kept descriptors, from 3 up.
        let mut from = 3u32;
        let mut gaps = Vec::new();
        for k in keep.into_iter().filter(|k| *k >= 3) {
            if k > from {
                gaps.push((from, k - 1));
            }
            from = k + 1;
        }
        gaps.push((from, u32::MAX));
        for (lo, hi) in gaps {
            close_range(lo, hi)?;
        }
        Ok(())
    }
}

/// Closes descriptors `lo..=hi`; one by one on kernels before 5.9.
fn close_range(lo: u32, hi: u32) -> io::Result<()> {
    // SAFETY: close_range only closes this process's descriptors; the
    // caller owns none of them any more (it exits or execs).
    if unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) } == 0 {
        return Ok(());
    }
    // Collected first: the listing holds a descriptor of its own.
    let fds: Vec<u32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| (lo..=hi).contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: as above; the listing's own descriptor, closed since,
        // fails with EBADF, which is ignored.
        unsafe { libc::close(fd as RawFd) };
    }
    Ok(())
}

#[cfg(test)]
mod fake;
#[cfg(test)]
pub use fake::Fake;
