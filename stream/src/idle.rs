//! The kubelet's stream idle timeout: a session whose connection carries no
//! bytes either way for the timeout is ended, as if the client had left
//! (so an exec it started is killed). [`Idle`] wraps the upgraded
//! connection; its reads fail with `TimedOut` once the connection has been
//! idle that long, which ends the session's read loop like a hang-up.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A connection that fails reads after `timeout` without traffic.
pub struct Idle<T> {
    inner: T,
    timeout: Duration,
    last: Instant,
    /// None: no timeout.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Idle<T> {
    /// Wraps `inner`; the idle time starts now. A zero `timeout` is none.
    pub fn new(inner: T, timeout: Duration) -> Self {
        let last = Instant::now();
        Self {
            inner,
            timeout,
            last,
            timer: (!timeout.is_zero()).then(|| Box::pin(tokio::time::sleep_until(last + timeout))),
        }
    }

    fn touch(&mut self) {
        self.last = Instant::now();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                // Writes may have moved `last` since the timer was set: it
                // fires only when `last + timeout` has really passed.
                let Some(timer) = this.timer.as_mut() else {
                    return Poll::Pending;
                };
                let deadline = this.last + this.timeout;
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("stream idle for {:?}", this.timeout),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn reads_fail_after_the_timeout_without_traffic_either_way() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut idle = Idle::new(a, Duration::from_secs(10));
        let mut buf = [0u8; 8];
        // Traffic in both directions keeps it open past the timeout.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            b.write_all(b"x").await.unwrap();
            assert_eq!(idle.read(&mut buf).await.unwrap(), 1);
            tokio::time::sleep(Duration::from_secs(6)).await;
            idle.write_all(b"y").await.unwrap();
        }
        // Measured from the last write: 6 s before the read begins.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let t0 = Instant::now();
        let e = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(t0.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_timeout_is_none() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut idle = Idle::new(a, Duration::ZERO);
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            idle.read(&mut buf).await
        });
        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
        b.write_all(b"late").await.unwrap();
        assert_eq!(read.await.unwrap().unwrap(), 4);
    }
}
