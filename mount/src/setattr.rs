//! `mount_setattr(2)` (Linux 5.12), which neither nix nor rustix wraps
//! yet: runc's recursive mount options ([`RecursiveAttrs`]) are
//! applied with it, and berthd asks whether the kernel has it.

use crate::options::RecursiveAttrs;
use std::io;
use std::path::Path;

fn call(dirfd: i32, path: *const libc::c_char, flags: i32, attr: Option<&libc::mount_attr>) -> i64 {
    let (ptr, size) = match attr {
        Some(a) => (
            a as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        ),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: `path` is NUL-terminated or NULL and `attr` is a whole
    // mount_attr or NULL with size 0, each living through the call.
    unsafe { libc::syscall(libc::SYS_mount_setattr, dirfd, path, flags, ptr, size) }
}

/// Sets and clears `attrs` on the mount at `target` (not following a last
/// symlink) and every mount below it.
pub fn setattr_recursive(target: &Path, attrs: RecursiveAttrs) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let attr = libc::mount_attr {
        attr_set: attrs.set,
        attr_clr: attrs.clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW;
    if call(libc::AT_FDCWD, path.as_ptr(), flags, Some(&attr)) < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the kernel has `mount_setattr(2)`: a call with no valid
/// argument fails with anything but `ENOSYS`.
pub fn setattr_supported() -> bool {
    call(-1, std::ptr::null(), 0, None) == 0
        || io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_are_refused_not_applied() {
        // This kernel (Debian 12's 6.1) has the call.
        assert!(setattr_supported());
        // (With nothing to set or clear the kernel returns before it looks
        // the path up.)
        let ro = RecursiveAttrs {
            set: crate::options::attr::RDONLY,
            clear: 0,
        };
        let e = setattr_recursive(Path::new("/nonexistent/berth"), ro).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = setattr_recursive(Path::new("/a\0b"), ro).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
