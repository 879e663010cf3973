//! The client side of a process's I/O: the FIFOs the shim connects it to
//! and the copies to and from ours, the local terminal (raw mode, size),
//! and forwarding the signals berthctl catches. Shared by `run` and
//! `tasks exec`/`attach`.

use crate::ctx::Ctx;
use crate::error::CtlError;
use anyhow::{Context as _, Result};
use berth_proto::services::tasks::v1 as tapi;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

/// The FIFOs a process's I/O goes through.
pub struct Fifos {
    dir: PathBuf,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

impl Fifos {
    /// Makes FIFOs for `id` under the state directory.
    pub fn create(id: &str, stdin: bool, terminal: bool) -> Result<Fifos> {
        let base = std::env::var("BERTH_FIFO_DIR").unwrap_or_else(|_| "/run/berth/fifo".into());
        std::fs::create_dir_all(&base).with_context(|| format!("create {base}"))?;
        let dir = PathBuf::from(base).join(format!("{id}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mk = |name: &str| -> Result<String> {
            let p = dir.join(name);
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| CtlError(format!("mkfifo {}: {e}", p.display())))?;
            Ok(p.display().to_string())
        };
        Ok(Fifos {
            stdin: if stdin { mk("stdin")? } else { String::new() },
            stdout: mk("stdout")?,
            stderr: if terminal {
                String::new()
            } else {
                mk("stderr")?
            },
            dir,
        })
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies the process's output to ours (and our stdin to it).
pub struct Attached {
    outputs: Vec<tokio::task::JoinHandle<()>>,
}

impl Attached {
    /// Opens the FIFOs (readers never block; the writer keeps a read end so
    /// opening never waits) and starts copying.
    pub fn start(f: &Fifos, forward_stdin: bool) -> Result<Attached> {
        let mut outputs = Vec::new();
        for (path, err) in [(&f.stdout, false), (&f.stderr, true)] {
            if path.is_empty() {
                continue;
            }
            let mut rx = pipe::OpenOptions::new()
                .open_receiver(path)
                .with_context(|| format!("open {path}"))?;
            outputs.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 << 10];
                loop {
                    match rx.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let r = if err {
                                tokio::io::stderr().write_all(&buf[..n]).await
                            } else {
                                let mut o = tokio::io::stdout();
                                let r = o.write_all(&buf[..n]).await;
                                let _ = o.flush().await;
                                r
                            };
                            if r.is_err() {
                                return;
                            }
                        }
                    }
                }
            }));
        }
        let _ = forward_stdin;
        Ok(Attached { outputs })
    }

    /// Forwards our stdin once the shim has opened its end (after the task
    /// or exec was created): data written to a FIFO nobody reads is lost.
    /// At its end the process is told EOF through `CloseIO`: containerd's
    /// runc shim holds a write end of the FIFO itself, so closing ours is
    /// not enough there.
    pub fn forward_stdin(f: &Fifos, ctx: &Ctx, id: &str, exec_id: &str) -> Result<()> {
        if f.stdin.is_empty() {
            return Ok(());
        }
        // Read-write, so opening never fails for want of a reader: runc's
        // shim opens an exec's FIFOs only at Start, and a process may be
        // gone before we open.
        let mut tx = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&f.stdin)
            .with_context(|| format!("open {}", f.stdin))?;
        let mut tasks = TasksClient::new(ctx.ch.clone());
        let close = berth_proto::client::request(
            &ctx.ns,
            tapi::CloseIoRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: true,
            },
        );
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            // Let the shim read what is still in the FIFO first: a shim may
            // drop what it has not read when told to close.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while unread(&tx) > 0 && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            drop(tx);
            let _ = tasks.close_io(close).await;
        });
        Ok(())
    }

    /// Waits until the process's output is drained.
    pub async fn drain(self) {
        for o in self.outputs {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), o).await;
        }
    }
}

