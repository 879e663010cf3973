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

/// Says why the daemon's socket at `address` could not be dialled, and what
/// to do: a permission problem is not a missing daemon.
pub fn connect_error(address: &str, e: &berth_proto::client::ConnectError) -> CtlError {
    let path = berth_proto::ttrpc::socket_path(address);
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                PermissionDenied => {
                    return CtlError(format!(
                        "permission denied on {path}: run as root or as a member of the socket's group (berthd's [grpc] gid)"
                    ));
                }
                NotFound | ConnectionRefused => {
                    return CtlError(format!(
                        "no berthd at {path}: is it running? (start it, or set --address or BERTH_ADDRESS to its socket)"
                    ));
                }
                _ => {}
            }
        }
        src = s.source();
    }
    CtlError(format!(
        "{e} (is berthd running? set --address or BERTH_ADDRESS)"
    ))
}

/// An I/O error's reason as the C library words it ("No such file or
/// directory"), without Rust's "(os error 2)".
pub fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// One line for an error and its causes, each gRPC status in words.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let part = if let Some(s) = c.downcast_ref::<tonic::Status>() {
            status_error(s).0
        } else if let Some(io) = c.downcast_ref::<std::io::Error>() {
            io_reason(io)
        } else {
            c.to_string()
        };
        // A context that already quotes its cause says it once.
        if !parts.iter().any(|p| p.contains(&part)) {
            parts.push(part);
        }
    }
    let msg = parts.join(": ");
    msg.lines().next().unwrap_or_default().to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_reasons_in_words() {
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_reason(&e), "No such file or directory");
        let e = std::io::Error::other("custom");
        assert_eq!(io_reason(&e), "custom");
    }

    #[test]
    fn causes_are_kept_in_one_line() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::from(io).context("read missing.json");
        assert_eq!(
            one_line(&e),
            format!(
                "read missing.json: {}",
                std::io::Error::from(std::io::ErrorKind::NotFound)
            )
        );
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        let e = anyhow::Error::from(io).context("read /x");
        assert_eq!(one_line(&e), "read /x: Permission denied");
        let e = anyhow::Error::from(tonic::Status::not_found("image x"));
        assert_eq!(one_line(&e), "image x (not found)");
    }
}
