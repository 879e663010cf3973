//! Snapshotter errors: a kind clients act on and a message that says what
//! to do.

use berth_proto::errdefs::{HasKind, Kind};

/// A snapshotter error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{msg}")]
pub struct Error {
    kind: Kind,
    msg: String,
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Self {
            kind,
            msg: msg.into(),
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

    /// Wraps an I/O failure with what was being done.
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => Kind::NotFound,
            std::io::ErrorKind::AlreadyExists => Kind::AlreadyExists,
            std::io::ErrorKind::PermissionDenied => Kind::PermissionDenied,
            _ => Kind::Internal,
        };
        Self::new(kind, format!("{what}: {e}"))
    }

    /// Wraps a system call failure with what was being done.
    pub fn sys(what: impl std::fmt::Display, e: nix::Error) -> Self {
        Self::io(what, std::io::Error::from(e))
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.msg
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == Kind::NotFound
    }

    /// Prefixes the message, keeping the kind.
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        Self {
            kind: self.kind,
            msg: format!("{ctx}: {}", self.msg),
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
                Error::internal(format!("snapshot metadata: {e}"))
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
