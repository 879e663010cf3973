//! berthctl as a library: argument parsing ([`cli`]), one module per command
//! group, and plain-table / JSON output ([`output`]). Talks to berthd (or any
//! containerd-compatible daemon) over its gRPC API only.
//!
//! Layers, each using only those below it: [`error`] and [`cli`]; then
//! [`output`] and `ctx` (the connection every command gets); then the shared
//! client pieces (`image`: resolving and unpacking, `stdio`: process I/O,
//! `spec`: the OCI spec, `metrics`: a task's cgroup v1 or v2 statistics);
//! then the command groups; then `commands`, the
//! dispatcher, which only this root calls.

mod archive;
pub mod cli;
mod commands;
mod content;
mod ctx;
pub mod error;
mod events;
mod image;
mod images;
mod leases;
mod logs;
mod metrics;
mod namespaces;
mod networks;
pub mod output;
mod registry;
mod run;
mod run_net;
mod snapshots;
mod spec;
mod stdio;
mod tasks;
mod transfer;
mod volumes;

pub use error::{CtlError, status_error};

use clap::Parser;

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = cli::Cli::parse();
    if let cli::Command::Run(r) = &cli.command
        && let Err(e) = run_net::request(r)
    {
        run_net::usage_error(e).exit();
    }
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
            if let Some(code) = e.downcast_ref::<error::ExitCode>() {
                return code.0;
            }
            let mut msg = e.to_string();
            if let Some(s) = e.downcast_ref::<tonic::Status>() {
                msg = error::status_error(s).0;
            }
            eprintln!("berthctl: {}", msg.lines().next().unwrap_or_default());
            1
        }
    }
}