/// Bytes written to a FIFO that its reader has not taken yet.
fn unread(tx: &pipe::Sender) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD stores an int through the pointer we pass; the
    // descriptor is open for as long as `tx` lives.
    let r = unsafe { libc::ioctl(tx.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r == 0 { n } else { 0 }
}

/// Puts the local terminal in raw mode until dropped.
/// Why `-t` cannot be used here, if it cannot: berthctl forwards its own
/// stdin to the process's terminal, so stdin must be a terminal too. From
/// a pipe or file the process never sees the end of the input (a terminal
/// has none) and the run would hang. Detached runs forward nothing.
pub fn tty_refusal(tty: bool, detach: bool, stdin_is_terminal: bool) -> Option<String> {
    (tty && !detach && !stdin_is_terminal).then(|| {
        "the input device is not a TTY: -t needs a terminal on stdin; drop -t (use -i alone) to pipe input".to_string()
    })
}

pub struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    pub fn enable() -> RawTerminal {
        let stdin = std::io::stdin();
        let Ok(orig) = nix::sys::termios::tcgetattr(&stdin) else {
            return RawTerminal(None);
        };
        let mut raw = orig.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
        RawTerminal(Some(orig))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(o) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                o,
            );
        }
    }
}

/// Our terminal's size, if stdin is one.
pub fn terminal_size() -> Option<(u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the struct we pass.
    let r = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some((u32::from(ws.ws_col), u32::from(ws.ws_row)))
}

/// Signals berthctl forwards, caught from before the process starts: one
/// that arrives while it is being created or started is held and passed on
/// once it runs, instead of killing berthctl half-way (which would leave
/// a `--rm` container behind).
pub struct CaughtSignals(Vec<(tokio::signal::unix::Signal, i32)>);

impl CaughtSignals {
    /// Starts catching; needs the tokio runtime.
    pub fn catch() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [
            (SignalKind::interrupt(), libc::SIGINT),
            (SignalKind::terminate(), libc::SIGTERM),
            (SignalKind::hangup(), libc::SIGHUP),
            (SignalKind::quit(), libc::SIGQUIT),
            (SignalKind::user_defined1(), libc::SIGUSR1),
            (SignalKind::user_defined2(), libc::SIGUSR2),
            (SignalKind::window_change(), libc::SIGWINCH),
        ];
        Self(
            kinds
                .iter()
                .filter_map(|(k, n)| signal(*k).ok().map(|s| (s, *n)))
                .collect(),
        )
    }

    /// The next signal caught.
    async fn any(&mut self) -> i32 {
        let futs = self.0.iter_mut().map(|(s, n)| {
            let n = *n;
            Box::pin(async move {
                s.recv().await;
                n
            })
        });
        futures::future::select_all(futs).await.0
    }

    /// The next signal other than a window change.
    pub async fn next(&mut self) -> i32 {
        loop {
            let sig = self.any().await;
            if sig != libc::SIGWINCH {
                return sig;
            }
        }
    }

    /// Forwards the signals (those held first) to the process until the
    /// returned task is aborted; on a terminal, keeps its size in step
    /// with ours.
    pub fn forward(
        self,
        ctx: &Ctx,
        id: &str,
        exec_id: &str,
        tty: bool,
    ) -> tokio::task::JoinHandle<()> {
        let ch = ctx.ch.clone();
        let ns = ctx.ns.clone();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        let mut caught = self;
        tokio::spawn(async move {
            let mut tasks = TasksClient::new(ch);
            loop {
                let sig = caught.any().await;
                if sig == libc::SIGWINCH {
                    if tty && let Some((w, h)) = terminal_size() {
                        let _ = tasks
                            .resize_pty(berth_proto::client::request(
                                &ns,
                                tapi::ResizePtyRequest {
                                    container_id: id.clone(),
                                    exec_id: exec_id.clone(),
                                    width: w,
                                    height: h,
                                },
                            ))
                            .await;
                    }
                    continue;
                }
                let _ = tasks
                    .kill(berth_proto::client::request(
                        &ns,
                        tapi::KillRequest {
                            container_id: id.clone(),
                            exec_id: exec_id.clone(),
                            signal: sig as u32,
                            all: false,
                        },
                    ))
                    .await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::tty_refusal;

    #[test]
    fn tty_needs_a_terminal_on_stdin() {
        assert!(
            tty_refusal(true, false, false)
                .unwrap()
                .contains("not a TTY")
        );
        assert_eq!(tty_refusal(true, false, true), None);
        assert_eq!(tty_refusal(true, true, false), None);
        assert_eq!(tty_refusal(false, false, false), None);
    }
}
