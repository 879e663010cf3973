//! Port forwarding (`portforward.k8s.io`).
//!
//! SPDY (also tunnelled in a WebSocket whose subprotocol is `SPDY/3.1+portforward.k8s.io`, as
//! client-go's WebSocket port-forward does): each forwarded connection is a pair of streams with
//! the same `requestID` header, `streamType` `data` and `error`, and a `port` header; failures are
//! written as text to the error stream. WebSocket channels (`v4.channel.k8s.io`): for the n-th port
//! of the CRI request, channel 2n carries data both ways and 2n+1 errors; the server first sends
//! the port (u16 little endian) on both.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::backend::{Backend, Duplex};
use crate::pipe::{ChanReader, Joined};
use crate::remotecommand::STREAM_CREATION_TIMEOUT;
use crate::spdy::{Session, Stream, frame::header, frame::rst};
use crate::ws::{Channels, Framing, Routes, Ws};

/// The port-forward protocol over SPDY.
pub const SPDY_PROTOCOLS: [&str; 1] = ["portforward.k8s.io"];
/// Prefix of WebSocket subprotocols that tunnel SPDY.
pub const TUNNEL_PREFIX: &str = "SPDY/3.1+";
/// Channel-framed WebSocket subprotocols accepted ("" = the client named none).
pub const WS_PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];

#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
}

fn parse_port(s: Option<&str>) -> Result<u16, String> {
    let s = s.ok_or("\"port\" header is required")?;
    match s.parse::<u16>() {
        Ok(0) => Err(format!("port {s:?} must be > 0")),
        Ok(p) => Ok(p),
        Err(e) => Err(format!("unable to parse {s:?} as a port: {e}")),
    }
}

async fn forward(backend: Arc<dyn Backend>, sandbox: String, pair: Pair) {
    let (Some(data), Some(mut error)) = (pair.data, pair.error) else {
        return;
    };
    let port = parse_port(header(data.headers(), "port")).unwrap_or(0);
    let result = backend
        .port_forward(&sandbox, port, Box::pin(data) as Pin<Box<dyn Duplex>>)
        .await;
    if let Err(e) = result {
        let msg = format!("error forwarding port {port} to pod {sandbox}: {e}");
        tracing::debug!("{msg}");
        let _ = error.write_all(msg.as_bytes()).await;
    }
    let _ = error.shutdown().await;
}

/// Serves port-forward requests on a SPDY session until the client closes it.
pub async fn serve_spdy(session: Session, sandbox: String, backend: Arc<dyn Backend>) {
    let mut pairs: HashMap<String, (Pair, tokio::time::Instant)> = HashMap::new();
    while let Some(s) = session.accept().await {
        let kind = header(s.headers(), "streamtype").map(str::to_string);
        let port = parse_port(header(s.headers(), "port"));
        let valid = matches!(kind.as_deref(), Some("data" | "error")) && port.is_ok();
        if !valid || s.reply().await.is_err() {
            tracing::debug!(?kind, ?port, "refusing port-forward stream");
            s.reset(rst::PROTOCOL_ERROR).await;
            continue;
        }
        // Clients without requestID: pair by stream id (error n, data n+2), as the kubelet does.
        let id = match header(s.headers(), "requestid") {
            Some(r) if !r.is_empty() => r.to_string(),
            _ if kind.as_deref() == Some("error") => s.id().to_string(),
            _ => s.id().saturating_sub(2).to_string(),
        };
        let now = tokio::time::Instant::now();
        pairs.retain(|_, (_, t)| now.duration_since(*t) < STREAM_CREATION_TIMEOUT);
        let (pair, _) = pairs
            .entry(id.clone())
            .or_insert_with(|| (Pair::default(), now));
        let slot = if kind.as_deref() == Some("data") {
            &mut pair.data
        } else {
            &mut pair.error
        };
        if slot.is_some() {
            let mut dup = s;
            if let Some(err) = pair.error.as_mut() {
                let msg = format!(
                    "error processing stream for request {id}: duplicate {} stream",
                    kind.unwrap_or_default()
                );
                let _ = err.write_all(msg.as_bytes()).await;
            }
            let _ = dup.shutdown().await;
            continue;
        }
        *slot = Some(s);
        if pair.data.is_some()
            && pair.error.is_some()
            && let Some((pair, _)) = pairs.remove(&id)
        {
            tokio::spawn(forward(backend.clone(), sandbox.clone(), pair));
        }
    }
    session.shutdown(Duration::from_secs(1)).await;
}

/// Serves a channel-framed WebSocket port forward of `ports` (from the CRI request).
pub async fn serve_ws(
    ws: Ws,
    protocol: &str,
    ports: Vec<u16>,
    sandbox: String,
    backend: Arc<dyn Backend>,
) {
    let framing = Framing::of(protocol);
    let mut routes: Routes = Vec::new();
    let mut readers = Vec::new();
    for _ in &ports {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        routes.push(Some(tx));
        routes.push(None);
        readers.push(rx);
    }
    let ch = Channels::start(ws, framing, routes);
    let mut tasks = Vec::new();
    for (i, (port, rx)) in ports.iter().zip(readers).enumerate() {
        let (data_ch, err_ch) = (channel(2 * i), channel(2 * i + 1));
        ch.send(data_ch, &port.to_le_bytes()).await;
        ch.send(err_ch, &port.to_le_bytes()).await;
        let duplex = Joined {
            reader: ChanReader::new(rx),
            writer: ch.writer(data_ch),
        };
        let mut err = ch.writer(err_ch);
        let (backend, sandbox, port) = (backend.clone(), sandbox.clone(), *port);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = backend.port_forward(&sandbox, port, Box::pin(duplex)).await {
                let msg = format!("error forwarding port {port} to pod {sandbox}: {e}");
                let _ = err.write_all(msg.as_bytes()).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    ch.close(Duration::from_secs(5)).await;
}

fn channel(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}
