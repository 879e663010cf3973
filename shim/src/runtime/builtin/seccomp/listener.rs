//! `SCMP_ACT_NOTIFY`: getting the listener descriptor from the container
//! process to the agent at `linux.seccomp.listenerPath`, as runc does.
//!
//! The process loads its filter inside the container, where the host's
//! `listenerPath` may not even exist; so, as runc's init, it only names
//! the descriptor to its runtime over the sync socket (`n<fd>`, written
//! with `write(2)`, the one call the profile may not notify), and waits.
//! The shim takes its own copy with `pidfd_getfd(2)` (runc's parent does
//! the same), connects to the listener, sends it the container process
//! state with the descriptor attached (`SCM_RIGHTS`), closes the
//! connection, and answers `n`; the process closes its copy and goes on.
//! One connection per process: the init's (status `creating`) and each
//! exec's (status `running`).

use super::super::sync;
use crate::{Error, Result};
use oci_spec::runtime::{LinuxSeccomp, Spec};
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// In the container process: hands the listener descriptor (if its filter
/// made one) to the shim and waits until the shim has passed it on.
pub fn hand_over(sock: &OwnedFd, notify: Option<OwnedFd>) -> Result<()> {
    let Some(fd) = notify else {
        return Ok(());
    };
    let msg = format!("n{}", fd.as_raw_fd());
    nix::unistd::write(sock, msg.as_bytes())
        .map_err(|e| Error::sys("seccomp: name the listener descriptor to the shim", e))?;
    let mut buf = [0u8; 64];
    let n = loop {
        match nix::unistd::read(sock, &mut buf) {
            Err(nix::Error::EINTR) => continue,
            r => break r.map_err(|e| Error::sys("seccomp: wait for the shim", e))?,
        }
    };
    if &buf[..n] != b"n" {
        return Err(Error::internal(format!(
            "seccomp: expected \"n\" from the shim, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        )));
    }
    drop(fd);
    Ok(())
}

/// The descriptor number in an `n<fd>` message; `None` for other messages.
pub fn named_fd(msg: &str) -> Option<i32> {
    msg.strip_prefix('n')?.parse().ok()
}

/// A copy of descriptor `fd` of process `pid` (close-on-exec).
pub fn take(pid: u32, fd: i32) -> Result<OwnedFd> {
    let sys = |what: &str| Error::io(what, std::io::Error::last_os_error());
    let fd_of = |r: libc::c_long| {
        i32::try_from(r).map_err(|_| Error::internal("seccomp: a descriptor out of range"))
    };
    // SAFETY: pidfd_open only makes a descriptor for the process `pid`.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::c_long::from(pid), 0) };
    if pidfd < 0 {
        return Err(sys("seccomp: pidfd_open"));
    }
    // SAFETY: the kernel just gave us this descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd_of(pidfd)?) };
    // SAFETY: pidfd_getfd duplicates a descriptor of that process into ours.
    let got = unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            libc::c_long::from(pidfd.as_raw_fd()),
            libc::c_long::from(fd),
            0,
        )
    };
    if got < 0 {
        return Err(sys("seccomp: pidfd_getfd"));
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd_of(got)?) })
}

/// The runtime spec's container state, fields in runc's order.
#[derive(Serialize)]
struct State<'a> {
    #[serde(rename = "ociVersion")]
    oci_version: &'a str,
    id: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    pid: u32,
    bundle: &'a Path,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The runtime spec's container process state (`specs.ContainerProcessState`).
#[derive(Serialize)]
struct ProcessState<'a> {
    #[serde(rename = "ociVersion")]
    oci_version: &'a str,
    fds: [&'static str; 1],
    pid: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    metadata: &'a str,
    state: State<'a>,
}

