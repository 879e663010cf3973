//! The shim's defence against CVE-2019-5736. Every process that enters a
//! container with the built-in runtime is a fork of the serving shim (no
//! exec), so its `/proc/self/exe` is the shim's binary. A container that
//! gets one to execute `#!/proc/self/exe`, or that can open
//! `/proc/N/exe` of one being set up (CAP_SYS_PTRACE), holds the host's
//! binary; the kernel refuses to let it be written only while some process
//! executes it (ETXTBSY), and once no shim does — the shim crashed, say —
//! the container can rewrite it and the next container start runs the
//! container's code as root on the host (`tests/tests/exec_path.rs` does
//! exactly that to the unprotected binary).
//!
//! So `start` first executes itself again from a sealed view of its binary
//! (runc does the same for its init: its `exeseal`): the binary's directory
//! as the top layer of a lower-only overlayfs mount that no mount namespace
//! has and that is read-only at the superblock (`fsopen`/`fsmount`; no
//! copy: the pages are the binary's own), or, where that cannot be made, a
//! copy in a memfd sealed against writes. The serving shim and everything
//! it forks run from that; writing it fails (`EROFS`, or `EPERM` on the
//! seals), and neither can be turned back into the host's file.

use crate::{Error, Result};
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// Set for the sealed re-execution only: it proves the execution was ours
/// (so a failed seal cannot loop) and is removed at once.
const MARKER: &str = "_BERTH_SHIM_SEALED";

/// How the running binary is sealed, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    /// On a read-only overlayfs (ours, or a read-only overlay install).
    Overlay,
    /// A memfd that refuses writes.
    Memfd,
}

/// How `/proc/self/exe` is sealed: `None` when it could be written by
/// whoever opens it (the kernel's ETXTBSY aside).
pub fn sealed() -> Option<Seal> {
    let exe = std::fs::File::open("/proc/self/exe").ok()?;
    if let Ok(seals) = nix::fcntl::fcntl(&exe, nix::fcntl::FcntlArg::F_GET_SEALS)
        && nix::fcntl::SealFlag::from_bits_truncate(seals)
            .contains(nix::fcntl::SealFlag::F_SEAL_WRITE)
    {
        return Some(Seal::Memfd);
    }
    let fs = nix::sys::statfs::fstatfs(&exe).ok()?;
    (fs.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC
        && fs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
    .then_some(Seal::Overlay)
}

/// Makes sure this process runs from a sealed binary: returns at once in
/// the sealed re-execution, otherwise executes this program again (same
/// arguments, environment and descriptors) from a sealed view of its
/// binary and returns only if that failed. `scratch` is an existing
/// directory the overlay can use as its (unused) second layer; it must not
/// contain the binary's directory nor be inside it.
pub fn ensure(scratch: &Path) -> Result<()> {
    if std::env::var_os(MARKER).is_some() {
        // SAFETY: called first thing in `start`, single-threaded.
        unsafe { std::env::remove_var(MARKER) };
        let Some(how) = sealed() else {
            return Err(Error::internal(
                "the shim's sealed re-execution runs from a writable binary",
            ));
        };
        if how == Seal::Memfd {
            // Executed from a descriptor, the kernel named us after its
            // number: take our name back for ps.
            name_after_argv0();
        }
        return Ok(());
    }
    let exe =
        std::fs::read_link("/proc/self/exe").map_err(|e| Error::io("read /proc/self/exe", e))?;
    let overlay = match overlay_view(&exe, scratch) {
        Ok(v) => return Err(reexec(v.0.as_fd(), &v.1)),
        Err(e) => e,
    };
    let memfd = memfd_copy().map_err(|e| {
        Error::io(
            format!(
                "seal the shim's binary against writes from containers (a read-only overlay of {}: {overlay}; a sealed memfd copy)",
                exe.display()
            ),
            e,
        )
    })?;
    Err(reexec(memfd.as_fd(), OsStr::new("")))
}

/// Escapes a path for an overlayfs `lowerdir` list (`:` separates layers).
fn escape_layer(p: &Path) -> OsString {
    let mut out = Vec::new();
    for b in p.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b':') {
            out.push(b'\\');
        }
        out.push(*b);
    }
    OsString::from_vec(out)
}

/// A detached, read-only, lower-only overlayfs mount whose top layer is
/// the directory of `exe`, and the binary's name in it.
fn overlay_view(exe: &Path, scratch: &Path) -> std::io::Result<(OwnedFd, OsString)> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, fsconfig_create, fsconfig_set_string, fsmount,
        fsopen,
    };
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        return Err(std::io::Error::other("no directory and name"));
    };
    let ctx = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // Two layers are what a mount without an upper one needs; the binary's
    // is on top so nothing in `scratch` can stand in for it.
    let mut lower = escape_layer(dir);
    lower.push(":");
    lower.push(escape_layer(scratch));
    fsconfig_set_string(&ctx, "lowerdir", lower.as_os_str())?;
    // Only to keep overlayfs from logging about inode numbers it cannot
    // make unique across layers; older kernels may not know it.
    if fsconfig_set_string(&ctx, "xino", "off").is_err() {
        // Harmless: the mount works the same.
    }
    fsconfig_create(&ctx)?;
    let mnt = fsmount(
        &ctx,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )?;
    Ok((mnt, name.to_os_string()))
}

