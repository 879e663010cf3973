//! berthctl as a library: argument parsing ([`cli`]), one module per command
//! group, and plain-table / JSON output ([`output`]). Talks to berthd (or any
//! containerd-compatible daemon) over its gRPC API only.

mod archive;
pub mod cli;
mod commands;
mod image;
pub mod output;
mod registry;
mod run;
mod snapshots;
mod tasks;
mod transfer;

use clap::Parser;
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

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthctl: start runtime: {e}");
            return 1;
        }
    };
    let out = rt.block_on(commands::run(cli));
    // Do not wait for a blocked stdin reader thread.
    rt.shutdown_background();
    match out {
        Ok(()) => 0,
        Err(e) => {
            if let Some(code) = e.downcast_ref::<run::ExitCode>() {
                return code.0;
            }
            let mut msg = e.to_string();
            if let Some(s) = e.downcast_ref::<tonic::Status>() {
                msg = status_error(s).0;
            }
            eprintln!("berthctl: {}", msg.lines().next().unwrap_or_default());
            1
        }
    }
}
