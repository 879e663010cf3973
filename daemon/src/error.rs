//! The daemon's error type: a kind (what clients act on) and a message that
//! says what happened and, where it helps, what to do. Mapped to a gRPC
//! status in exactly one place (`server::status`).

use berth_proto::errdefs::{HasKind, Kind};

/// A daemon error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{msg}")]
pub struct Error {
    kind: Kind,
    msg: String,
}

/// Result alias used throughout the daemon.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of any kind.
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

    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, msg)
    }

    pub fn unimplemented(msg: impl Into<String>) -> Self {
        Self::new(Kind::Unimplemented, msg)
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(Kind::Internal, msg)
    }

    /// The kind of this error.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// True for `NotFound`.
    pub fn is_not_found(&self) -> bool {
        self.kind == Kind::NotFound
    }

    /// True for `AlreadyExists`.
    pub fn is_already_exists(&self) -> bool {
        self.kind == Kind::AlreadyExists
    }

    /// Prefixes the message with context, keeping the kind.
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        Self {
            kind: self.kind,
            msg: format!("{ctx}: {}", self.msg),
        }
    }

    /// The message without the kind.
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl HasKind for Error {
    fn kind(&self) -> Kind {
        self.kind
    }
}

/// Wraps an I/O error with what was being done.
pub fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> Error {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => Kind::NotFound,
        std::io::ErrorKind::AlreadyExists => Kind::AlreadyExists,
        std::io::ErrorKind::PermissionDenied => Kind::PermissionDenied,
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            Kind::InvalidArgument
        }
        _ => Kind::Internal,
    };
    Error::new(kind, format!("{what}: {e}"))
}

macro_rules! internal_from {
    ($($t:ty => $what:literal),* $(,)?) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::internal(format!(concat!($what, ": {}"), e))
            }
        }
    )*};
}

internal_from! {
    redb::Error => "metadata database",
    redb::DatabaseError => "metadata database",
    redb::TransactionError => "metadata transaction",
    redb::TableError => "metadata table",
    redb::StorageError => "metadata storage",
    redb::CommitError => "metadata commit",
    serde_json::Error => "metadata record",
}

impl From<berth_proto::archive::ArchiveError> for Error {
    fn from(e: berth_proto::archive::ArchiveError) -> Self {
        if e.is_not_found() {
            Error::not_found(e.to_string())
        } else {
            Error::invalid(e.to_string())
        }
    }
}

impl From<berth_proto::filters::ParseError> for Error {
    fn from(e: berth_proto::filters::ParseError) -> Self {
        Error::invalid(e.to_string())
    }
}
