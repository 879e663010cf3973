//! Running a process in a CRI container: the one path ExecSync and the
//! streaming server's Exec use. The process is the container's own (its
//! spec's user, env, cwd, capabilities) with the asked argv, as
//! containerd's `execInternal`; its stdio are FIFOs under berthd's state
//! directory (0700), copied to and from the caller's streams.

use crate::containers::Containers;
use crate::error::{Error, Result};
use crate::runtime::Tasks;
use berth_proto::pb::containerd::task::v2 as shimapi;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// The caller's side of an exec's stdio (`None`: not wanted).
#[derive(Default)]
pub struct Io {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
}

/// What to run and how.
pub struct Request {
    pub ns: String,
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    /// Terminal sizes (width, height) while it runs.
    pub resize: Option<mpsc::Receiver<(u32, u32)>>,
    /// Killed (SIGKILL) after this long, and the exec fails.
    pub timeout: Option<Duration>,
    /// Killed (SIGKILL) when cancelled: the streaming client went away,
    /// and containerd kills the exec then too.
    pub cancel: Option<berth_stream::CancellationToken>,
}

/// The FIFOs of one exec, removed with their directory when dropped.
struct Fifos {
    dir: PathBuf,
}

impl Drop for Fifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A directory only berthd (root) can enter: exec output may hold secrets.
fn private_dir(p: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(|e| crate::error::io_err(format!("create {}", p.display()), e))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| crate::error::io_err(format!("chmod {}", p.display()), e))
}

fn mkfifo(p: &Path) -> Result<String> {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| Error::internal(format!("mkfifo {}: {e}", p.display())))?;
    Ok(p.to_string_lossy().into_owned())
}

/// The process spec of an exec: the container's process with `cmd`.
fn process_spec(containers: &Containers, ns: &str, id: &str, r: &Request) -> Result<Vec<u8>> {
    let c = containers.get(ns, id)?;
    let spec: prost_types::Any = c
        .record
        .spec
        .ok_or_else(|| Error::precondition(format!("container {id} has no spec")))?
        .into();
    let spec: serde_json::Value = serde_json::from_slice(&spec.value)
        .map_err(|e| Error::internal(format!("container {id}: its spec is not JSON: {e}")))?;
    let mut p = spec["process"].clone();
    p["args"] = serde_json::json!(r.cmd);
    p["terminal"] = serde_json::json!(r.tty);
    if let Some(o) = p.as_object_mut() {
        o.remove("commandLine");
        o.remove("consoleSize");
    }
    if r.tty
        && let Some(env) = p["env"].as_array_mut()
    {
        env.retain(|e| !e.as_str().is_some_and(|s| s.starts_with("TERM=")));
        env.push("TERM=xterm".into());
    }
    serde_json::to_vec(&p).map_err(|e| Error::internal(format!("exec spec: {e}")))
}

