//! berthctl as a library: argument parsing ([`cli`]), one module per command
//! group, and plain-table / JSON output ([`output`]). Talks to berthd (or any
//! containerd-compatible daemon) over its gRPC API only.
//!
//! Layers, each using only those below it: [`error`] and [`cli`]; then
//! [`output`] and `ctx` (the connection every command gets); then the shared
//! client pieces (`image`: resolving and unpacking, `stdio`: process I/O,
//! `spec` and `spec_more`: the OCI spec, `userdb`: `-u` names, `netinfo`:
//! a container's addresses, `metrics`: a task's cgroup v1 or v2 statistics);
//! then the command groups; then `commands`, the
//! dispatcher, which only this root calls.

mod archive;
pub mod cli;
mod commands;
mod commit;
mod completion;
mod content;
mod cp;
mod ctx;
pub mod error;
mod events;
mod exec;
mod image;
mod images;
mod leases;
mod lifecycle;
mod logs;
mod metrics;
mod namespaces;
mod netinfo;
mod networks;
pub mod output;
mod prune;
mod ps;
mod registry;
mod rootfs;
mod run;
mod run_net;
mod snapshots;
mod spec;
mod spec_more;
mod stdio;
mod tasks;
mod transfer;
mod userdb;
mod volumes;

pub use error::{CtlError, status_error};

use clap::Parser;

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = cli::Cli::parse();
    // Needs no daemon.
    if let cli::Command::Completion { shell } = &cli.command {
        return match completion::print(*shell) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("berthctl: {e}");
                1
            }
        };
    }
    if let cli::Command::Run(r) = &cli.command
        && let Err(e) = run_net::request(r).and_then(|_| r.more.check(r.rm))
    {
        run_net::usage_error(e).exit();
    }
    if let cli::Command::Run(r) = &cli.command
        && let Some(e) = stdio::tty_refusal(
            r.tty,
            r.detach,
            std::io::IsTerminal::is_terminal(&std::io::stdin()),
        )
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
            eprintln!("berthctl: {}", error::one_line(&e));
            1
        }
    }
}
