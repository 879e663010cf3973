//! The sync socket between the shim and the children building a
//! container (a SEQPACKET pair, one message per packet): the child sends
//! `u` (it made a user namespace: write its maps), `p<pid>` (the
//! grandchild's pid), `m` with the terminal master attached, `r` (ready)
//! or `e<message>` (failure); the shim answers `u` (maps written), `c` (in
//! its cgroup) and `s` (start). A successful exec closes the child's end
//! (close-on-exec), which the shim reads as success.

use crate::{Error, Result};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A connected pair: the shim's end and the child's.
pub fn pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("create sync socket", e))
}

/// Sends one message.
pub fn send(sock: &OwnedFd, msg: &str) -> Result<()> {
    nix::sys::socket::send(sock.as_raw_fd(), msg.as_bytes(), MsgFlags::empty())
        .map_err(|e| Error::sys("write to the sync socket", e))?;
    Ok(())
}

/// Reports a failure from a child. Nothing more can be done if this fails:
/// the shim is gone, or reads EOF and reports the setup as failed anyway.
pub fn send_error(sock: &OwnedFd, e: &Error) {
    if send(sock, &format!("e{}", e.chain())).is_err() {
        // Nobody to tell; the exit status says it failed.
    }
}

/// Sends a message with a descriptor attached (the terminal master).
pub fn send_fd(sock: &OwnedFd, msg: &str, fd: &OwnedFd) -> Result<()> {
    use nix::sys::socket::{ControlMessage, sendmsg};
    let iov = [std::io::IoSlice::new(msg.as_bytes())];
    let fds = [fd.as_raw_fd()];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::sys("send terminal to the shim", e))?;
    Ok(())
}

/// Receives one message and a descriptor, if one came with it; empty on EOF.
pub fn recv_fd(sock: &OwnedFd) -> Result<(String, Option<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    let mut buf = vec![0u8; 8192];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    loop {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(Error::sys("read from the container process", e)),
            Ok(m) => {
                let mut fd = None;
                for c in m.cmsgs().map_err(|e| Error::sys("read a passed fd", e))? {
                    if let ControlMessageOwned::ScmRights(fds) = c
                        && let Some(f) = fds.first()
                    {
                        // SAFETY: the kernel just gave us this descriptor.
                        fd = Some(unsafe { OwnedFd::from_raw_fd(*f) });
                    }
                }
                let n = m.bytes;
                return Ok((String::from_utf8_lossy(&buf[..n]).to_string(), fd));
            }
        }
    }
}

/// Receives one message; empty on EOF.
pub fn recv(sock: &OwnedFd) -> Result<String> {
    let mut buf = vec![0u8; 8192];
    let n = loop {
        match nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Err(nix::Error::EINTR) => continue,
            r => break r.map_err(|e| Error::sys("read from the container process", e))?,
        }
    };
    Ok(String::from_utf8_lossy(&buf[..n]).to_string())
}

/// A message already waiting, without blocking: `None` when there is none.
pub fn try_recv(sock: &OwnedFd) -> Option<String> {
    let mut buf = vec![0u8; 8192];
    match nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).to_string()),
        _ => None,
    }
}

/// Receives one message, which must be `want`.
pub fn expect(sock: &OwnedFd, want: &str) -> Result<()> {
    let m = recv(sock)?;
    if m != want {
        return Err(Error::internal(format!(
            "sync: expected {want:?}, got {m:?}"
        )));
    }
    Ok(())
}

/// Reads what a child reports after its pid: a terminal master first when
/// the process wants one, then `want` (or EOF, `""`, for an exec).
pub fn recv_ready(sock: &OwnedFd) -> Result<(String, Option<OwnedFd>)> {
    let (mut m, console) = recv_fd(sock)?;
    if m == "m" {
        m = recv(sock)?;
    }
    Ok((m, console))
}

/// Parses `p<pid>` (or `p<pid>:cgroup`) or `e<message>` from a child.
pub fn pid_or_error(msg: &str) -> Result<u32> {
    if let Some(p) = msg.strip_prefix('p') {
        let p = p.strip_suffix(":cgroup").unwrap_or(p);
        return p
            .parse()
            .map_err(|_| Error::internal(format!("bad pid message {msg:?}")));
    }
    Err(child_error(msg))
}

/// Whether a pid message says the child was created inside its cgroup2
/// directory (see [`fork_reporting_pid`]).
pub fn placed_in_cgroup(msg: &str) -> bool {
    msg.starts_with('p') && msg.ends_with(":cgroup")
}

