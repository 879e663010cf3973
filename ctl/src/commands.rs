//! The command dispatcher: dials the daemon and hands each command group to
//! its module; the one-call commands (`version`, `plugins ls`) live here.

use crate::cli::{Cli, Command, Format, Plugins, System};
use crate::ctx::Ctx;
use crate::output::Table;
use anyhow::Result;
use berth_proto::services::introspection::v1 as introspection;
use berth_proto::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_proto::services::version::v1::version_client::VersionClient;
use serde_json::json;

/// Dials the daemon and runs one command.
pub async fn run(cli: Cli) -> Result<()> {
    let ch = berth_proto::client::connect(&cli.address)
        .await
        .map_err(|e| crate::error::connect_error(&cli.address, &e))?;
    let ctx = Ctx {
        ch,
        ns: cli.namespace.clone(),
        format: cli.format,
        snapshotter: cli.snapshotter.clone(),
    };
    match cli.command {
        Command::Version => version(&ctx).await,
        Command::Namespaces(c) => crate::namespaces::run(&ctx, c).await,
        Command::Content(c) => crate::content::run(&ctx, c).await,
        Command::Images(c) => crate::images::run(&ctx, c).await,
        Command::Leases(c) => crate::leases::run(&ctx, c).await,
        Command::Snapshots(a) => crate::snapshots::run(&ctx, a).await,
        Command::Run(a) => crate::run::run(&ctx, a).await,
        Command::Containers(c) => crate::tasks::containers(&ctx, c).await,
        Command::Tasks(t) => crate::tasks::tasks(&ctx, t).await,
        Command::Events(a) => crate::events::run(&ctx, a).await,
        Command::Volume(c) => crate::volumes::run(&ctx, c).await,
        Command::Plugins(Plugins::Ls { filters }) => plugins(&ctx, filters).await,
        Command::Network(c) => crate::networks::run(&ctx, c).await,
        Command::Logs(a) => crate::logs::run(&ctx, a).await,
        c @ (Command::Ps(_) | Command::Inspect(_)) => crate::ps::run(&ctx, c).await,
        c @ (Command::Exec(_) | Command::Top(_) | Command::Stats(_)) => {
            crate::exec::run(&ctx, c).await
        }
        c @ (Command::Stop(_)
        | Command::Start(_)
        | Command::Restart(_)
        | Command::Kill(_)
        | Command::Rm(_)
        | Command::Wait(_)) => crate::lifecycle::run(&ctx, c).await,
        Command::Cp(a) => crate::cp::run(&ctx, a).await,
        Command::Commit(a) => crate::commit::run(&ctx, a).await,
        Command::System(System::Df) => crate::prune::df(&ctx).await,
        Command::System(System::Prune {
            all,
            force,
            volumes,
        }) => crate::prune::system_prune(&ctx, all, force, volumes).await,
        Command::Completion { shell } => crate::completion::print(shell),
    }
}

async fn version(ctx: &Ctx) -> Result<()> {
    let v = VersionClient::new(ctx.ch.clone())
        .version(())
        .await?
        .into_inner();
    if ctx.format == Format::Json {
        println!(
            "{}",
            json!({"client": {"version": env!("CARGO_PKG_VERSION")},
                   "server": {"version": v.version, "revision": v.revision}})
        );
    } else {
        println!("Client:\n  Version:  {}", env!("CARGO_PKG_VERSION"));
        println!(
            "\nServer:\n  Version:  {}\n  Revision: {}",
            v.version, v.revision
        );
    }
    Ok(())
}

async fn plugins(ctx: &Ctx, filters: Vec<String>) -> Result<()> {
    let list = IntrospectionClient::new(ctx.ch.clone())
        .plugins(introspection::PluginsRequest { filters })
        .await?
        .into_inner()
        .plugins;
    let mut t = Table::new(&["TYPE", "ID", "PLATFORMS", "STATUS"]);
    for p in list {
        let platforms: Vec<String> = p
            .platforms
            .iter()
            .map(|x| format!("{}/{}", x.os, x.architecture))
            .collect();
        let status = match &p.init_err {
            Some(e) => format!("error: {}", e.message),
            None => "ok".into(),
        };
        let shown = if platforms.is_empty() {
            "-".into()
        } else {
            platforms.join(",")
        };
        t.row(
            vec![p.r#type.clone(), p.id.clone(), shown, status.clone()],
            json!({"type": p.r#type, "id": p.id, "platforms": platforms, "status": status,
                   "capabilities": p.capabilities, "exports": p.exports}),
        );
    }
    t.print(ctx.format)?;
    Ok(())
}