/// What the shim tells a listener about: the container's profile, and the
/// container as its state shows it (copied, so no lock is held meanwhile).
pub struct About {
    pub profile: Option<LinuxSeccomp>,
    version: String,
    id: String,
    bundle: std::path::PathBuf,
    annotations: BTreeMap<String, String>,
    /// `creating` for the init, `running` for an exec (runc's).
    status: &'static str,
    init_pid: u32,
}

impl About {
    pub fn new(spec: &Spec, id: &str, bundle: &Path, status: &'static str, init_pid: u32) -> About {
        let annotations = spec.annotations().clone().unwrap_or_default();
        About {
            profile: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
            version: spec.version().clone(),
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            annotations: annotations.into_iter().collect(),
            status,
            init_pid,
        }
    }
}

/// The JSON runc sends the listener about process `pid`.
pub fn message(s: &LinuxSeccomp, a: &About, pid: u32) -> String {
    let state = ProcessState {
        oci_version: &a.version,
        fds: ["seccompFd"],
        pid,
        metadata: s.listener_metadata().as_deref().unwrap_or(""),
        state: State {
            oci_version: &a.version,
            id: &a.id,
            status: a.status,
            pid: a.init_pid,
            bundle: &a.bundle,
            annotations: &a.annotations,
        },
    };
    serde_json::to_string(&state).unwrap_or_default()
}

/// Connects to `listenerPath` and sends `msg` with `fd`, then closes.
pub fn send(path: &Path, msg: &str, fd: &OwnedFd) -> Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let conn = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        Error::io(
            "failed to connect with seccomp agent specified in the seccomp profile",
            e,
        )
    })?;
    let failed =
        |e: nix::Error| Error::sys(format!("cannot send seccomp fd to {}", path.display()), e);
    let bytes = msg.as_bytes();
    let iov = [std::io::IoSlice::new(bytes)];
    let fds = [fd.as_raw_fd()];
    let mut sent = sendmsg::<()>(
        conn.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(failed)?;
    // The descriptor went with the first part (the spec allows the rest in
    // further sends, without descriptors).
    while sent < bytes.len() {
        sent += nix::unistd::write(&conn, &bytes[sent..]).map_err(failed)?;
    }
    Ok(())
}

/// In the shim: if `msg` from process `pid` names its listener
/// descriptor, passes it to the listener and lets the process go on
/// (`Ok(true)`); `Ok(false)` for any other message.
pub fn forward(sock: &OwnedFd, msg: &str, a: &About, pid: u32) -> Result<bool> {
    let Some(fd) = named_fd(msg) else {
        return Ok(false);
    };
    let s = a
        .profile
        .as_ref()
        .ok_or_else(|| Error::internal("seccomp: a listener descriptor without a profile"))?;
    let path = s
        .listener_path()
        .as_deref()
        .ok_or_else(|| Error::invalid("seccomp listenerPath is not set"))?;
    let copy = take(pid, fd)?;
    send(path, &message(s, a, pid), &copy)?;
    drop(copy);
    sync::send(sock, "n")?;
    Ok(true)
}

