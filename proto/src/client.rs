//! Client-side helpers: dialling the daemon's unix socket and attaching the
//! namespace (and lease) headers to requests.

use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint};

/// A connection failure, naming the socket.
#[derive(Debug, thiserror::Error)]
#[error("connect to {path}: {source}")]
pub struct ConnectError {
    path: PathBuf,
    source: tonic::transport::Error,
}

/// Dials the gRPC API on a unix socket (`unix://` prefix optional).
pub async fn connect(address: &str) -> Result<Channel, ConnectError> {
    let path: PathBuf = Path::new(crate::ttrpc::socket_path(address)).to_path_buf();
    let p = path.clone();
    // The URI is a placeholder: the connector always dials the socket.
    Endpoint::from_static("http://berth.sock")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                let s = tokio::net::UnixStream::connect(p).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .map_err(|source| ConnectError { path, source })
}

/// Wraps `msg` in a request carrying the namespace header.
pub fn request<T>(ns: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = ns.parse() {
        r.metadata_mut()
            .insert(crate::metadata::NAMESPACE_HEADER, v);
    }
    r
}

/// Adds the lease header to a request.
pub fn with_lease<T>(mut r: tonic::Request<T>, lease: &str) -> tonic::Request<T> {
    if let Ok(v) = lease.parse() {
        r.metadata_mut().insert(crate::metadata::LEASE_HEADER, v);
    }
    r
}
