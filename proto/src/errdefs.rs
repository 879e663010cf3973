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

/// Converts any library error into a gRPC status (the service boundary).
pub fn to_status<E: HasKind + std::fmt::Display>(err: &E) -> tonic::Status {
    status(err.kind(), err.to_string())
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
}