/// A copy of the running binary in a memfd sealed against any change.
fn memfd_copy() -> std::io::Result<OwnedFd> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let base = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3) keeps it executable under vm.memfd_noexec=1;
    // older kernels refuse the flag.
    let exec = MFdFlags::from_bits_retain(libc::MFD_EXEC);
    let fd = memfd_create("containerd-shim-berth-v2", base | exec)
        .or_else(|_| memfd_create("containerd-shim-berth-v2", base))?;
    let mut dst = std::fs::File::from(fd);
    let mut src = std::fs::File::open("/proc/self/exe")?;
    let copied = std::io::copy(&mut src, &mut dst)?;
    if copied != src.metadata()?.len() {
        return Err(std::io::Error::other("short copy of the binary"));
    }
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    fcntl(
        &dst,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SEAL
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE,
        ),
    )?;
    Ok(OwnedFd::from(dst))
}

/// Executes this program again from `name` under `dir` (the memfd itself
/// when `name` is empty), with the marker; returns only its failure.
fn reexec(dir: std::os::fd::BorrowedFd<'_>, name: &OsStr) -> Error {
    let cstr = |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| ());
    let args: std::result::Result<Vec<CString>, ()> =
        std::env::args_os().map(|a| cstr(&a)).collect();
    let mut env: Vec<OsString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            kv
        })
        .collect();
    env.push(format!("{MARKER}=1").into());
    let env: std::result::Result<Vec<CString>, ()> = env.iter().map(|e| cstr(e)).collect();
    let (Ok(args), Ok(env), Ok(path)) = (args, env, cstr(name)) else {
        return Error::invalid("an argument or the environment holds a NUL byte");
    };
    let flags = if name.is_empty() {
        nix::fcntl::AtFlags::AT_EMPTY_PATH
    } else {
        nix::fcntl::AtFlags::empty()
    };
    match nix::unistd::execveat(dir, &path, &args, &env, flags) {
        Err(e) => Error::sys("execute the shim from its sealed binary", e),
        Ok(never) => match never {},
    }
}

/// Sets the process name (`comm`) to the base name of `argv[0]`.
fn name_after_argv0() {
    let Some(a0) = std::env::args_os().next() else {
        return;
    };
    let base = Path::new(&a0).file_name().unwrap_or(&a0).as_bytes();
    // The kernel keeps 15 bytes and a NUL.
    let Ok(name) = CString::new(&base[..base.len().min(15)]) else {
        return;
    };
    if nix::sys::prctl::set_name(&name).is_err() {
        // Only what ps shows.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_paths_escape_colons_and_backslashes() {
        assert_eq!(
            escape_layer(Path::new("/opt/a:b\\c")),
            OsString::from("/opt/a\\:b\\\\c")
        );
        assert_eq!(
            escape_layer(Path::new("/usr/bin")),
            OsString::from("/usr/bin")
        );
    }

    /// The seal itself: the overlay view executes, shows the same bytes
    /// and refuses writing (root: it mounts); the memfd refuses writing.
    #[test]
    fn a_sealed_view_reads_as_the_binary_and_refuses_writes() {
        use std::io::Read;
        let m = memfd_copy().unwrap();
        let mut f = std::fs::File::from(m);
        let e = std::io::Write::write_all(&mut f, b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: the overlay seal needs root");
            return;
        }
        /// A fresh directory, removed with the guard.
        struct Dir(std::path::PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                if std::fs::remove_dir_all(&self.0).is_err() {
                    // Never made: nothing to remove.
                }
            }
        }
        let dir = |n: &str| {
            let p = std::env::temp_dir().join(format!("berth-seal-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        };
        let (bins, scratch) = (dir("bin"), dir("scratch"));
        let bin = bins.0.join("prog");
        std::fs::copy("/bin/true", &bin).unwrap();
        let (mnt, name) = overlay_view(&bin, &scratch.0).unwrap();
        let path = format!(
            "/proc/self/fd/{}/{}",
            std::os::fd::AsRawFd::as_raw_fd(&mnt),
            name.to_str().unwrap()
        );
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes, std::fs::read(&bin).unwrap());
        let e = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        assert!(
            std::process::Command::new(&path)
                .status()
                .unwrap()
                .success()
        );
    }
}
