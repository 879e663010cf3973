//! What every command runs with: the connection and global flags
//! ([`Ctx`]), and the small argument helpers several command groups share.
//! Depends on nothing above [`crate::cli`], so any command module may use it.

use crate::cli::Format;
use crate::error::CtlError;
use anyhow::Result;
use berth_proto::client::request;
use std::collections::HashMap;
use std::io::IsTerminal;
use tonic::transport::Channel;

pub(crate) struct Ctx {
    pub ch: Channel,
    pub ns: String,
    pub format: Format,
    /// Named in every snapshot, container and unpack request.
    pub snapshotter: String,
}

impl Ctx {
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        request(&self.ns, msg)
    }
}

/// Parses `key=value` arguments; `key=` (or bare `key`) means "remove".
pub(crate) fn parse_labels(args: &[String]) -> HashMap<String, String> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (a.clone(), String::new()),
        })
        .collect()
}

/// The field mask that updates exactly these labels.
pub(crate) fn label_mask(l: &HashMap<String, String>) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: l.keys().map(|k| format!("labels.{k}")).collect(),
    }
}

/// Parses `--label key=value` arguments (refusing a bare `key`).
pub(crate) fn parse_kv_labels(args: &[String]) -> Result<HashMap<String, String>> {
    args.iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| CtlError(format!("label {l:?} must be key=value")).into())
        })
        .collect()
}

/// Is stdout a terminal (for progress bars)?
pub(crate) fn interactive() -> bool {
    std::io::stdout().is_terminal()
}
