//! SPDY/3.1, the framing Kubernetes' remotecommand and portforward protocols run on.
//!
//! Hand-written: crates.io has no maintained, permissively licensed SPDY/3.1 implementation
//! (the one SPDY/3.1 multiplexer there is GPL-3.0 and client-only over WebSocket). Only what
//! Kubernetes peers use is here: streams with headers, data, FIN, RST, PING, GOAWAY; SETTINGS and
//! WINDOW_UPDATE are parsed and ignored (see [`session`]).

pub mod dictionary;
pub mod frame;
pub mod session;

pub use frame::{Codec, Frame, FrameError, Headers, header};
pub use session::{Role, Session, SessionError, Stream};
