//! `berthctl volume …` over `berth.services.volumes.v1`, and the volume
//! side of `run -v`.

use crate::cli::Volume;
use crate::ctx::{Ctx, parse_kv_labels};
use crate::error::{CtlError, status_error};
use crate::output::{Table, labels as fmt_labels, rfc3339, time_json};
use anyhow::{Result, bail};
use berth_proto::pb::berth::services::volumes::v1 as vapi;
use berth_proto::pb::berth::services::volumes::v1::volumes_client::VolumesClient;
use serde_json::{Value, json};

fn to_json(v: &vapi::Volume) -> Value {
    json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": v.mountpoint,
        "Labels": v.labels,
        "CreatedAt": time_json(v.created_at.as_ref()),
        "Scope": "local",
    })
}

/// Creates volume `name` (or returns the existing one).
pub(crate) async fn ensure(ctx: &Ctx, name: &str) -> Result<vapi::CreateVolumeResponse> {
    Ok(VolumesClient::new(ctx.ch.clone())
        .create(ctx.req(vapi::CreateVolumeRequest {
            name: name.to_string(),
            labels: Default::default(),
        }))
        .await?
        .into_inner())
}

pub(crate) async fn run(ctx: &Ctx, c: Volume) -> Result<()> {
    let mut cl = VolumesClient::new(ctx.ch.clone());
    match c {
        Volume::Create { name, labels } => {
            let v = cl
                .create(ctx.req(vapi::CreateVolumeRequest {
                    name: name.unwrap_or_default(),
                    labels: parse_kv_labels(&labels)?,
                }))
                .await?
                .into_inner()
                .volume
                .unwrap_or_default();
            println!("{}", v.name);
        }
        Volume::Ls { quiet } => {
            let list = cl
                .list(ctx.req(vapi::ListVolumesRequest {}))
                .await?
                .into_inner()
                .volumes;
            if quiet {
                list.iter().for_each(|v| println!("{}", v.name));
                return Ok(());
            }
            let mut t = Table::new(&["DRIVER", "VOLUME NAME", "CREATED AT", "LABELS"]);
            for v in &list {
                t.row(
                    vec![
                        "local".into(),
                        v.name.clone(),
                        rfc3339(v.created_at.as_ref()),
                        fmt_labels(&v.labels),
                    ],
                    to_json(v),
                );
            }
            t.print(ctx.format)?;
        }
        Volume::Inspect { names } => {
            let mut out = Vec::new();
            let mut failed = None;
            for n in names {
                match cl.get(ctx.req(vapi::GetVolumeRequest { name: n })).await {
                    Ok(r) => out.push(to_json(&r.into_inner().volume.unwrap_or_default())),
                    Err(s) => {
                        eprintln!("berthctl: {}", status_error(&s));
                        failed = Some(s);
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            if failed.is_some() {
                bail!(CtlError("some volumes could not be inspected".into()));
            }
        }
        Volume::Rm { names } => {
            let mut failed = false;
            for n in names {
                match cl
                    .delete(ctx.req(vapi::DeleteVolumeRequest { name: n.clone() }))
                    .await
                {
                    Ok(_) => println!("{n}"),
                    Err(s) => {
                        eprintln!("berthctl: {}", status_error(&s));
                        failed = true;
                    }
                }
            }
            if failed {
                bail!(CtlError("some volumes could not be removed".into()));
            }
        }
        Volume::Prune { force } => {
            if !force
                && !crate::output::confirm(
                    "This will remove all volumes not used by at least one container.",
                )?
            {
                return Ok(());
            }
            let r = cl
                .prune(ctx.req(vapi::PruneVolumesRequest {}))
                .await?
                .into_inner();
            if ctx.format == crate::cli::Format::Json {
                println!(
                    "{}",
                    json!({"deleted": r.deleted, "reclaimed_bytes": r.reclaimed_bytes})
                );
                return Ok(());
            }
            if !r.deleted.is_empty() {
                println!("Deleted Volumes:");
                r.deleted.iter().for_each(|n| println!("{n}"));
                println!();
            }
            println!(
                "Total reclaimed space: {}",
                crate::output::human_size(i64::try_from(r.reclaimed_bytes).unwrap_or(i64::MAX))
            );
        }
    }
    Ok(())
}
