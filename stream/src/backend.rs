//! The seam between the streaming server and the runtime that runs the processes.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
pub use tokio_util::sync::CancellationToken;

/// A byte source handed to the backend (the client's stdin).
pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
/// A byte sink handed to the backend (the client's stdout or stderr).
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// Terminal size as the client reports it (`{"Width":…,"Height":…}` on the resize stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's standard streams, each present only when the CRI request asked for it.
///
/// `stdin` reaches end-of-file when the client closes its stdin (or the connection ends).
/// Writes to `stdout`/`stderr` fail once the client has gone; the server closes both after the
/// backend call returns, so the backend need not shut them down itself.
pub struct Io {
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    /// Cancelled when the client's connection ends before the call returned (the kubelet's
    /// request context): an exec should then kill its process, as containerd does.
    pub gone: CancellationToken,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .finish()
    }
}

/// A duplex byte stream to a forwarded port.
pub trait Duplex: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Duplex for T {}

/// Boxed error a backend returns; its `Display` is what the client is shown.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// What the runtime (berthd) implements so that the streaming server can serve CRI
/// `Exec`/`Attach`/`PortForward` sessions. Every call runs for as long as the session lasts; the
/// server has already validated the request and set up the client's streams.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Runs `cmd` in container `container_id` (as a new process of the running task) and copies
    /// between it and `io` until the process exits, returning its exit code (128+N for a signal).
    ///
    /// * With `tty`, the process gets a terminal whose output goes to `io.stdout` (`io.stderr` is
    ///   then always `None`); sizes from `resize` are applied to it (the first one may arrive
    ///   before the process starts, and the channel closes when the client stops sending).
    /// * Without `tty`, stdout and stderr are separate pipes; `resize` carries nothing.
    /// * End-of-file on `io.stdin` closes the process's stdin (kubelet's `stdin_once` semantics
    ///   are the backend's concern). The call must return when the process exits even if stdin
    ///   is still open, after the process's output has been copied out.
    /// * When `io.gone` is cancelled the client has disconnected: kill the process and return.
    /// * An `Err` means the process could not be run or waited for (not a non-zero exit); the
    ///   client gets it as an internal error.
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: Io,
        resize: mpsc::Receiver<TerminalSize>,
    ) -> Result<i32, BackendError>;

    /// Attaches `io` to the main process of container `container_id`: output the container
    /// writes from now on goes to `io.stdout`/`io.stderr`, `io.stdin` feeds the container's stdin
    /// (only if the container was created with stdin open). Returns `Ok` when the container exits
    /// or the client's streams end (stdin EOF does not end an attach unless the container was
    /// created with `stdin_once`), or when `io.gone` is cancelled; `tty` and `resize` as for
    /// [`Backend::exec`].
    async fn attach(
        &self,
        container_id: &str,
        tty: bool,
        io: Io,
        resize: mpsc::Receiver<TerminalSize>,
    ) -> Result<(), BackendError>;

    /// Connects to TCP `port` on localhost inside the network namespace of pod sandbox
    /// `pod_sandbox_id` and copies bytes both ways between that connection and `stream` until
    /// both directions are done (end-of-file on `stream` half-closes the TCP connection). `Err`
    /// (e.g. connection refused) is reported to the client on the request's error stream.
    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        stream: Pin<Box<dyn Duplex>>,
    ) -> Result<(), BackendError>;
}
