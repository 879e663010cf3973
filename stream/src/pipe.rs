//! Channel-backed `AsyncRead`/`AsyncWrite` ends shared by the SPDY and WebSocket transports.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Largest chunk one write turns into (one SPDY DATA frame or one WebSocket message).
pub const CHUNK: usize = 32 * 1024;

/// Reads the chunks a transport delivers; end-of-file when the sender is dropped.
#[derive(Debug)]
pub struct ChanReader {
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
}

impl ChanReader {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx,
            pending: Bytes::new(),
        }
    }
}

impl AsyncRead for ChanReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(self.rx.poll_recv(cx)) {
                Some(b) => self.pending = b,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

type Wrap<T> = Box<dyn Fn(&[u8]) -> T + Send + Sync>;

/// Turns bytes into transport items (`wrap`) and queues them; `close` is queued on shutdown.
pub struct ChanWriter<T: Send + 'static> {
    tx: PollSender<T>,
    wrap: Wrap<T>,
    close: Option<T>,
}

impl<T: Send + 'static> std::fmt::Debug for ChanWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChanWriter").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> ChanWriter<T> {
    pub fn new(
        tx: mpsc::Sender<T>,
        wrap: impl Fn(&[u8]) -> T + Send + Sync + 'static,
        close: Option<T>,
    ) -> Self {
        Self {
            tx: PollSender::new(tx),
            wrap: Box::new(wrap),
            close,
        }
    }

    /// Queues the close item now (used when the writer is dropped without a shutdown); if the
    /// queue is full it is sent from a task so that the peer still sees the end.
    pub fn close_now(&mut self) {
        if let (Some(item), Some(tx)) = (self.close.take(), self.tx.get_ref())
            && let Err(mpsc::error::TrySendError::Full(item)) = tx.try_send(item)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let tx = tx.clone();
            rt.spawn(async move {
                let _ = tx.send(item).await;
            });
        }
    }

    /// Drops the close item: the stream ends some other way (a reset).
    pub fn forget_close(&mut self) {
        self.close = None;
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "stream closed")
}

impl<T: Send + 'static> Drop for ChanWriter<T> {
    fn drop(&mut self) {
        self.close_now();
    }
}

impl<T: Send + Unpin + 'static> AsyncWrite for ChanWriter<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(this.tx.poll_reserve(cx)).map_err(|_| gone())?;
        let n = data.len().min(CHUNK);
        let item = (this.wrap)(&data[..n]);
        this.tx.send_item(item).map_err(|_| gone())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.close.is_none() {
            return Poll::Ready(Ok(()));
        }
        ready!(this.tx.poll_reserve(cx)).map_err(|_| gone())?;
        if let Some(item) = this.close.take() {
            this.tx.send_item(item).map_err(|_| gone())?;
        }
        Poll::Ready(Ok(()))
    }
}

/// A reader and a writer joined into one duplex stream.
#[derive(Debug)]
pub struct Joined<R, W> {
    pub reader: R,
    pub writer: W,
}

impl<R: AsyncRead + Unpin, W: Unpin> AsyncRead for Joined<R, W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for Joined<R, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}
