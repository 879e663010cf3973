//! berth-snapshotter: a standalone snapshotter serving containerd's
//! Snapshots API on its own socket, for containerd's `proxy_plugins`.

use anyhow::Context as _;
use berth_snapshotter::Snapshotter;
use berth_snapshotter::native::Native;
use berth_snapshotter::overlay::Overlay;
use berth_snapshotter::proxy::ProxyService;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Type {
    Overlayfs,
    Native,
}

#[derive(Parser)]
#[command(
    name = "berth-snapshotter",
    version,
    about = "berth snapshotter as a containerd proxy plugin"
)]
struct Cli {
    /// Socket to serve the Snapshots API on.
    #[arg(long, value_name = "SOCK")]
    address: PathBuf,
    /// Directory for snapshots and their metadata.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/berth-snapshotter")]
    root: PathBuf,
    /// Which snapshotter to serve.
    #[arg(long = "type", value_enum, default_value_t = Type::Overlayfs)]
    kind: Type,
    /// Log level.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log_level)?)
        .with_writer(std::io::stderr)
        // Plain text for log files and the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let sn: Arc<dyn Snapshotter> = match cli.kind {
        Type::Overlayfs => Arc::new(Overlay::open(&cli.root)?),
        Type::Native => Arc::new(Native::open(&cli.root)?),
    };
    sn.cleanup().context("clean up after a previous run")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = berth_proto::ttrpc::bind(&cli.address)
                .with_context(|| format!("listen on {}", cli.address.display()))?;
            // Only root (containerd) may ask for mounts of the snapshots.
            std::fs::set_permissions(
                &cli.address,
                std::os::unix::fs::PermissionsExt::from_mode(
                    berth_snapshotter::mount::private::OWNER_FILE,
                ),
            )
            .with_context(|| format!("chmod {}", cli.address.display()))?;
            let shutdown = async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("signal handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            };
            tracing::info!(address = %cli.address.display(), root = %cli.root.display(), "serving snapshots");
            tonic::transport::Server::builder()
                .add_service(
                    berth_proto::services::snapshots::v1::snapshots_server::SnapshotsServer::new(
                        ProxyService::new(sn),
                    ),
                )
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    shutdown,
                )
                .await?;
            let _ = std::fs::remove_file(&cli.address);
            Ok(())
        })
}
