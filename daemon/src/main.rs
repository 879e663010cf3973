//! berthd: the berth daemon.

use berth_daemon::config::{Config, DEFAULT_TOML};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth container runtime daemon (containerd v1 API compatible)"
)]
struct Cli {
    /// gRPC socket to serve the API on.
    #[arg(long, value_name = "SOCK")]
    address: Option<PathBuf>,
    /// Directory for persistent data.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Directory for runtime state.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Configuration file (absent = built-in defaults).
    #[arg(long, value_name = "FILE", default_value = "/etc/berth/config.toml")]
    config: PathBuf,
    /// Log level or tracing filter (error, warn, info, debug, trace).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the documented default configuration.
    Default,
}

fn main() -> anyhow::Result<()> {
    // A descriptor berthd inherited without close-on-exec (a shell's, a
    // test harness's flock) must not reach the shims and CNI plugins it
    // starts: a shim outlives berthd and would hold it, and any lock on
    // it, for as long as its container runs.
    // SAFETY: close_range only sets a flag on this process's descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let cli = Cli::parse();
    if let Some(Command::Config {
        what: ConfigCommand::Default,
    }) = cli.command
    {
        print!("{DEFAULT_TOML}");
        return Ok(());
    }
    let mut cfg = Config::load(&cli.config)?;
    if let Some(a) = cli.address {
        cfg.grpc.address = a;
    }
    if let Some(r) = cli.root {
        cfg.root = r;
    }
    if let Some(s) = cli.state {
        cfg.state = s;
    }
    if let Some(l) = cli.log_level {
        cfg.log.level = l;
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", cfg.log.level))?;
    // Colour only for a person at a terminal: log files and the journal
    // get plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(berth_daemon::daemon::run(cfg))
}
