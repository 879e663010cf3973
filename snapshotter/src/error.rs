//! Snapshotter errors: a kind clients act on, a message that says what was
//! being done, and the cause underneath, kept as the error's `source`. The
//! gRPC boundary ([`crate::proxy::status`]) renders the whole chain with
//! [`errdefs::chain`], as does [`Error::message`].

use berth_proto::errdefs::{self, HasKind, Kind};
use std::sync::Arc;

/// The cause under a snapshotter error; shared so errors stay `Clone`.
type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// A snapshotter error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{msg}")]
pub struct Error {
    kind: Kind,
    msg: String,
    #[source]
    source: Option<Cause>,
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Self {
            kind,
            msg: msg.into(),
            source: None,
        }
    }

    /// An error of `kind` saying what was being done, caused by `source`.
    pub fn with_source(
        kind: Kind,
        msg: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            msg: msg.into(),
            source: Some(Arc::new(source)),
        }
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, msg)
    }

    pub fn already_exists(msg: impl Into<String>) -> Self {
        Self::new(Kind::AlreadyExists, msg)
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(Kind::InvalidArgument, msg)
    }

    pub fn precondition(msg: impl Into<String>) -> Self {
        Self::new(Kind::FailedPrecondition, msg)
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(Kind::Internal, msg)
    }

    /// Wraps an I/O failure with what was being done; the kind is the one
    /// every berth crate gives that I/O error ([`Kind::of_io`]).
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        Self::with_source(Kind::of_io(&e), what.to_string(), e)
    }

    /// Wraps a system call failure with what was being done.
    pub fn sys(what: impl std::fmt::Display, e: nix::Error) -> Self {
        Self::io(what, std::io::Error::from(e))
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The message with its causes, `what: cause: …`, as clients see it.
    pub fn message(&self) -> String {
        errdefs::chain(self)
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == Kind::NotFound
    }

    /// Prefixes the message, keeping the kind and the cause.
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        Self {
            msg: format!("{ctx}: {}", self.msg),
            ..self
        }
    }
}

impl HasKind for Error {
    fn kind(&self) -> Kind {
        self.kind
    }
}

macro_rules! internal_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::with_source(Kind::Internal, "snapshot metadata", e)
            }
        }
    )*};
}

internal_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

impl From<berth_proto::filters::ParseError> for Error {
    fn from(e: berth_proto::filters::ParseError) -> Self {
        Error::invalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_is_kept_and_rendered_once() {
        let e = Error::io(
            "stat /x",
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(e.kind(), Kind::NotFound);
        assert_eq!(e.to_string(), "stat /x");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(e.message(), "stat /x: gone");
        let e = e.context("prepare \"k\"");
        assert_eq!(e.message(), "prepare \"k\": stat /x: gone");
        assert_eq!(
            berth_proto::errdefs::to_status(&e).message(),
            "prepare \"k\": stat /x: gone"
        );
        // The shared mapping: a full disk is out of resources, not internal.
        let full = Error::io(
            "write",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert_eq!(full.kind(), Kind::ResourceExhausted);
    }
}
