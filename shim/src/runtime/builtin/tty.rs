//! A container process's standard I/O: the client's pipes, or a terminal
//! made inside the container (its devpts) whose master goes to the shim.

use super::sync;
use super::sys::Sys;
use crate::stdio::ChildIo;
use crate::{Error, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use oci_spec::runtime::Process;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

/// Opens a terminal in the container's devpts, sends its master to the
/// shim, and returns the slave and its path.
fn open_console(sock: &OwnedFd) -> Result<(OwnedFd, String)> {
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
    Ok((slave, name))
}

/// Binds the terminal onto /dev/console (an empty file made for it), as
/// the OCI spec asks of a container with a terminal and runc does.
pub fn mount_console(sys: &dyn Sys, slave: &std::path::Path) -> Result<()> {
    let console = std::path::Path::new("/dev/console");
    if sys.kind(console).is_none() {
        sys.create_file(console)
            .map_err(|e| Error::io("create /dev/console", e))?;
    }
    sys.mount(
        Some(slave),
        console,
        None,
        nix::mount::MsFlags::MS_BIND,
        None,
    )
    .map_err(|e| Error::io(format!("bind {} onto /dev/console", slave.display()), e))
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
/// a terminal made in the container (whose master goes to the shim). With
/// `console` (the init), the terminal is /dev/console too.
pub fn setup_stdio(
    io: &ChildIo,
    sock: &OwnedFd,
    process: Option<&Process>,
    console: Option<&dyn Sys>,
) -> Result<()> {
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    if io.terminal {
        let (slave, name) = open_console(sock)?;
        if let Some(sys) = console {
            mount_console(sys, std::path::Path::new(&name))?;
        }
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

#[cfg(test)]
mod tests {
    use super::super::sys::{Fake, Kind};
    use super::*;

    #[test]
    fn console_is_an_empty_file_with_the_terminal_bound_on() {
        let sys = Fake::new();
        mount_console(&sys, std::path::Path::new("/dev/pts/0")).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "create /dev/console",
                "mount /dev/pts/0 /dev/console - MS_BIND -"
            ]
        );
        let sys = Fake::new();
        sys.with("/dev/console", Kind::File);
        sys.fail("mount", libc::EPERM);
        let e = mount_console(&sys, std::path::Path::new("/dev/pts/3")).unwrap_err();
        assert_eq!(e.message(), "bind /dev/pts/3 onto /dev/console");
        assert!(sys.calls_of("create").is_empty());
    }
}
