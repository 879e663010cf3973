//! berthd's side of the CRI streaming sessions: the `berth-stream` server
//! speaks SPDY/WebSocket to the kubelet and crictl and, once a session's
//! streams are set up, calls this backend. Exec runs through `exec` (as
//! ExecSync does), Attach reads the container's output from its CRI log
//! (the shim writes it; berthd holds no pipe of the container's output)
//! and feeds the stdin FIFO berthd holds, PortForward connects inside the
//! pod's network namespace.

use super::container::state_of;
use super::{CriService, NAMESPACE, exec};
use crate::error::{Error, Result};
use berth_proto::cri;
use berth_proto::crilog::{Follower, Line, Stream};
use berth_stream::{Backend, BackendError, Duplex, Io, TerminalSize, Writer};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// How often an attach looks for new log lines.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);

/// The backend the streaming server calls; weak, so the server does not
/// keep the service alive.
pub struct StreamBackend(pub Weak<CriService>);

impl StreamBackend {
    fn cri(&self) -> std::result::Result<Arc<CriService>, BackendError> {
        self.0
            .upgrade()
            .ok_or_else(|| "berthd is shutting down".into())
    }
}

/// Sizes from the client, as the task service takes them.
fn sizes(mut from: mpsc::Receiver<TerminalSize>) -> mpsc::Receiver<(u32, u32)> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(s) = from.recv().await {
            if tx
                .send((u32::from(s.width), u32::from(s.height)))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

#[async_trait::async_trait]
impl Backend for StreamBackend {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: Io,
        resize: mpsc::Receiver<TerminalSize>,
    ) -> std::result::Result<i32, BackendError> {
        let cri = self.cri()?;
        let r = exec::Request {
            ns: NAMESPACE.into(),
            container_id: container_id.into(),
            cmd,
            tty,
            resize: Some(sizes(resize)),
            timeout: None,
            cancel: Some(io.gone.clone()),
        };
        let io = exec::Io {
            stdin: io.stdin.map(|r| Box::new(r) as BoxRead),
            stdout: io.stdout.map(|w| Box::new(w) as BoxWrite),
            stderr: io.stderr.map(|w| Box::new(w) as BoxWrite),
        };
        Ok(exec::exec(&cri.tasks, &cri.containers, &cri.exec_dir(), r, io).await?)
    }

    async fn attach(
        &self,
        container_id: &str,
        tty: bool,
        io: Io,
        resize: mpsc::Receiver<TerminalSize>,
    ) -> std::result::Result<(), BackendError> {
        let cri = self.cri()?;
        Ok(attach(&cri, container_id, tty, io, resize).await?)
    }

    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        stream: Pin<Box<dyn Duplex>>,
    ) -> std::result::Result<(), BackendError> {
        let cri = self.cri()?;
        let pod = cri.store.sandbox(pod_sandbox_id)?;
        let netns = pod.meta.netns_path.clone();
        let conn = connect_in(&netns, port).await?;
        let mut conn = tokio::net::TcpStream::from_std(conn)
            .map_err(|e| crate::error::io_err("port-forward connection", e))?;
        let mut stream = stream;
        // Both directions to their end; EOF from the client half-closes.
        tokio::io::copy_bidirectional(&mut stream, &mut conn)
            .await
            .map_err(|e| crate::error::io_err(format!("port-forward to port {port}"), e))?;
        Ok(())
    }
}

/// A TCP connection to `127.0.0.1:port` made inside network namespace
/// `netns` ("" = the host's, for host-network pods). The socket is made
/// by a thread that entered the namespace, and stays in it.
async fn connect_in(netns: &str, port: u16) -> Result<std::net::TcpStream> {
    let ns = if netns.is_empty() {
        None
    } else {
        Some(
            std::fs::File::open(netns)
                .map_err(|e| crate::error::io_err(format!("open {netns}"), e))?,
        )
    };
    tokio::task::spawn_blocking(move || -> Result<std::net::TcpStream> {
        // A thread of its own: setns changes only the calling thread, and
        // this one is thrown away afterwards.
        std::thread::spawn(move || {
            if let Some(ns) = &ns {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                    |e| crate::error::io_err("enter the pod's network namespace", e.into()),
                )?;
            }
            let s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| {
                crate::error::io_err(format!("connect to port {port} in the pod"), e)
            })?;
            s.set_nonblocking(true)
                .map_err(|e| crate::error::io_err("port-forward socket", e))?;
            Ok(s)
        })
        .join()
        .map_err(|_| Error::internal("port-forward connector thread panicked"))?
    })
    .await
    .map_err(|e| Error::internal(format!("port-forward connector: {e}")))?
}

