//! What a transfer is asked with: credentials, resolver options, and where
//! progress goes.

use crate::error::Result;
use crate::types::Descriptor;
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;

/// Where credentials come from: the client that asked for the transfer.
///
/// Contract: `get` returns the username and secret to use for `host`, or
/// `None` to go anonymous; it is called at most once per transfer and
/// host, before the first request. Implementations must not log secrets.
pub trait Credentials: Send + Sync {
    fn get<'a>(
        &'a self,
        host: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<(String, String)>>>;
}

/// How to reach the registry, as the client asked (containerd's
/// `RegistryResolver`).
#[derive(Debug, Clone, Default)]
pub struct ResolverOptions {
    /// Talk plain HTTP (`default_scheme = "http"`, ctr's `--plain-http`).
    pub plain_http: bool,
    /// A hosts directory (hosts.toml or certs.d layout) overriding the
    /// configured one.
    pub host_dir: Option<PathBuf>,
}

/// One progress report of a transfer.
#[derive(Debug, Clone, Default)]
pub struct ProgressEvent {
    pub event: String,
    pub name: String,
    pub parents: Vec<String>,
    pub progress: i64,
    pub total: i64,
    pub desc: Option<Descriptor>,
}

impl ProgressEvent {
    pub fn new(event: &str, name: &str) -> Self {
        Self {
            event: event.to_string(),
            name: name.to_string(),
            ..Default::default()
        }
    }
}

/// Receives progress; must not block.
pub type ProgressFn = Arc<dyn Fn(ProgressEvent) + Send + Sync>;
