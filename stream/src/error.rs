//! The error type of the streaming server's API.

/// Errors of the streaming server's API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CRI request is invalid (gRPC `InvalidArgument`).
    #[error("{0}")]
    InvalidArgument(String),
    /// Too many URLs are pending (gRPC `ResourceExhausted`).
    #[error("too many pending streaming requests")]
    TooManyPending,
    #[error("cannot listen on {addr} port {port}")]
    Bind {
        addr: std::net::IpAddr,
        port: u16,
        #[source]
        source: std::io::Error,
    },
}