/// `sync::recv_ready` for a process that may name a listener descriptor
/// first: forwards it (see [`forward`]) and reads on.
pub fn recv_ready(sock: &OwnedFd, a: &About, pid: u32) -> Result<(String, Option<OwnedFd>)> {
    let mut console = None;
    loop {
        let (m, c) = sync::recv_ready(sock)?;
        console = console.or(c);
        if !forward(sock, &m, a, pid)? {
            return Ok((m, console));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompBuilder, SpecBuilder};
    use std::io::Read;

    fn profile(meta: Option<&str>) -> LinuxSeccomp {
        let mut b = LinuxSeccompBuilder::default()
            .default_action(oci_spec::runtime::LinuxSeccompAction::ScmpActAllow)
            .listener_path("/run/agent.sock");
        if let Some(m) = meta {
            b = b.listener_metadata(m);
        }
        b.build().unwrap()
    }

    #[test]
    fn message_has_runcs_fields_in_runcs_order() {
        let spec = SpecBuilder::default()
            .version("1.0.2-dev")
            .annotations(
                [
                    ("b".to_string(), "2".to_string()),
                    ("a".to_string(), "1".to_string()),
                ]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()
            .unwrap();
        let about = About::new(&spec, "c1", Path::new("/run/b/c1"), "running", 7);
        assert_eq!(
            message(&profile(Some("MKNOD=1")), &about, 9),
            r#"{"ociVersion":"1.0.2-dev","fds":["seccompFd"],"pid":9,"metadata":"MKNOD=1","state":{"ociVersion":"1.0.2-dev","id":"c1","status":"running","pid":7,"bundle":"/run/b/c1","annotations":{"a":"1","b":"2"}}}"#
        );
        // No metadata, no annotations: left out (Go's omitempty).
        let bare = SpecBuilder::default().version("1.0.2-dev").build().unwrap();
        let about = About::new(&bare, "c1", Path::new("/run/b/c1"), "creating", 9);
        assert_eq!(
            message(&profile(None), &about, 9),
            r#"{"ociVersion":"1.0.2-dev","fds":["seccompFd"],"pid":9,"state":{"ociVersion":"1.0.2-dev","id":"c1","status":"creating","pid":9,"bundle":"/run/b/c1"}}"#
        );
    }

    /// Receives one connection's payload and descriptors.
    fn receive(l: &std::os::unix::net::UnixListener) -> (String, Vec<OwnedFd>) {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        let (mut conn, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 4096];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 2]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let m = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .unwrap();
        let mut fds = Vec::new();
        for c in m.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(v) = c {
                // SAFETY: just received.
                fds.extend(v.iter().map(|f| unsafe { OwnedFd::from_raw_fd(*f) }));
            }
        }
        let n = m.bytes;
        let mut text = String::from_utf8_lossy(&buf[..n]).to_string();
        conn.read_to_string(&mut text).unwrap();
        (text, fds)
    }

    #[test]
    fn a_named_descriptor_reaches_the_listener_and_the_process_goes_on() {
        let dir = tempdir();
        let path = dir.join("agent.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut s = profile(Some("m"));
        s.set_listener_path(Some(path.clone()));
        let spec = SpecBuilder::default()
            .version("1.0.2")
            .linux(
                oci_spec::runtime::LinuxBuilder::default()
                    .seccomp(s)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let (shim, child) = sync::pair().unwrap();
        // Our own process plays the container's: a pipe stands for the
        // listener descriptor; pidfd_getfd copies it from ourselves.
        let (r, w) = nix::unistd::pipe().unwrap();
        let me = std::process::id();
        let about = About::new(&spec, "c1", Path::new("/b"), "creating", me);
        let r_no = r.as_raw_fd();
        let t = std::thread::spawn(move || hand_over(&child, Some(r)));
        let msg = sync::recv(&shim).unwrap();
        assert_eq!(named_fd(&msg), Some(r_no));
        assert!(forward(&shim, &msg, &about, me).unwrap());
        t.join().unwrap().unwrap();
        let (text, fds) = receive(&l);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["fds"], serde_json::json!(["seccompFd"]));
        assert_eq!(v["metadata"], "m");
        assert_eq!(v["state"]["status"], "creating");
        assert_eq!(fds.len(), 1);
        // The copy is the same pipe: what goes in one end comes out of it.
        nix::unistd::write(&w, b"x").unwrap();
        let mut b = [0u8; 1];
        assert_eq!(nix::unistd::read(&fds[0], &mut b).unwrap(), 1);
        // Other messages are not ours; no listener is a create error.
        assert!(!forward(&shim, "r", &about, me).unwrap());
        std::fs::remove_file(&path).unwrap();
        let e = send(&path, "{}", &w).unwrap_err();
        assert!(
            e.message()
                .starts_with("failed to connect with seccomp agent"),
            "{e}"
        );
        std::fs::remove_dir(&dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("berth-listener-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
