//! `berthctl network …` (docker's grammar) over berth.services.networks.v1.

use crate::cli::{Format, Network};
use crate::ctx::Ctx;
use crate::error::{CtlError, status_error};
use crate::output::{Table, time_json};
use anyhow::Result;
use berth_proto::pb::berth::services::networks::v1 as api;
use berth_proto::pb::berth::services::networks::v1::networks_client::NetworksClient;
use serde_json::{Value, json};
use tonic::Code;

pub(crate) async fn run(ctx: &Ctx, c: Network) -> Result<()> {
    let mut cl = NetworksClient::new(ctx.ch.clone());
    match c {
        Network::Create {
            name,
            subnet,
            gateway,
            internal,
        } => {
            let n = cl
                .create(ctx.req(api::CreateNetworkRequest {
                    name,
                    subnet: subnet.unwrap_or_default(),
                    gateway: gateway.unwrap_or_default(),
                    internal,
                }))
                .await
                .map_err(|s| status_error(&s))?
                .into_inner()
                .network
                .unwrap_or_default();
            println!("{}", n.name);
        }
        Network::Ls { quiet } => {
            let list = list(ctx, &mut cl).await?;
            if quiet {
                list.iter().for_each(|n| println!("{}", n.name));
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "DRIVER", "SUBNET", "GATEWAY", "INTERNAL"]);
            for n in &list {
                t.row(
                    vec![
                        n.name.clone(),
                        n.driver.clone(),
                        n.subnets.join(","),
                        n.gateway.clone(),
                        n.internal.to_string(),
                    ],
                    json!({"name": n.name, "driver": n.driver, "subnets": n.subnets,
                           "gateway": n.gateway, "internal": n.internal, "default": n.default,
                           "created_at": time_json(n.created_at.as_ref())}),
                );
            }
            t.print(ctx.format)?;
        }
        Network::Inspect { names } => {
            // As docker: every network found is printed, then the first
            // missing one fails the command.
            let mut out = Vec::new();
            let mut failed = None;
            for name in names {
                match cl
                    .get(ctx.req(api::GetNetworkRequest { name: name.clone() }))
                    .await
                {
                    Ok(r) => out.push(inspect_json(&r.into_inner().network.unwrap_or_default())),
                    Err(s) => {
                        failed.get_or_insert(CtlError(format!(
                            "inspect {name}: {}",
                            status_error(&s)
                        )));
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        Network::Rm { names } => {
            // As docker: tries every name, prints those removed, then fails
            // naming the ones that could not be.
            let mut errs = Vec::new();
            for name in names {
                match cl
                    .delete(ctx.req(api::DeleteNetworkRequest { name: name.clone() }))
                    .await
                {
                    Ok(_) => println!("{name}"),
                    Err(s) => errs.push(format!("remove {name}: {}", status_error(&s))),
                }
            }
            if !errs.is_empty() {
                return Err(CtlError(errs.join("; ")).into());
            }
        }
        Network::Prune { force } => {
            if !force
                && !crate::output::confirm(
                    "This will remove all custom networks not used by at least one container.",
                )?
            {
                return Ok(());
            }
            let mut removed = Vec::new();
            for n in list(ctx, &mut cl).await? {
                if n.default {
                    continue;
                }
                match cl
                    .delete(ctx.req(api::DeleteNetworkRequest {
                        name: n.name.clone(),
                    }))
                    .await
                {
                    Ok(_) => removed.push(n.name),
                    // In use (or removed meanwhile): prune leaves it.
                    Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::NotFound) => {}
                    Err(s) => {
                        return Err(
                            CtlError(format!("remove {}: {}", n.name, status_error(&s))).into()
                        );
                    }
                }
            }
            if ctx.format == Format::Json {
                println!("{}", json!({ "removed": removed }));
            } else if !removed.is_empty() {
                println!("Deleted Networks:");
                removed.iter().for_each(|n| println!("{n}"));
            }
        }
    }
    Ok(())
}

async fn list(
    ctx: &Ctx,
    cl: &mut NetworksClient<tonic::transport::Channel>,
) -> Result<Vec<api::Network>> {
    Ok(cl
        .list(ctx.req(api::ListNetworksRequest {}))
        .await
        .map_err(|s| status_error(&s))?
        .into_inner()
        .networks)
}

fn inspect_json(n: &api::Network) -> Value {
    let config: Value = serde_json::from_slice(&n.config).unwrap_or(Value::Null);
    json!({
        "Name": n.name,
        "Driver": n.driver,
        "Created": time_json(n.created_at.as_ref()),
        "Internal": n.internal,
        "Default": n.default,
        "IPAM": {
            "Config": n.subnets.iter().enumerate().map(|(i, s)| {
                if i == 0 && !n.gateway.is_empty() {
                    json!({"Subnet": s, "Gateway": n.gateway})
                } else {
                    json!({"Subnet": s})
                }
            }).collect::<Vec<_>>(),
        },
        "Plugins": n.plugins,
        "CNIVersion": n.cni_version,
        "ConfigPath": n.config_path,
        "Config": config,
    })
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command, Network};
    use crate::output::answer_is_yes;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Network, clap::Error> {
        let mut v = vec!["berthctl"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.command {
            Command::Network(n) => Ok(n),
            other => panic!("not a network command: {other:?}"),
        }
    }

    #[test]
    fn create_takes_dockers_flags() {
        assert_eq!(
            parse(&[
                "network",
                "create",
                "--subnet",
                "10.5.0.0/24",
                "--gateway",
                "10.5.0.254",
                "--internal",
                "n1"
            ])
            .unwrap(),
            Network::Create {
                name: "n1".into(),
                subnet: Some("10.5.0.0/24".into()),
                gateway: Some("10.5.0.254".into()),
                internal: true,
            }
        );
        assert_eq!(
            parse(&["network", "create", "n2"]).unwrap(),
            Network::Create {
                name: "n2".into(),
                subnet: None,
                gateway: None,
                internal: false,
            }
        );
        assert!(parse(&["network", "create"]).is_err());
        assert!(parse(&["network", "create", "a", "b"]).is_err());
        assert!(parse(&["network", "create", "--driver", "x", "a"]).is_err());
    }

    #[test]
    fn ls_inspect_rm_prune() {
        assert_eq!(
            parse(&["network", "ls", "-q"]).unwrap(),
            Network::Ls { quiet: true }
        );
        assert_eq!(
            parse(&["network", "list"]).unwrap(),
            Network::Ls { quiet: false }
        );
        let cli = Cli::try_parse_from(["berthctl", "network", "ls", "--format", "json"]).unwrap();
        assert_eq!(cli.format, crate::cli::Format::Json);
        assert_eq!(
            parse(&["network", "inspect", "a", "b"]).unwrap(),
            Network::Inspect {
                names: vec!["a".into(), "b".into()]
            }
        );
        assert!(parse(&["network", "inspect"]).is_err());
        assert_eq!(
            parse(&["network", "remove", "a"]).unwrap(),
            Network::Rm {
                names: vec!["a".into()]
            }
        );
        assert!(parse(&["network", "rm"]).is_err());
        assert_eq!(
            parse(&["network", "prune", "-f"]).unwrap(),
            Network::Prune { force: true }
        );
        assert_eq!(
            parse(&["network", "prune"]).unwrap(),
            Network::Prune { force: false }
        );
    }

    #[test]
    fn prune_confirmation() {
        assert!(answer_is_yes("y\n") && answer_is_yes(" YES "));
        assert!(!answer_is_yes("\n") && !answer_is_yes("n") && !answer_is_yes("yess"));
    }
}