/// The error a child's message (other than the expected one) stands for.
pub fn child_error(msg: &str) -> Error {
    match msg.strip_prefix('e') {
        Some(m) => Error::precondition(m.to_string()),
        None if msg.is_empty() => Error::internal("the container process exited during setup"),
        None => Error::internal(format!(
            "unexpected message {msg:?} from the container process"
        )),
    }
}

/// Which side of [`fork_reporting_pid`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    Parent,
    /// The child; `in_cgroup` when it was created inside the cgroup2
    /// directory it was asked for.
    Child {
        in_cgroup: bool,
    },
}

/// Forks (the caller is single-threaded); the parent sends `p<child pid>`
/// (with `:cgroup` when the child was created inside `into`) over `sock`
/// and only then lets the child run on, so the shim always reads the pid
/// first, whatever the child sends next (`r`, `m`, `e…`).
///
/// With `into` (a cgroup2 directory) the child is created inside it
/// (`clone3` with `CLONE_INTO_CGROUP`): no migration afterwards, so no RCU
/// grace period (~10 ms) to wait for. A kernel that refuses (before 5.7)
/// gets a plain fork, and the shim moves the child instead.
pub fn fork_reporting_pid(sock: &OwnedFd, what: &str, into: Option<&OwnedFd>) -> Result<Forked> {
    let (gate_r, gate_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("create pipe", e))?;
    let (child, in_cgroup) = match into.map(clone_into_cgroup) {
        Some(Ok(c)) => (c, true),
        // SAFETY: the caller is single-threaded (a fork of the shim).
        _ => match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys(what, e))? {
            nix::unistd::ForkResult::Child => (None, false),
            nix::unistd::ForkResult::Parent { child } => (Some(child), false),
        },
    };
    match child {
        None => {
            drop(gate_w);
            // Returns at EOF, when the parent has sent the pid and closed
            // its end; an error also means the parent is done with it.
            if nix::unistd::read(&gate_r, &mut [0u8; 1]).is_err() {
                // Nothing to wait for any more.
            }
            Ok(Forked::Child { in_cgroup })
        }
        Some(child) => {
            drop(gate_r);
            let mark = if in_cgroup { ":cgroup" } else { "" };
            let sent = send(sock, &format!("p{child}{mark}"));
            drop(gate_w);
            sent.map(|()| Forked::Parent)
        }
    }
}

/// The kernel's `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3` like fork (no new stack, SIGCHLD at exit), the child created in
/// the cgroup2 directory `dir`: `Some(pid)` in the parent, `None` in the
/// child.
fn clone_into_cgroup(dir: &OwnedFd) -> nix::Result<Option<nix::unistd::Pid>> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: u64::try_from(dir.as_raw_fd()).map_err(|_| nix::Error::EBADF)?,
        ..CloneArgs::default()
    };
    // SAFETY: with no stack the child runs on a copy of ours, as after
    // fork; the caller is single-threaded, so no lock is held by a thread
    // that would be missing in the child. `args` outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw const args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => Err(nix::Error::last()),
        0 => Ok(None),
        pid => Ok(Some(nix::unistd::Pid::from_raw(
            i32::try_from(pid).map_err(|_| nix::Error::EOVERFLOW)?,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_passed_fds() {
        let (a, b) = pair().unwrap();
        send(&b, "p42").unwrap();
        let m = recv(&a).unwrap();
        assert_eq!(pid_or_error(&m).unwrap(), 42);
        assert!(!placed_in_cgroup(&m));
        send(&b, "p43:cgroup").unwrap();
        let m = recv(&a).unwrap();
        assert_eq!(pid_or_error(&m).unwrap(), 43, "created inside its cgroup");
        assert!(placed_in_cgroup(&m));
        assert_eq!(try_recv(&a), None, "nothing waiting");
        send(&b, "eboom").unwrap();
        assert_eq!(try_recv(&a).as_deref(), Some("eboom"));
        let (r, _w) = nix::unistd::pipe().unwrap();
        send_fd(&b, "m", &r).unwrap();
        send(&b, "r").unwrap();
        let (m, fd) = recv_ready(&a).unwrap();
        assert_eq!(m, "r");
        assert!(fd.is_some(), "the terminal master travels with `m`");
        send_error(
            &b,
            &Error::io(
                "mount /proc",
                std::io::Error::from_raw_os_error(libc::EPERM),
            ),
        );
        let e = pid_or_error(&recv(&a).unwrap()).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::FailedPrecondition);
        assert!(
            e.message()
                .starts_with("mount /proc: Operation not permitted"),
            "{e}"
        );
        drop(b);
        assert_eq!(recv(&a).unwrap(), "", "EOF reads as empty");
        assert!(child_error("").message().contains("exited during setup"));
    }
}
