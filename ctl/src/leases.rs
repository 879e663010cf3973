//! `berthctl leases …`.

use crate::cli::Leases;
use crate::ctx::{Ctx, parse_labels};
use crate::error::CtlError;
use crate::output::{Table, labels as fmt_labels, rfc3339, time_json};
use anyhow::{Result, bail};
use berth_proto::services::leases::v1 as leases;
use berth_proto::services::leases::v1::leases_client::LeasesClient;
use serde_json::json;

pub(crate) async fn run(ctx: &Ctx, c: Leases) -> Result<()> {
    let mut cl = LeasesClient::new(ctx.ch.clone());
    match c {
        Leases::Ls { quiet, filters } => {
            let list = cl
                .list(ctx.req(leases::ListRequest { filters }))
                .await?
                .into_inner()
                .leases;
            if quiet {
                list.iter().for_each(|l| println!("{}", l.id));
                return Ok(());
            }
            let mut t = Table::new(&["ID", "CREATED AT", "LABELS"]);
            for l in list {
                t.row(
                    vec![l.id.clone(), rfc3339(l.created_at.as_ref()), fmt_labels(&l.labels)],
                    json!({"id": l.id, "created_at": time_json(l.created_at.as_ref()), "labels": l.labels}),
                );
            }
            t.print(ctx.format)?;
        }
        Leases::Create {
            id,
            expires,
            labels,
        } => {
            let mut l = parse_labels(&labels);
            let d = humantime_secs(&expires)?;
            if d > 0 {
                let t = chrono::Utc::now() + chrono::Duration::seconds(d);
                l.insert(
                    "containerd.io/gc.expire".into(),
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                );
            }
            let lease = cl
                .create(ctx.req(leases::CreateRequest {
                    id: id.unwrap_or_default(),
                    labels: l,
                }))
                .await?
                .into_inner()
                .lease
                .unwrap_or_default();
            println!("{}", lease.id);
        }
        Leases::Rm { ids, sync } => {
            for id in ids {
                cl.delete(ctx.req(leases::DeleteRequest {
                    id: id.clone(),
                    sync,
                }))
                .await?;
                println!("{id}");
            }
        }
    }
    Ok(())
}

/// Parses durations like `24h`, `30m`, `90s`, `0`.
fn humantime_secs(s: &str) -> Result<i64> {
    if s == "0" {
        return Ok(0);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| CtlError(format!("duration {s:?}: expected e.g. 24h, 30m, 90s")))?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => bail!(CtlError(format!(
            "duration {s:?}: unit must be s, m, h or d"
        ))),
    };
    Ok(n * mult)
}
