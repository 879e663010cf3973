//! The CRI streaming server: what the kubelet and `crictl` connect to after the CRI `Exec`,
//! `Attach` and `PortForward` RPCs returned a URL (as the kubelet's own streaming server library,
//! which containerd embeds).
//!
//! * [`Server::start`] listens; [`Server::exec_url`], [`Server::attach_url`] and
//!   [`Server::port_forward_url`] validate a CRI request and return a URL with a single-use token
//!   that expires after a minute (`http://ADDR:PORT/exec/<token>`, `/attach/…`, `/portforward/…`).
//! * Protocols: SPDY/3.1 upgrades with remotecommand `v5`/`v4`/`v3`/`v2.channel.k8s.io` and
//!   `channel.k8s.io`, and `portforward.k8s.io`; WebSocket with `v5.channel.k8s.io`,
//!   `v4.channel.k8s.io` (and the `base64.` and pre-v4 variants) for exec/attach, `v4.channel.k8s.io`
//!   channels or SPDY tunnelled in WebSocket (`SPDY/3.1+portforward.k8s.io`) for port forwarding.
//! * The SPDY framing layer ([`spdy`]) is written here: crates.io has no maintained, permissively
//!   licensed SPDY/3.1 implementation. WebSocket is tokio-tungstenite.
//! * The runtime plugs in through [`Backend`].
//! * A session whose connection carries nothing either way for the idle timeout (the kubelet's
//!   and containerd's `stream_idle_timeout`, 4 h by default) is ended as if the client had left.
//! * Not (yet) here: TLS.

pub mod backend;
mod error;
mod idle;
mod pipe;
pub mod portforward;
pub mod remotecommand;
mod server;
pub mod spdy;
mod tokens;
pub mod ws;

pub use backend::{
    Backend, BackendError, CancellationToken, Duplex, Io, Reader, TerminalSize, Writer,
};
pub use error::Error;
pub use idle::Idle;
pub use server::Server;
pub use tokens::TOKEN_TTL;
