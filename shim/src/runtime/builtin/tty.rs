//! A container process's standard I/O: the client's pipes, or a terminal
//! made inside the container (its devpts) whose master goes to the shim.

use super::sync;
use crate::stdio::ChildIo;
use crate::{Error, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use oci_spec::runtime::Process;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

/// Opens a terminal in the container's devpts, sends its master to the
/// shim, and returns the slave.
fn open_console(sock: &OwnedFd) -> Result<OwnedFd> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("open /dev/ptmx in the container", e))?;
    nix::pty::grantpt(&master).map_err(|e| Error::sys("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| Error::sys("unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| Error::sys("ptsname", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open {name}"), e))?;
    // SAFETY: PtyMaster owns a valid descriptor; we take it over.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    sync::send_fd(sock, "m", &master)?;
    Ok(slave)
}

fn dup_onto(fd: &OwnedFd, to: i32) -> Result<()> {
    // SAFETY: dup2 onto a standard descriptor.
    if unsafe { libc::dup2(fd.as_raw_fd(), to) } < 0 {
        return Err(Error::io(
            format!("set up stdio fd {to}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Connects the process's stdio in a new session: the client's pipes, or
/// a terminal made in the container (whose master goes to the shim).
pub fn setup_stdio(io: &ChildIo, sock: &OwnedFd, process: Option<&Process>) -> Result<()> {
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    if io.terminal {
        let slave = open_console(sock)?;
        // Sized before the program runs (like runc), so it never sees 0x0
        // while the client's first resize is on its way.
        if let Some(sz) = process.and_then(|p| p.console_size()) {
            let ws = crate::stdio::winsize(sz.width(), sz.height())?;
            // SAFETY: TIOCSWINSZ reads a winsize from the pointer we pass,
            // which outlives the call.
            if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
                return Err(Error::io(
                    "set the terminal size",
                    std::io::Error::last_os_error(),
                ));
            }
        }
        // SAFETY: make the terminal our controlling terminal.
        if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
            return Err(Error::io(
                "set controlling terminal",
                std::io::Error::last_os_error(),
            ));
        }
        for to in 0..3 {
            dup_onto(&slave, to)?;
        }
        return Ok(());
    }
    for (fd, to) in [(&io.stdin, 0), (&io.stdout, 1), (&io.stderr, 2)] {
        if let Some(f) = fd {
            dup_onto(f, to)?;
        }
    }
    Ok(())
}
