//! WebSocket plumbing: the channel framing of `*.channel.k8s.io` (first byte = channel number,
//! or an ASCII digit followed by base64 for the `base64.` variants) and a raw byte tunnel for
//! SPDY-over-WebSocket port forwarding.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::idle::Idle;
use crate::pipe::{ChanReader, ChanWriter, Joined};

/// The v5 "close channel" signal: `[255, channel]` half-closes the client's side of `channel`.
pub const CLOSE_CHANNEL: u8 = 255;

/// The server side of an upgraded WebSocket connection (with the idle timeout).
pub type Ws = WebSocketStream<Idle<TokioIo<Upgraded>>>;

/// How a negotiated channel protocol frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub base64: bool,
    /// v5: the client may half-close channels with [`CLOSE_CHANNEL`].
    pub close_signal: bool,
}

impl Framing {
    pub fn of(protocol: &str) -> Self {
        Self {
            base64: protocol.contains("base64."),
            close_signal: protocol.starts_with("v5."),
        }
    }

    fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            s.push(char::from(b'0' + channel));
            B64.encode_string(data, &mut s);
            Message::Text(s.into())
        } else {
            let mut v = Vec::with_capacity(data.len() + 1);
            v.push(channel);
            v.extend_from_slice(data);
            Message::Binary(v.into())
        }
    }

    fn decode(self, msg: Message) -> Option<(u8, Bytes)> {
        let data: Bytes = match msg {
            Message::Binary(b) => b,
            Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
            _ => return None,
        };
        let (&first, rest) = data.split_first()?;
        if !self.base64 {
            return Some((first, data.slice(1..)));
        }
        // The v5 close signal is raw bytes even on base64 protocols.
        let channel = if first == CLOSE_CHANNEL {
            first
        } else {
            first.checked_sub(b'0')?
        };
        if channel == CLOSE_CHANNEL {
            return Some((channel, data.slice(1..)));
        }
        B64.decode(rest).ok().map(|d| (channel, Bytes::from(d)))
    }
}

/// A WebSocket split into a writer task (fed by [`Channels::sender`]) and incoming channel data.
pub struct Channels {
    framing: Framing,
    out: mpsc::Sender<Message>,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
    ended: CancellationToken,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

/// Where incoming data of each channel goes; `None` (or a missing entry) discards it.
pub type Routes = Vec<Option<mpsc::Sender<Bytes>>>;

async fn write_loop<S>(
    mut sink: futures::stream::SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Message>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(m) = rx.recv().await {
        if sink.send(m).await.is_err() {
            return;
        }
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = sink.close().await;
}

impl Channels {
    /// Starts the tasks; incoming channel `n` is routed to `routes[n]`.
    pub fn start(ws: Ws, framing: Framing, mut routes: Routes) -> Self {
        let (sink, mut stream) = ws.split();
        let (out, rx) = mpsc::channel(64);
        let writer = tokio::spawn(write_loop(sink, rx));
        let ended = CancellationToken::new();
        let guard = ended.clone().drop_guard();
        let reader = tokio::spawn(async move {
            let _guard = guard;
            while let Some(Ok(msg)) = stream.next().await {
                if msg.is_close() {
                    break;
                }
                let Some((channel, data)) = framing.decode(msg) else {
                    continue;
                };
                if channel == CLOSE_CHANNEL && framing.close_signal {
                    if let Some(&c) = data.first()
                        && let Some(slot) = routes.get_mut(usize::from(c))
                    {
                        *slot = None;
                    }
                    continue;
                }
                let tx = routes.get(usize::from(channel)).and_then(|r| r.clone());
                if let Some(tx) = tx
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    routes[usize::from(channel)] = None;
                }
            }
            // Connection over: every channel reader sees EOF.
        });
        Self {
            framing,
            out,
            writer,
            reader,
            ended,
        }
    }

    /// Cancelled once the client's side of the connection has ended.
    pub fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }

    /// A writer of channel `n`.
    pub fn writer(&self, channel: u8) -> ChanWriter<Message> {
        let framing = self.framing;
        ChanWriter::new(
            self.out.clone(),
            move |b: &[u8]| framing.encode(channel, b),
            None,
        )
    }

    /// Sends one message on `channel` (an empty one too).
    pub async fn send(&self, channel: u8, data: &[u8]) {
        let _ = self.out.send(self.framing.encode(channel, data)).await;
    }

    /// Closes the WebSocket normally once everything queued is sent (writers still held elsewhere
    /// are cut off after `timeout`).
    pub async fn close(self, timeout: Duration) {
        let Self {
            out,
            writer,
            reader,
            ..
        } = self;
        drop(out);
        let abort = writer.abort_handle();
        if tokio::time::timeout(timeout, writer).await.is_err() {
            abort.abort();
        }
        reader.abort();
    }
}

/// A WebSocket used as a plain byte pipe (binary messages), e.g. to carry SPDY. Either end of a
/// WebSocket can be tunnelled (tests use it as the client).
pub fn tunnel<S>(ws: WebSocketStream<S>) -> Joined<ChanReader, ChanWriter<Message>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let (out, rx) = mpsc::channel(64);
    tokio::spawn(write_loop(sink, rx));
    let (in_tx, in_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                // Bytes clones are reference counts, not copies.
                Message::Binary(b) if in_tx.send(b.clone()).await.is_err() => return,
                Message::Close(_) => return,
                _ => {}
            }
        }
    });
    let writer = ChanWriter::new(
        out,
        |b: &[u8]| Message::Binary(Bytes::copy_from_slice(b)),
        None,
    );
    Joined {
        reader: ChanReader::new(in_rx),
        writer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_framing() {
        let bin = Framing::of("v5.channel.k8s.io");
        assert!(bin.close_signal && !bin.base64);
        let m = bin.encode(1, b"hi");
        assert_eq!(m, Message::Binary(Bytes::from_static(&[1, b'h', b'i'])));
        assert_eq!(bin.decode(m), Some((1, Bytes::from_static(b"hi"))));
        let b64 = Framing::of("v4.base64.channel.k8s.io");
        assert!(b64.base64 && !b64.close_signal);
        let m = b64.encode(2, b"foo\n");
        assert_eq!(m, Message::Text("2Zm9vCg==".into()));
        assert_eq!(b64.decode(m), Some((2, Bytes::from_static(b"foo\n"))));
        assert_eq!(bin.decode(Message::Binary(Bytes::new())), None);
        assert_eq!(b64.decode(Message::Text("0!!".into())), None);
    }
}
