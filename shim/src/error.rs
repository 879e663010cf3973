//! Shim errors: a kind (mapped to a ttrpc status at the service boundary),
//! what was being done, and the error that caused it, kept as the source so
//! the boundary can render the whole chain.

use berth_proto::errdefs::{HasKind, Kind};
use std::sync::Arc;

/// A shim error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{msg}")]
pub struct Error {
    kind: Kind,
    msg: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
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

    /// An I/O failure while doing `what`; the kind follows the error
    /// (the one mapping every berth crate shares).
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        Self {
            kind: Kind::of_io(&e),
            msg: what.to_string(),
            source: Some(Arc::new(e)),
        }
    }

    /// A system call failure while doing `what`.
    pub fn sys(what: impl std::fmt::Display, e: nix::Error) -> Self {
        Self::io(what, std::io::Error::from(e))
    }

    /// Any other failure while doing `what`, with its cause.
    pub fn caused(
        kind: Kind,
        what: impl std::fmt::Display,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            msg: what.to_string(),
            source: Some(Arc::new(e)),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// What was being done, without the causes.
    pub fn message(&self) -> &str {
        &self.msg
    }

    /// The error and its causes as one line (`what: cause: cause`).
    pub fn chain(&self) -> String {
        berth_proto::errdefs::chain(self)
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

/// The one boundary where shim errors become statuses: the message is the
/// whole chain of causes.
impl From<Error> for berth_proto::ttrpc::Status {
    fn from(e: Error) -> Self {
        berth_proto::ttrpc::Status::from_kind(e.kind, e.chain())
    }
}

impl From<berth_mount::Error> for Error {
    fn from(e: berth_mount::Error) -> Self {
        let kind = match &e {
            berth_mount::Error::Sys { errno, .. } => Kind::of_io(&std::io::Error::from(*errno)),
            berth_mount::Error::Invalid(_) => Kind::InvalidArgument,
            berth_mount::Error::Unsupported(_) => Kind::Unimplemented,
            berth_mount::Error::Internal(_) => Kind::Internal,
        };
        // The mount error's text is the whole message: no cause repeats it.
        Self::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_cause_and_kind() {
        let e = Error::io("open /x", std::io::Error::from_raw_os_error(libc::ENOENT))
            .context("create container");
        assert_eq!(e.kind(), Kind::NotFound);
        assert_eq!(e.message(), "create container: open /x");
        assert!(std::error::Error::source(&e).is_some());
        let chain = e.chain();
        assert!(
            chain.starts_with("create container: open /x: No such file"),
            "{chain}"
        );
        let s = berth_proto::ttrpc::Status::from(e);
        assert!(s.message.contains("No such file"), "{}", s.message);
    }

    #[test]
    fn shared_io_kind_mapping() {
        let e = Error::sys("mkdir", nix::Error::EEXIST);
        assert_eq!(e.kind(), Kind::AlreadyExists);
        let e = Error::sys("mount", nix::Error::EPERM);
        assert_eq!(e.kind(), Kind::PermissionDenied);
    }
}
