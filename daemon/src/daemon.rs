//! Starting and stopping a daemon: take the root's and the socket's locks
//! (`instance`), open the stores, bind the sockets, serve until
//! SIGTERM/SIGINT, then remove the sockets it bound.

use crate::config::Config;
use crate::core::Core;
use crate::{instance, server};
use anyhow::Context as _;
use std::os::unix::fs::DirBuilderExt;
use std::time::Duration;

/// Runs berthd with `cfg` until a termination signal arrives.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    // Before anything is opened: a second daemon on the same root or
    // socket would share the metadata or cut the first one's clients off.
    // Held until this function returns.
    let deadline = std::time::Instant::now() + instance::WAIT;
    // 0711 as containerd makes its root; the lock lives inside it.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&cfg.root)
        .with_context(|| format!("create {}", cfg.root.display()))?;
    let _root_lock = instance::lock(
        &cfg.root.join("berthd.lock"),
        &format!("root {}", cfg.root.display()),
        deadline,
    )?;
    let grpc_path = cfg.grpc.address.clone();
    let ttrpc_path = cfg.ttrpc_address();
    if let Some(dir) = grpc_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let _socket_lock = instance::lock(
        &instance::socket_lock_path(&grpc_path),
        &format!("address {}", grpc_path.display()),
        deadline,
    )?;
    for p in [&grpc_path, &ttrpc_path] {
        instance::clear_stale_socket(p, deadline)?;
    }

    let runtimes = crate::runtime::RuntimeConfig {
        shims: cfg
            .runtimes
            .iter()
            .map(|(k, v)| (k.clone(), v.shim.clone()))
            .collect(),
    };
    let core = Core::open_with(
        &cfg.root,
        &cfg.state,
        Duration::from_millis(cfg.gc.schedule_delay_ms),
        &cfg.grpc.address.display().to_string(),
        &cfg.ttrpc_address().display().to_string(),
        crate::core::Settings {
            runtimes,
            registry: cfg.registry.clone(),
            network: cfg.network.clone(),
            logs: cfg.logs,
        },
    )
    .with_context(|| format!("open stores under {}", cfg.root.display()))?;
    // Clean up whatever a crash left half-done (orphaned uploads, blobs).
    core.gc.schedule();

    let gid = (cfg.grpc.gid != 0).then_some(cfg.grpc.gid);
    let grpc = server::bind(&grpc_path, 0o660, gid)
        .with_context(|| format!("listen on {}", grpc_path.display()))?;
    let grpc_bound = instance::Bound::new(&grpc_path);
    let ttrpc = server::bind(&ttrpc_path, 0o660, gid)
        .with_context(|| format!("listen on {}", ttrpc_path.display()))?;
    let ttrpc_bound = instance::Bound::new(&ttrpc_path);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    // Shims publish their events over ttrpc, so it serves first. The API
    // waits until every shim of a previous run is reconnected or cleaned up
    // (as containerd loads its tasks before serving): a client connecting
    // meanwhile is queued on the bound socket instead of being told that a
    // still-running task does not exist.
    let ttrpc_task = tokio::spawn(server::serve_ttrpc(
        core.clone(),
        ttrpc,
        wait(stop_rx.clone()),
    ));
    core.tasks.restore().await;
    core.tasks.watch();
    // After restore: the tasks found stopped exited while berthd was down.
    crate::restart::RestartManager::new(
        core.containers.clone(),
        core.tasks.clone(),
        core.snapshots.clone(),
        core.events.clone(),
    )
    .start();
    // The CRI (if enabled) finds what changed while berthd was down
    // before the kubelet can ask.
    let cri = cfg
        .cri
        .enabled
        .then(|| server::cri_service(&core, cfg.cri.clone()))
        .transpose()
        .context("start the CRI service")?;
    if let Some(c) = &cri {
        c.start_streaming_or_report().await;
        c.reconcile().await;
        // Exits from now on, then those that happened while berthd was down.
        c.start_exit_monitor();
        c.reconcile_containers().await;
    }
    let grpc_task = tokio::spawn(server::serve_grpc(core.clone(), cri, grpc, wait(stop_rx)));
    tracing::info!(
        address = %grpc_path.display(),
        root = %cfg.root.display(),
        state = %cfg.state.display(),
        "berthd ready"
    );
    tokio::spawn(crate::notify::ready_when_serving(
        grpc_path.clone(),
        Duration::from_secs(60),
    ));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        r = grpc_task => {
            let r = r.context("gRPC server task")?;
            r.context("gRPC server")?;
            anyhow::bail!("gRPC server stopped unexpectedly");
        }
    }
    crate::notify::stopping();
    let _ = stop_tx.send(true);
    // Give in-flight requests a moment; long streams (events) are cut.
    let _ = tokio::time::timeout(Duration::from_secs(5), ttrpc_task).await;
    grpc_bound.remove();
    ttrpc_bound.remove();
    tracing::info!("berthd stopped");
    Ok(())
}