/// Attach: output from the container's CRI log from now on, input into
/// the stdin FIFO berthd holds, until the container exits or the client
/// leaves.
async fn attach(
    cri: &Arc<CriService>,
    id: &str,
    tty: bool,
    io: Io,
    mut resize: mpsc::Receiver<TerminalSize>,
) -> Result<()> {
    let c = cri.store.container(id)?;
    let log = cri.output_log(&c.meta);
    let cfg = c.meta.config.clone().unwrap_or_default();
    let mut follower = Follower::from_end(&log);
    tracing::debug!(
        "attach {id}: following {} from {}",
        log.display(),
        follower.offset()
    );
    let Io {
        stdin,
        mut stdout,
        mut stderr,
        gone,
    } = io;
    if let Some(input) = stdin {
        let fd: Option<OwnedFd> = {
            let held = cri.cstate.stdin.lock().unwrap_or_else(|e| e.into_inner());
            held.get(id)
                .map(|fd| fd.try_clone())
                .transpose()
                .map_err(|e| crate::error::io_err(format!("container {id}'s stdin"), e))?
        };
        match fd {
            Some(fd) => {
                let cri = cri.clone();
                let (id, once) = (id.to_string(), cfg.stdin_once);
                tokio::spawn(async move {
                    let mut input = input;
                    match tokio::net::unix::pipe::Sender::from_owned_fd(fd) {
                        Ok(mut to) => {
                            let r = tokio::io::copy(&mut input, &mut to).await;
                            tracing::debug!("attach {id}: stdin copied: {r:?}");
                        }
                        Err(e) => tracing::warn!("attach {id}: stdin: {e}"),
                    }
                    if once {
                        cri.cstate.close_stdin(&id);
                    }
                });
            }
            None if cfg.stdin => {
                return Err(Error::precondition(format!(
                    "container {id}'s stdin is closed (stdin_once, or it exited)"
                )));
            }
            None => {}
        }
    }
    if tty {
        let (tasks, id) = (cri.tasks.clone(), id.to_string());
        tokio::spawn(async move {
            while let Some(s) = resize.recv().await {
                let (w, h) = (u32::from(s.width), u32::from(s.height));
                let _ = tasks.resize_pty(NAMESPACE, &id, "", w, h).await;
            }
        });
    }
    let wait = cri.tasks.wait(NAMESPACE, id, "");
    tokio::pin!(wait);
    let mut exited = false;
    loop {
        let lines = tokio::select! {
            l = follower.next(FOLLOW_INTERVAL) => l,
            _ = &mut wait, if !exited => { exited = true; follower.poll() }
            _ = gone.cancelled() => return Ok(()),
        };
        tracing::debug!("attach {id}: {} lines (exited {exited})", lines.len());
        if !write_lines(&lines, &mut stdout, &mut stderr, tty).await {
            return Ok(());
        }
        if exited {
            // What the shim wrote before the exit is in the file now.
            write_lines(&follower.poll(), &mut stdout, &mut stderr, tty).await;
            break;
        }
    }
    for w in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = w.flush().await;
    }
    Ok(())
}

/// Writes the log's lines to the client's streams (stderr to stdout on a
/// terminal, which has no stderr of its own); false once the client is
/// gone.
async fn write_lines(
    lines: &[Line],
    stdout: &mut Option<Writer>,
    stderr: &mut Option<Writer>,
    tty: bool,
) -> bool {
    for l in lines {
        let to = match l.stream {
            Stream::Stdout => stdout.as_mut(),
            Stream::Stderr => stderr.as_mut().or(stdout.as_mut().filter(|_| tty)),
        };
        if let Some(w) = to
            && w.write_all(&l.content).await.is_err()
        {
            return false;
        }
    }
    true
}

