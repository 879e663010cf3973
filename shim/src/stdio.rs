//! A process's standard I/O: the client's FIFOs (paths from the create or
//! exec request), or log files (`file:///path`), connected to pipes or a
//! pseudo-terminal the container process uses. Output is copied until the process side closes; the copy
//! tasks are awaited before an exit is reported, so no output is lost.

use crate::fdio::async_read;
use crate::{Error, Result};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

/// The container side of a process's I/O, handed to the runtime.
#[derive(Default)]
pub struct ChildIo {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// The process wants a terminal: the runtime creates it inside the
    /// container (so it belongs to the container's devpts) and hands the
    /// master back for [`attach_console`].
    pub terminal: bool,
}

/// The shim side of a process's I/O.
#[derive(Default)]
pub struct ShimIo {
    /// Copies of output to the client; awaited at exit.
    pub outputs: Vec<JoinHandle<()>>,
    /// Copy of the client's input; aborted when the process exits.
    pub input: Option<JoinHandle<()>>,
    /// Tells the input copy that the client closed its input (CloseIO):
    /// it passes on what the FIFO still holds, then closes the process's
    /// stdin, so nothing the client wrote is lost.
    pub close_input: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Terminal master (for resizes).
    pub console: Option<std::sync::Arc<AsyncFd<OwnedFd>>>,
    /// The `berth-log://` files output goes to (reopened on request).
    pub logs: Vec<crate::logfile::Shared>,
    /// The client's ends, opened at setup, waiting for the terminal master.
    pending_console: Option<PendingConsole>,
}

#[derive(Default)]
struct PendingConsole {
    input: Option<std::sync::Arc<AsyncFd<OwnedFd>>>,
    output: Option<Output>,
}

enum Output {
    Fifo(std::sync::Arc<AsyncFd<OwnedFd>>),
    File(std::fs::File),
    /// A log file berthd names (json-file or CRI), and the stream
    /// written to it.
    Log(crate::logfile::Shared, String),
}

fn nonblocking(fd: &impl AsFd) -> Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::sys("get fd flags", e))?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| Error::sys("set O_NONBLOCK", e))?;
    Ok(())
}

