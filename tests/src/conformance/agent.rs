//! A seccomp agent for the conformance suite: listens on a unix socket
//! (the profile's `listenerPath`), takes each connection's container
//! process state and listener descriptor, and answers the container's
//! notified syscalls through libseccomp's notify API: `getppid` returns
//! [`PPID`], `mkdir`/`mkdirat` fail with `EDQUOT`, anything else goes on
//! (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).

use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the agent makes `getppid` return.
pub const PPID: i64 = 4242;

/// One connection: the JSON received, the descriptors' count, and the
/// syscalls answered through its descriptor.
#[derive(Debug, Default, Clone)]
pub struct Connection {
    pub message: String,
    pub fds: usize,
    pub answered: Vec<String>,
}

/// A running agent; [`Agent::finish`] stops it and returns what it saw.
pub struct Agent {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Arc<Mutex<Connection>>>>>,
    accept: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl Agent {
    pub fn start() -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("berth-agent-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().join("agent.sock");
        let l = UnixListener::bind(&path).expect("bind the agent's socket");
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<Arc<Mutex<Connection>>>>> = Arc::default();
        let (s, v) = (stop.clone(), seen.clone());
        let accept = std::thread::spawn(move || {
            let mut serving = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).expect("blocking");
                        let c = Arc::new(Mutex::new(Connection::default()));
                        v.lock().unwrap().push(c.clone());
                        let s = s.clone();
                        serving.push(std::thread::spawn(move || serve(conn, &c, &s)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            serving
        });
        Agent {
            path,
            _dir: dir,
            stop,
            seen,
            accept: Some(accept),
        }
    }

    /// Stops listening and waits (up to `linger`) for the containers to
    /// be gone from every descriptor; what each connection brought.
    pub fn finish(mut self, linger: Duration) -> Vec<Connection> {
        let deadline = std::time::Instant::now() + linger;
        // Serving threads end on their own when the filter's last user
        // exits; after the deadline they are told to.
        let serving_done =
            || {
                self.seen.lock().unwrap().iter().all(|c| {
                    c.lock().unwrap().answered.last().map(String::as_str) == Some("<gone>")
                })
            };
        while std::time::Instant::now() < deadline && !serving_done() {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            for t in a.join().expect("accept thread") {
                let _ = t.join();
            }
        }
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads the state and descriptor (SCM_RIGHTS on the first part, the rest
/// until the runtime closes), then answers notifications until the filter
/// has no user left (or the agent stops).
fn serve(conn: UnixStream, c: &Mutex<Connection>, stop: &AtomicBool) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::io::Read;
    let mut buf = vec![0u8; 65536];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut fds = Vec::new();
    let n = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let Ok(m) = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) else {
            return;
        };
        for cm in m.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(v) = cm {
                // SAFETY: the kernel just gave us these descriptors.
                fds.extend(v.iter().map(|f| unsafe { OwnedFd::from_raw_fd(*f) }));
            }
        }
        m.bytes
    };
    let mut text = String::from_utf8_lossy(&buf[..n]).to_string();
    let mut conn = conn;
    let _ = conn.read_to_string(&mut text);
    {
        let mut g = c.lock().unwrap();
        g.message = text;
        g.fds = fds.len();
    }
    let Some(fd) = fds.first() else {
        return;
    };
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, 50) };
        if r > 0 && p.revents & libc::POLLIN != 0 {
            let Ok(req) = ScmpNotifReq::receive(fd.as_raw_fd()) else {
                continue;
            };
            let name = req
                .data
                .syscall
                .get_name_by_arch(req.data.arch)
                .unwrap_or_else(|_| "?".into());
            let flags = ScmpNotifRespFlags::empty();
            let resp = match name.as_str() {
                "getppid" => ScmpNotifResp::new_val(req.id, PPID, flags),
                "mkdir" | "mkdirat" => ScmpNotifResp::new_error(req.id, -libc::EDQUOT, flags),
                _ => ScmpNotifResp::new_continue(req.id, ScmpNotifRespFlags::CONTINUE),
            };
            // The process may have died meanwhile (ENOENT): nothing to do.
            let _ = resp.respond(fd.as_raw_fd());
            c.lock().unwrap().answered.push(name);
        } else if r > 0 && p.revents & libc::POLLHUP != 0 {
            c.lock().unwrap().answered.push("<gone>".into());
            return;
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
    }
}
