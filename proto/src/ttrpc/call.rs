//! What one ttrpc call carries besides its payload: the [`Context`]
//! (metadata, deadline) and, when it fails, the [`Status`] that travels as
//! `google.rpc.Status`; plus decoding a payload into a message.

use crate::errdefs::{HasKind, Kind};
use crate::metadata::NAMESPACE_TTRPC_HEADER;
use crate::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use std::time::Duration;
use tonic::Code;

/// The outcome of a failed call, carried as `google.rpc.Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    /// A status with the given code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The answer for a method this server does not implement.
    pub fn unimplemented(method: &str) -> Self {
        Self::new(Code::Unimplemented, format!("{method} is not implemented"))
    }

    /// A status from an error kind.
    pub fn from_kind(kind: Kind, message: impl Into<String>) -> Self {
        Self::new(kind.code(), message)
    }

    /// The error kind of this status.
    pub fn kind(&self) -> Kind {
        Kind::from_code(self.code)
    }

    pub(super) fn to_proto(&self) -> RpcStatus {
        RpcStatus {
            code: self.code as i32,
            message: self.message.clone(),
            details: vec![],
        }
    }

    pub(super) fn from_proto(s: &RpcStatus) -> Option<Self> {
        let code = Code::from_i32(s.code);
        (code != Code::Ok).then(|| Self::new(code, s.message.clone()))
    }
}

impl HasKind for Status {
    fn kind(&self) -> Kind {
        Status::kind(self)
    }
}

impl From<Status> for tonic::Status {
    fn from(s: Status) -> Self {
        tonic::Status::new(s.code, s.message)
    }
}

/// Per-call metadata and deadline.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub metadata: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

impl Context {
    /// A context carrying the namespace header shims and daemons expect.
    pub fn with_namespace(ns: &str) -> Self {
        Self {
            metadata: vec![(NAMESPACE_TTRPC_HEADER.to_string(), ns.to_string())],
            timeout: None,
        }
    }

    /// The first value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Sets a deadline for the call.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
}

/// Decodes a request payload, answering `InvalidArgument` on bad bytes.
pub fn decode<M: Message + Default>(payload: &[u8]) -> Result<M, Status> {
    M::decode(payload).map_err(|e| Status::new(Code::InvalidArgument, format!("decode: {e}")))
}