/// Registers a descriptor with the reactor (made non-blocking first).
pub fn async_fd(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>> {
    nonblocking(&fd)?;
    // SAFETY: an OwnedFd keeps the same open descriptor for its lifetime.
    unsafe { AsyncFd::register(fd) }.map_err(|e| Error::io("register fd", e.into()))
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let mut g = fd.writable().await?;
        match g.try_io(|f| nix::unistd::write(f.get_ref(), buf).map_err(std::io::Error::from)) {
            Ok(Ok(n)) => buf = &buf[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

fn copy(
    from: std::sync::Arc<AsyncFd<OwnedFd>>,
    to: std::sync::Arc<AsyncFd<OwnedFd>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match async_read(&from, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if write_all(&to, &buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

impl ShimIo {
    /// Starts copying the client's input to the process, closable by CloseIO.
    fn start_input(
        &mut self,
        from: std::sync::Arc<AsyncFd<OwnedFd>>,
        to: std::sync::Arc<AsyncFd<OwnedFd>>,
    ) {
        let close = std::sync::Arc::new(tokio::sync::Notify::new());
        self.input = Some(copy_input(from, to, close.clone()));
        self.close_input = Some(close);
    }
}

/// Copies the client's input to the process until the client's end closes
/// (EOF), or until CloseIO: then what is already in the FIFO is still
/// passed on (a slow reader loses nothing), and the copy stops, dropping
/// `to` so the process sees EOF.
fn copy_input(
    from: std::sync::Arc<AsyncFd<OwnedFd>>,
    to: std::sync::Arc<AsyncFd<OwnedFd>>,
    close: std::sync::Arc<tokio::sync::Notify>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        let mut closing = false;
        loop {
            let n = if closing {
                match nix::unistd::read(from.get_ref(), &mut buf) {
                    Ok(n) if n > 0 => n,
                    _ => return, // drained (EAGAIN), EOF or an error
                }
            } else {
                tokio::select! {
                    r = async_read(&from, &mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    },
                    () = close.notified() => {
                        closing = true;
                        continue;
                    }
                }
            };
            if write_all(&to, &buf[..n]).await.is_err() {
                return;
            }
        }
    })
}

/// Copies into a log file (`file://` stdio): regular files are always
/// ready, so plain writes are fine.
fn copy_to_file(from: std::sync::Arc<AsyncFd<OwnedFd>>, mut to: std::fs::File) -> JoinHandle<()> {
    use std::io::Write;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match async_read(&from, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

fn open_log(url: &str) -> Result<std::fs::File> {
    let path = url.trim_start_matches("file://");
    // Container output may hold secrets: directories and files we create
    // are owner-only (existing ones, the user's choice, are left alone).
    if let Some(d) = std::path::Path::new(path).parent() {
        std::os::unix::fs::DirBuilderExt::mode(
            std::fs::DirBuilder::new().recursive(true),
            berth_mount::private::OWNER_ONLY,
        )
        .create(d)
        .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
    }
    std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new().create(true).append(true),
        berth_mount::private::OWNER_FILE,
    )
    .open(path)
    .map_err(|e| Error::io(format!("open log {path}"), e))
}

fn open_fifo(path: &str, flags: OFlag) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        flags | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open {path}"), e))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("create pipe", e))
}

fn devnull(write: bool) -> Result<OwnedFd> {
    let f = if write {
        OFlag::O_WRONLY
    } else {
        OFlag::O_RDONLY
    };
    nix::fcntl::open(
        "/dev/null",
        f | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys("open /dev/null", e))
}

/// Who owns the pipes a process gets as stdio: the runtime options'
/// `IoUid`/`IoGid` (`ctr run --uidmap` sets them to the host ids of the
/// container's root). containerd's shim gives the pipes to them so that the
/// process may reopen its stdio (`/dev/stdout`), which a pipe owned by a
/// root the container's user namespace does not map refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoOwner {
    pub uid: u32,
    pub gid: u32,
}

/// Gives a pipe (through either end) to `owner`, unless that is root.
fn give(fd: &OwnedFd, owner: IoOwner) -> Result<()> {
    if owner == IoOwner::default() {
        return Ok(());
    }
    nix::unistd::fchown(
        fd,
        Some(nix::unistd::Uid::from_raw(owner.uid)),
        Some(nix::unistd::Gid::from_raw(owner.gid)),
    )
    .map_err(|e| {
        Error::sys(
            format!("chown stdio pipe to {}:{}", owner.uid, owner.gid),
            e,
        )
    })
}

/// Connects the client's FIFOs to a new process's I/O; the pipes the
/// process gets are `owner`'s.
pub fn setup(
    stdin: &str,
    stdout: &str,
    stderr: &str,
    terminal: bool,
    owner: IoOwner,
) -> Result<(ChildIo, ShimIo)> {
    let mut child = ChildIo::default();
    let mut shim = ShimIo::default();
    if terminal {
        // Open the client's ends now (the client may open its side as soon
        // as the request returns); the master arrives from the runtime.
        child.terminal = true;
        let mut p = PendingConsole::default();
        if stdout.starts_with(berth_proto::jsonlog::SCHEME) {
            let (w, stream) = crate::logfile::Opened::default().open(stdout)?;
            shim.logs.push(w.clone());
            p.output = Some(Output::Log(w, stream));
        } else if stdout.starts_with("file://") {
            p.output = Some(Output::File(open_log(stdout)?));
        } else if !stdout.is_empty() {
            // O_RDWR: never blocks, and the client's reader sees EOF once we close.
            p.output = Some(Output::Fifo(std::sync::Arc::new(async_fd(open_fifo(
                stdout,
                OFlag::O_RDWR,
            )?)?)));
        }
        if !stdin.is_empty() {
            p.input = Some(std::sync::Arc::new(async_fd(open_fifo(
                stdin,
                OFlag::O_RDONLY,
            )?)?));
        }
        shim.pending_console = Some(p);
        return Ok((child, shim));
    }
    let mut logs = crate::logfile::Opened::default();
    for (path, is_err) in [(stdout, false), (stderr, true)] {
        let fd = if path.is_empty() {
            devnull(true)?
        } else if path.starts_with(berth_proto::jsonlog::SCHEME) {
            let (r, w) = pipe()?;
            give(&w, owner)?;
            let (log, stream) = logs.open(path)?;
            shim.outputs.push(crate::logfile::copy_to_log(
                std::sync::Arc::new(async_fd(r)?),
                log,
                stream,
            ));
            w
        } else if path.starts_with("file://") {
            let (r, w) = pipe()?;
            give(&w, owner)?;
            shim.outputs.push(copy_to_file(
                std::sync::Arc::new(async_fd(r)?),
                open_log(path)?,
            ));
            w
        } else {
            let (r, w) = pipe()?;
            give(&w, owner)?;
            let out = std::sync::Arc::new(async_fd(open_fifo(path, OFlag::O_RDWR)?)?);
            shim.outputs
                .push(copy(std::sync::Arc::new(async_fd(r)?), out));
            w
        };
        if is_err {
            child.stderr = Some(fd);
        } else {
            child.stdout = Some(fd);
        }
    }
    child.stdin = Some(if stdin.is_empty() {
        devnull(false)?
    } else {
        let (r, w) = pipe()?;
        give(&r, owner)?;
        let inp = std::sync::Arc::new(async_fd(open_fifo(stdin, OFlag::O_RDONLY)?)?);
        // When the client closes its end, the container sees EOF: the copy
        // ends and drops the pipe's write end.
        shim.start_input(inp, std::sync::Arc::new(async_fd(w)?));
        r
    });
    shim.logs = logs.into_logs();
    Ok((child, shim))
}

/// Connects a terminal master (from the runtime) to the client's ends.
pub fn attach_console(shim: &mut ShimIo, master: OwnedFd) -> Result<()> {
    let p = shim.pending_console.take().unwrap_or_default();
    let master = std::sync::Arc::new(async_fd(master)?);
    match p.output {
        Some(Output::File(f)) => shim.outputs.push(copy_to_file(master.clone(), f)),
        Some(Output::Fifo(out)) => shim.outputs.push(copy(master.clone(), out)),
        Some(Output::Log(w, stream)) => {
            shim.outputs
                .push(crate::logfile::copy_to_log(master.clone(), w, stream))
        }
        None => {}
    }
    if let Some(inp) = p.input {
        shim.start_input(inp, master.clone());
    }
    shim.console = Some(master);
    Ok(())
}

/// A terminal window size; the kernel's fields are 16 bits, so a larger
/// one is refused rather than wrapped to a different size.
pub fn winsize(width: u64, height: u64) -> Result<libc::winsize> {
    let dim = |what: &str, v: u64| {
        u16::try_from(v).map_err(|_| {
            Error::invalid(format!(
                "terminal {what} {v} is out of range (at most {})",
                u16::MAX
            ))
        })
    };
    Ok(libc::winsize {
        ws_row: dim("height", height)?,
        ws_col: dim("width", width)?,
        ws_xpixel: 0,
        ws_ypixel: 0,
    })
}

/// Sets a terminal's window size.
pub fn resize(console: &AsyncFd<OwnedFd>, width: u32, height: u32) -> Result<()> {
    let ws = winsize(u64::from(width), u64::from(height))?;
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer we pass.
    let r = unsafe { libc::ioctl(console.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(Error::io(
            "resize terminal",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pipes_go_to_the_io_owner_and_dev_null_stays_roots() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("berth-stdio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = format!("file://{}", dir.join("out.log").display());
        let owner = IoOwner {
            uid: 100000,
            gid: 100001,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let meta = |fd: &Option<OwnedFd>| {
            let fd = fd.as_ref().unwrap().as_raw_fd();
            std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap()
        };
        let (child, _shim) = setup("", &log, "", false, IoOwner::default()).unwrap();
        assert_eq!(meta(&child.stdout).uid(), nix::unistd::geteuid().as_raw());
        // Giving a pipe away takes root.
        if nix::unistd::geteuid().is_root() {
            let (child, _shim) = setup("", &log, "", false, owner).unwrap();
            let out = meta(&child.stdout);
            assert_eq!((out.uid(), out.gid()), (100000, 100001));
            // /dev/null is shared with the host: never given away.
            let null = std::fs::metadata("/dev/null").unwrap();
            assert_eq!(meta(&child.stdin).rdev(), null.rdev());
            assert_eq!(meta(&child.stderr).uid(), null.uid());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn both_streams_go_to_one_json_log_as_lines() {
        use berth_proto::jsonlog::{Destination, decode};
        let dir = std::env::temp_dir().join(format!("berth-jsonlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("c1").join("c1-json.log");
        let uri = |stream: &str| Destination::json(path.clone(), stream, 0, 1).uri();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let entries = rt.block_on(async {
            let (child, shim) = setup(
                "",
                &uri("stdout"),
                &uri("stderr"),
                false,
                IoOwner::default(),
            )
            .unwrap();
            let out = std::fs::File::from(child.stdout.unwrap());
            let err = std::fs::File::from(child.stderr.unwrap());
            use std::io::Write;
            (&out).write_all(b"one\ntw").unwrap();
            (&out).write_all(b"o\n").unwrap();
            // The output copy reads stdout before stderr is written.
            tokio::time::sleep(Duration::from_millis(100)).await;
            (&err).write_all(b"oops\nno newline").unwrap();
            drop((out, err));
            for o in shim.outputs {
                o.await.unwrap();
            }
            std::fs::read(&path).unwrap()
        });
        let got: Vec<(String, Vec<u8>)> = entries
            .split_inclusive(|b| *b == b'\n')
            .map(|l| decode(l).unwrap())
            .map(|e| (e.stream, e.log))
            .collect();
        let want = [
            ("stdout", &b"one\n"[..]),
            ("stdout", b"two\n"),
            ("stderr", b"oops\n"),
            ("stderr", b"no newline"),
        ];
        let want: Vec<(String, Vec<u8>)> = want
            .iter()
            .map(|(s, l)| (s.to_string(), l.to_vec()))
            .collect();
        assert_eq!(got, want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn window_size_is_refused_not_wrapped() {
        let ws = winsize(80, 24).unwrap();
        assert_eq!((ws.ws_col, ws.ws_row), (80, 24));
        let ws = winsize(65535, 65535).unwrap();
        assert_eq!((ws.ws_col, ws.ws_row), (u16::MAX, u16::MAX));
        let e = winsize(65536, 24).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::InvalidArgument);
        assert!(e.to_string().contains("width 65536"), "{e}");
        let e = winsize(80, 1 << 32).unwrap_err();
        assert!(e.to_string().contains("height 4294967296"), "{e}");
    }
}
