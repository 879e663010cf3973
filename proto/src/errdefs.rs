//! Error kinds shared by every berth component and their one mapping to and
//! from gRPC status codes. Library errors expose a [`Kind`]; the service
//! boundary turns it into a `tonic::Status` with [`status`].

use tonic::Code;

/// What went wrong, in the vocabulary containerd clients act on
/// (`ctr` maps codes back to these, e.g. to retry on `Unavailable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Unknown,
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unavailable,
    Unimplemented,
    Internal,
    OutOfRange,
    DataLoss,
    Aborted,
    Canceled,
    DeadlineExceeded,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
}

impl Kind {
    /// The gRPC code for this kind.
    pub fn code(self) -> Code {
        match self {
            Kind::Unknown => Code::Unknown,
            Kind::InvalidArgument => Code::InvalidArgument,
            Kind::NotFound => Code::NotFound,
            Kind::AlreadyExists => Code::AlreadyExists,
            Kind::FailedPrecondition => Code::FailedPrecondition,
            Kind::Unavailable => Code::Unavailable,
            Kind::Unimplemented => Code::Unimplemented,
            Kind::Internal => Code::Internal,
            Kind::OutOfRange => Code::OutOfRange,
            Kind::DataLoss => Code::DataLoss,
            Kind::Aborted => Code::Aborted,
            Kind::Canceled => Code::Cancelled,
            Kind::DeadlineExceeded => Code::DeadlineExceeded,
            Kind::PermissionDenied => Code::PermissionDenied,
            Kind::ResourceExhausted => Code::ResourceExhausted,
            Kind::Unauthenticated => Code::Unauthenticated,
        }
    }

    /// The kind a gRPC code stands for (`Ok` has none and maps to `Unknown`).
    pub fn from_code(code: Code) -> Kind {
        match code {
            Code::InvalidArgument => Kind::InvalidArgument,
            Code::NotFound => Kind::NotFound,
            Code::AlreadyExists => Kind::AlreadyExists,
            Code::FailedPrecondition => Kind::FailedPrecondition,
            Code::Unavailable => Kind::Unavailable,
            Code::Unimplemented => Kind::Unimplemented,
            Code::Internal => Kind::Internal,
            Code::OutOfRange => Kind::OutOfRange,
            Code::DataLoss => Kind::DataLoss,
            Code::Aborted => Kind::Aborted,
            Code::Cancelled => Kind::Canceled,
            Code::DeadlineExceeded => Kind::DeadlineExceeded,
            Code::PermissionDenied => Kind::PermissionDenied,
            Code::ResourceExhausted => Kind::ResourceExhausted,
            Code::Unauthenticated => Kind::Unauthenticated,
            _ => Kind::Unknown,
        }
    }

    /// The kind an I/O error stands for. Every berth crate maps I/O errors
    /// here, so one failure gets the same code from the daemon, the shim
    /// and the snapshotter.
    pub fn of_io(e: &std::io::Error) -> Kind {
        use std::io::ErrorKind as E;
        match e.kind() {
            E::NotFound => Kind::NotFound,
            E::AlreadyExists => Kind::AlreadyExists,
            E::PermissionDenied => Kind::PermissionDenied,
            E::InvalidInput | E::InvalidData | E::UnexpectedEof => Kind::InvalidArgument,
            E::Unsupported => Kind::Unimplemented,
            E::TimedOut => Kind::DeadlineExceeded,
            E::Interrupted => Kind::Canceled,
            E::StorageFull | E::QuotaExceeded => Kind::ResourceExhausted,
            _ => Kind::Internal,
        }
    }
}

/// An error and its causes as one line, `what: cause: cause`, the way a
/// client should read it. A cause whose text the previous level already
/// ends with is not repeated (errors that format their source themselves).
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

/// Implemented by every library error type so the boundary can map it.
pub trait HasKind {
    /// The kind of this error.
    fn kind(&self) -> Kind;
}

/// Builds the gRPC status for an error of the given kind.
pub fn status(kind: Kind, message: impl Into<String>) -> tonic::Status {
    tonic::Status::new(kind.code(), message)
}

/// Converts any library error into a gRPC status (the service boundary);
/// the message carries the whole [`chain`] of causes.
pub fn to_status<E: HasKind + std::error::Error + 'static>(err: &E) -> tonic::Status {
    status(err.kind(), chain(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        let all = [
            Kind::Unknown,
            Kind::InvalidArgument,
            Kind::NotFound,
            Kind::AlreadyExists,
            Kind::FailedPrecondition,
            Kind::Unavailable,
            Kind::Unimplemented,
            Kind::Internal,
            Kind::OutOfRange,
            Kind::DataLoss,
            Kind::Aborted,
            Kind::Canceled,
            Kind::DeadlineExceeded,
            Kind::PermissionDenied,
            Kind::ResourceExhausted,
            Kind::Unauthenticated,
        ];
        for k in all {
            assert_eq!(Kind::from_code(k.code()), k);
        }
        assert_eq!(Kind::from_code(Code::Ok), Kind::Unknown);
    }

    #[test]
    fn io_kinds() {
        use std::io::{Error, ErrorKind as E};
        for (io, k) in [
            (E::NotFound, Kind::NotFound),
            (E::AlreadyExists, Kind::AlreadyExists),
            (E::PermissionDenied, Kind::PermissionDenied),
            (E::InvalidData, Kind::InvalidArgument),
            (E::UnexpectedEof, Kind::InvalidArgument),
            (E::StorageFull, Kind::ResourceExhausted),
            (E::BrokenPipe, Kind::Internal),
        ] {
            assert_eq!(Kind::of_io(&Error::from(io)), k, "{io:?}");
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{msg}")]
    struct Wrap {
        msg: String,
        #[source]
        source: Option<std::io::Error>,
    }

    #[test]
    fn chain_joins_causes_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let kept = Wrap {
            msg: "open config.json".into(),
            source: Some(io()),
        };
        assert_eq!(chain(&kept), "open config.json: no such file");
        // An error that already printed its cause does not get it twice.
        let printed = Wrap {
            msg: "open config.json: no such file".into(),
            source: Some(io()),
        };
        assert_eq!(chain(&printed), "open config.json: no such file");
        let bare = Wrap {
            msg: "plain".into(),
            source: None,
        };
        assert_eq!(chain(&bare), "plain");
        assert_eq!(
            to_status(&BareKind(kept)).message(),
            "open config.json: no such file"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct BareKind(Wrap);

    impl HasKind for BareKind {
        fn kind(&self) -> Kind {
            Kind::NotFound
        }
    }
}
