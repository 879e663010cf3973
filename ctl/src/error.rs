//! berthctl's errors: [`CtlError`], a failure printed as one line, and
//! [`ExitCode`], which ends berthctl with a container's exit status. At the
//! bottom of the crate: every module may use it, it uses none of them.

use berth_proto::archive::ArchiveError;
use std::fmt;

/// A command failure, printed as one line.
#[derive(Debug)]
pub struct CtlError(pub String);

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CtlError {}

impl From<ArchiveError> for CtlError {
    fn from(e: ArchiveError) -> Self {
        CtlError(e.to_string())
    }
}

/// Builds a one-line error from a gRPC status: the daemon's message, then
/// the code in words.
pub fn status_error(s: &tonic::Status) -> CtlError {
    let code = match s.code() {
        tonic::Code::NotFound => "not found",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::FailedPrecondition => "failed precondition",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::Unimplemented => "not implemented",
        tonic::Code::OutOfRange => "out of range",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::DeadlineExceeded => "deadline exceeded",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::ResourceExhausted => "resource exhausted",
        tonic::Code::DataLoss => "data loss",
        tonic::Code::Aborted => "aborted",
        tonic::Code::Cancelled => "cancelled",
        tonic::Code::Internal => "internal error",
        _ => "error",
    };
    CtlError(format!("{} ({code})", s.message()))
}

/// Raised to end the process with a container's exit code.
#[derive(Debug)]
pub struct ExitCode(pub i32);

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitCode {}