/// Copies `from` into `to` until `from` ends.
async fn copy_out(from: pipe::Receiver, mut to: Box<dyn AsyncWrite + Send + Unpin>) {
    let mut from = from;
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// Runs `r.cmd` in the running container and returns its exit code.
/// Output is copied until the process and everything holding its output
/// end; on timeout the process is killed and the call fails with
/// DeadlineExceeded, as containerd's ExecSync.
pub async fn exec(
    tasks: &Tasks,
    containers: &Containers,
    fifo_root: &Path,
    mut r: Request,
    io: Io,
) -> Result<i32> {
    if r.cmd.is_empty() {
        return Err(Error::invalid("exec: cmd must not be empty"));
    }
    let (ns, id) = (r.ns.clone(), r.container_id.clone());
    let spec = process_spec(containers, &ns, &id, &r)?;
    let exec_id = uuid::Uuid::new_v4().simple().to_string();
    private_dir(fifo_root)?;
    let fifos = Fifos {
        dir: fifo_root.join(&exec_id),
    };
    private_dir(&fifos.dir)?;
    let Io {
        stdin: in_w,
        stdout: out_w,
        stderr: err_w,
    } = io;
    let path = |n: &str| fifos.dir.join(n);
    let stdin = match in_w {
        Some(_) => mkfifo(&path("stdin"))?,
        None => String::new(),
    };
    let stdout = match out_w {
        Some(_) => mkfifo(&path("stdout"))?,
        None => String::new(),
    };
    // With a terminal both streams arrive on stdout.
    let stderr = match err_w {
        Some(_) if !r.tty => mkfifo(&path("stderr"))?,
        _ => String::new(),
    };
    // Our ends first, without blocking: read ends need no writer yet, and
    // the stdin write end is opened read-write so it needs no reader.
    let open_rx = |p: &str| {
        pipe::OpenOptions::new()
            .open_receiver(p)
            .map_err(|e| crate::error::io_err(format!("open {p}"), e))
    };
    let out_rx = (!stdout.is_empty()).then(|| open_rx(&stdout)).transpose()?;
    let err_rx = (!stderr.is_empty()).then(|| open_rx(&stderr)).transpose()?;
    let in_tx = if stdin.is_empty() {
        None
    } else {
        Some(
            pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(&stdin)
                .map_err(|e| crate::error::io_err(format!("open {stdin}"), e))?,
        )
    };
    tasks
        .exec(
            &ns,
            &id,
            shimapi::ExecProcessRequest {
                id: id.clone(),
                exec_id: exec_id.clone(),
                terminal: r.tty,
                stdin: stdin.clone(),
                stdout: stdout.clone(),
                stderr: stderr.clone(),
                spec: Some(prost_types::Any {
                    type_url: berth_proto::typeurl::OCI_PROCESS_URL.into(),
                    value: spec,
                }),
            },
        )
        .await?;
    // From here the exec exists: whatever happens, it is deleted.
    let parts = Parts {
        outs: io_streams(out_w, err_w, out_rx, err_rx),
        stdin: in_w.zip(in_tx),
    };
    let result = run(tasks, &ns, &id, &exec_id, &mut r, parts).await;
    let _ = tasks
        .kill(&ns, &id, &exec_id, libc::SIGKILL as u32, false)
        .await;
    if let Err(e) = tasks.delete_process(&ns, &id, &exec_id).await
        && !e.is_not_found()
    {
        tracing::warn!("exec {exec_id} in {ns}/{id}: delete: {e}");
    }
    drop(fifos);
    result
}

type Outs = Vec<tokio::task::JoinHandle<()>>;

fn io_streams(
    stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    out_rx: Option<pipe::Receiver>,
    err_rx: Option<pipe::Receiver>,
) -> Outs {
    let mut outs = Vec::new();
    if let (Some(w), Some(rx)) = (stdout, out_rx) {
        outs.push(tokio::spawn(copy_out(rx, w)));
    }
    if let (Some(w), Some(rx)) = (stderr, err_rx) {
        outs.push(tokio::spawn(copy_out(rx, w)));
    }
    outs
}

struct Parts {
    outs: Outs,
    stdin: Option<(Box<dyn AsyncRead + Send + Unpin>, pipe::Sender)>,
}

/// Starts the exec, feeds it, waits for it (or the timeout) and drains
/// its output.
async fn run(
    tasks: &Tasks,
    ns: &str,
    id: &str,
    exec_id: &str,
    r: &mut Request,
    parts: Parts,
) -> Result<i32> {
    tasks.start(ns, id, exec_id).await?;
    let input = parts.stdin.map(|(mut from, mut to)| {
        let (ns, id, exec_id) = (ns.to_string(), id.to_string(), exec_id.to_string());
        async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            drop(to);
            (ns, id, exec_id)
        }
    });
    let (close_tx, mut close_rx) = mpsc::channel::<()>(1);
    let input = input.map(|f| {
        tokio::spawn(async move {
            let _ = f.await;
            let _ = close_tx.send(()).await;
        })
    });
    let mut resize = r.resize.take();
    let wait = tasks.wait(ns, id, exec_id);
    tokio::pin!(wait);
    let deadline = async {
        match r.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let code = loop {
        tokio::select! {
            w = &mut wait => break w?.exit_status,
            _ = &mut deadline => {
                let _ = tasks.kill(ns, id, exec_id, libc::SIGKILL as u32, false).await;
                let _ = (&mut wait).await;
                if let Some(i) = &input { i.abort(); }
                drain(parts.outs).await;
                return Err(Error::new(
                    berth_proto::errdefs::Kind::DeadlineExceeded,
                    format!("timeout {:?} exceeded", r.timeout.unwrap_or_default()),
                ));
            }
            _ = async { match &r.cancel { Some(c) => c.cancelled().await, None => std::future::pending().await } } => {
                let _ = tasks.kill(ns, id, exec_id, libc::SIGKILL as u32, false).await;
                let _ = (&mut wait).await;
                if let Some(i) = &input { i.abort(); }
                drain(parts.outs).await;
                return Err(Error::new(
                    berth_proto::errdefs::Kind::Canceled,
                    "the client went away; the exec was killed",
                ));
            }
            Some(()) = close_rx.recv() => {
                // The caller's input ended: the process sees EOF.
                let _ = tasks.close_io(ns, id, exec_id, true).await;
            }
            Some((w, h)) = async { match resize.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                let _ = tasks.resize_pty(ns, id, exec_id, w, h).await;
            }
        }
    };
    if let Some(i) = input {
        i.abort();
    }
    drain(parts.outs).await;
    i32::try_from(code).map_err(|_| Error::internal(format!("exit status {code} out of range")))
}

/// Waits for the output copies; a process the exec left behind holding
/// its output is not waited for long.
async fn drain(outs: Outs) {
    for o in outs {
        let abort = o.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), o)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// ExecSync's output bound per stream (containerd's 16 MiB); the rest is
/// read and dropped.
pub const MAX_SYNC_OUTPUT: usize = 16 << 20;

/// A writer that keeps at most `limit` bytes and accepts (drops) the rest.
pub struct Capped {
    pub buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    pub limit: usize,
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.limit.saturating_sub(b.len());
        b.extend_from_slice(&data[..room.min(data.len())]);
        std::task::Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn capped_keeps_the_first_bytes() {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut w = Capped {
            buf: buf.clone(),
            limit: 5,
        };
        w.write_all(b"abc").await.unwrap();
        w.write_all(b"defgh").await.unwrap();
        assert_eq!(&*buf.lock().unwrap(), b"abcde");
    }
}
