//! The daemon's error type: a kind (what clients act on), a message that
//! says what happened at this level and, where it helps, what to do, and the
//! error that caused it. Display shows this level only; [`Error::chain`]
//! (and the gRPC status built in exactly one place, `server::status`) shows
//! the whole chain, "what: cause: cause".

use berth_proto::errdefs::{self, HasKind, Kind};
use std::sync::Arc;

/// What caused an error; shared so [`Error`] stays `Clone` (the collector
/// hands one result to every waiter).
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// A daemon error.
#[derive(Debug, Clone)]
pub struct Error {
    kind: Kind,
    msg: String,
    source: Option<Source>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

// By hand rather than derived: the source is handed out as the error inside
// the `Arc`, so callers can downcast it (to an `io::Error`, say).
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// Result alias used throughout the daemon.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of any kind.
    pub fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Self {
            kind,
            msg: msg.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`.
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

    /// Wraps this error in one that says what was being done, keeping the
    /// kind; this error becomes the source.
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        Self {
            kind: self.kind,
            msg: ctx.to_string(),
            source: Some(Arc::new(self)),
        }
    }

    /// This level's message, without the kind or the causes.
    pub fn message(&self) -> &str {
        &self.msg
    }

    /// The same error with this level's message replaced; kind and causes
    /// stay.
    pub fn with_message(self, msg: impl Into<String>) -> Self {
        Self {
            msg: msg.into(),
            ..self
        }
    }

    /// The same error with another kind; message and causes stay.
    pub fn with_kind(self, kind: Kind) -> Self {
        Self { kind, ..self }
    }

    /// The message and every cause, `what: cause: cause` (for logs).
    pub fn chain(&self) -> String {
        errdefs::chain(self)
    }
}

impl HasKind for Error {
    fn kind(&self) -> Kind {
        self.kind
    }
}

/// Wraps an I/O error with what was being done; the kind follows the one
/// shared mapping, [`Kind::of_io`].
pub fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::with_source(Kind::of_io(&e), what.to_string(), e)
}

macro_rules! internal_from {
    ($($t:ty => $what:literal),* $(,)?) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::with_source(Kind::Internal, $what, e)
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

#[cfg(test)]
mod tests {
    use super::{Error, io_err};
    use berth_proto::errdefs::{self, Kind};
    use std::error::Error as _;
    use std::io;

    #[test]
    fn io_errors_keep_their_cause_and_take_the_shared_kind() {
        let e = io_err(
            "open /x",
            io::Error::new(io::ErrorKind::NotFound, "no such file"),
        );
        assert_eq!(e.kind(), Kind::NotFound);
        assert_eq!(e.to_string(), "open /x", "Display is this level only");
        let cause = e.source().expect("the io::Error is the source");
        assert!(cause.downcast_ref::<io::Error>().is_some(), "{cause:?}");
        assert_eq!(e.chain(), "open /x: no such file");
        let full = io_err("write", io::Error::new(io::ErrorKind::StorageFull, "full"));
        assert_eq!(
            full.kind(),
            Kind::ResourceExhausted,
            "mapped by Kind::of_io"
        );
    }

    #[test]
    fn context_keeps_the_kind_and_the_whole_chain_through_clones() {
        let inner = io_err("read layer", io::Error::other("disk on fire"));
        let e = inner
            .context("apply layer 0")
            .context("unpack image x")
            .clone();
        assert_eq!(e.kind(), Kind::Internal);
        assert_eq!(e.message(), "unpack image x");
        assert_eq!(
            e.chain(),
            "unpack image x: apply layer 0: read layer: disk on fire"
        );
        // The one status boundary renders the chain, so clients see it all.
        let st = errdefs::to_status(&e);
        assert_eq!(st.message(), e.chain());
        let renamed = e.with_message("unpack image y");
        assert!(renamed.chain().starts_with("unpack image y: apply layer 0"));
    }

    #[test]
    fn metadata_errors_keep_the_decoder_error_as_source() {
        let bad = serde_json::from_slice::<serde_json::Value>(b"{").unwrap_err();
        let e = Error::from(bad);
        assert_eq!(e.kind(), Kind::Internal);
        assert_eq!(e.to_string(), "metadata record");
        assert!(
            e.source()
                .and_then(|s| s.downcast_ref::<serde_json::Error>())
                .is_some()
        );
        assert!(
            e.chain().starts_with("metadata record: EOF"),
            "{}",
            e.chain()
        );
    }
}