impl CriService {
    /// FIFOs of execs (ExecSync and streaming) live here.
    pub fn exec_dir(&self) -> std::path::PathBuf {
        self.state.join("cri").join("exec")
    }

    /// Starts the streaming server at `[cri] stream_server_address/port`.
    pub async fn start_streaming(self: &Arc<Self>) -> Result<()> {
        let addr: std::net::IpAddr = self.config.stream_server_address.parse().map_err(|e| {
            Error::invalid(format!(
                "cri.stream_server_address {:?}: {e} (an IP address the kubelet can reach)",
                self.config.stream_server_address
            ))
        })?;
        let port: u16 = self.config.stream_server_port.parse().map_err(|e| {
            Error::invalid(format!(
                "cri.stream_server_port {:?}: {e}",
                self.config.stream_server_port
            ))
        })?;
        let idle = self.config.stream_idle_timeout().map_err(Error::invalid)?;
        let backend = Arc::new(StreamBackend(Arc::downgrade(self)));
        let server = berth_stream::Server::start(addr, port, idle, backend)
            .await
            .map_err(|e| {
                let cause = std::error::Error::source(&e)
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                Error::unavailable(format!("CRI streaming server: {e}{cause}"))
            })?;
        tracing::info!(address = %server.local_addr(), "CRI streaming server listening");
        let _ = self.stream.set(Ok(server));
        Ok(())
    }

    /// Starts the streaming server; a failure is kept (Exec, Attach and
    /// PortForward answer it) instead of stopping berthd: pods and every
    /// other RPC work without it.
    pub async fn start_streaming_or_report(self: &Arc<Self>) {
        if let Err(e) = self.start_streaming().await {
            tracing::error!("{}", e.chain());
            let _ = self.stream.set(Err(e.chain()));
        }
    }

    fn streaming(&self) -> Result<&berth_stream::Server> {
        match self.stream.get() {
            Some(Ok(s)) => Ok(s),
            Some(Err(why)) => Err(Error::unavailable(format!(
                "{why}; fix [cri] stream_server_address/port and restart berthd"
            ))),
            None => Err(Error::unavailable(
                "the CRI streaming server is not running",
            )),
        }
    }

    /// The container, which must be running (as containerd checks).
    fn running(&self, id: &str) -> Result<()> {
        let c = self.store.container(id)?;
        let state = state_of(&c.meta);
        if state != cri::ContainerState::ContainerRunning {
            return Err(Error::precondition(format!(
                "container {} is in {} state, not RUNNING",
                c.meta.id,
                state.as_str_name()
            )));
        }
        Ok(())
    }

    /// Exec: a URL of the streaming server for the session.
    pub async fn exec(&self, mut r: cri::ExecRequest) -> Result<cri::ExecResponse> {
        r.container_id = self.store.container(&r.container_id)?.meta.id;
        self.running(&r.container_id)?;
        self.streaming()?.exec_url(&r).map_err(stream_error)
    }

    /// Attach: a URL of the streaming server for the session.
    pub async fn attach(&self, mut r: cri::AttachRequest) -> Result<cri::AttachResponse> {
        r.container_id = self.store.container(&r.container_id)?.meta.id;
        self.running(&r.container_id)?;
        self.streaming()?.attach_url(&r).map_err(stream_error)
    }

    /// PortForward: a URL of the streaming server for the session.
    pub async fn port_forward(
        &self,
        mut r: cri::PortForwardRequest,
    ) -> Result<cri::PortForwardResponse> {
        let pod = self.store.sandbox(&r.pod_sandbox_id)?;
        if pod.meta.stopped {
            return Err(Error::precondition(format!(
                "pod sandbox {} is not ready",
                pod.meta.id
            )));
        }
        r.pod_sandbox_id = pod.meta.id;
        self.streaming()?.port_forward_url(&r).map_err(stream_error)
    }
}

fn stream_error(e: berth_stream::Error) -> Error {
    match e {
        berth_stream::Error::InvalidArgument(_) => Error::invalid(e.to_string()),
        berth_stream::Error::TooManyPending => Error::new(
            berth_proto::errdefs::Kind::ResourceExhausted,
            format!("{e}: retry later"),
        ),
        _ => Error::unavailable(e.to_string()),
    }
}
