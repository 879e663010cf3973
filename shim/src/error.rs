//! Shim errors: a kind (mapped to a ttrpc status at the service boundary)
//! and a message.

use berth_proto::errdefs::{HasKind, Kind};

/// A shim error.
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

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(Kind::InvalidArgument, msg)
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, msg)
    }

    pub fn precondition(msg: impl Into<String>) -> Self {
        Self::new(Kind::FailedPrecondition, msg)
    }

    pub fn already_exists(msg: impl Into<String>) -> Self {
        Self::new(Kind::AlreadyExists, msg)
    }

    pub fn unimplemented(msg: impl Into<String>) -> Self {
        Self::new(Kind::Unimplemented, msg)
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(Kind::Internal, msg)
    }

    /// An I/O failure with what was being done.
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => Kind::NotFound,
            std::io::ErrorKind::PermissionDenied => Kind::PermissionDenied,
            _ => Kind::Internal,
        };
        Self::new(kind, format!("{what}: {e}"))
    }

    /// A system call failure with what was being done.
    pub fn sys(what: impl std::fmt::Display, e: nix::Error) -> Self {
        Self::io(what, std::io::Error::from(e))
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.msg
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

impl From<Error> for berth_proto::ttrpc::Status {
    fn from(e: Error) -> Self {
        berth_proto::ttrpc::Status::from_kind(e.kind, e.msg)
    }
}

impl From<berth_mount::Error> for Error {
    fn from(e: berth_mount::Error) -> Self {
        match e {
            berth_mount::Error::Sys { what, errno } => Error::sys(what, errno),
            berth_mount::Error::Invalid(m) => Error::invalid(m),
            berth_mount::Error::Unsupported(m) => Error::unimplemented(m),
            berth_mount::Error::Internal(m) => Error::internal(m),
        }
    }
}
