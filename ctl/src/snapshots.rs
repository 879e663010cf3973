//! `berthctl snapshots …` and `berthctl images mount/unmount`.

use crate::cli::{Format, Snapshots, SnapshotsArgs};
use crate::ctx::Ctx;
use crate::error::CtlError;
use crate::output::{Table, human_size, labels as fmt_labels, time_json};
use anyhow::{Result, bail};
use berth_proto::services::snapshots::v1 as api;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::types::Mount;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use tokio_stream::StreamExt;

fn kind(k: i32) -> &'static str {
    match api::Kind::try_from(k).unwrap_or(api::Kind::Unknown) {
        api::Kind::View => "View",
        api::Kind::Active => "Active",
        api::Kind::Committed => "Committed",
        api::Kind::Unknown => "Unknown",
    }
}

async fn list(ctx: &Ctx, sn: &str, filters: Vec<String>) -> Result<Vec<api::Info>> {
    let mut s = SnapshotsClient::new(ctx.ch.clone())
        .list(ctx.req(api::ListSnapshotsRequest {
            snapshotter: sn.to_string(),
            filters,
        }))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend(b?.info);
    }
    Ok(out)
}

/// A mount as a shell command, the way `ctr snapshots mounts` prints it.
pub fn mount_command(m: &Mount, target: &str) -> String {
    let opts = if m.options.is_empty() {
        String::new()
    } else {
        format!(" -o {}", m.options.join(","))
    };
    format!("mount -t {} {} {target}{opts}", m.r#type, m.source)
}

/// Mounts with the system's mount(8).
pub fn mount_with_tool(mounts: &[Mount], target: &Path) -> Result<()> {
    for m in mounts {
        let st = std::process::Command::new("mount")
            .arg("-t")
            .arg(&m.r#type)
            .arg("-o")
            .arg(m.options.join(","))
            .arg(&m.source)
            .arg(target)
            .status()
            .map_err(|e| CtlError(format!("run mount: {e}")))?;
        if !st.success() {
            bail!(CtlError(format!(
                "mount {} on {} failed ({st})",
                m.r#type,
                target.display()
            )));
        }
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, a: SnapshotsArgs) -> Result<()> {
    let sn = ctx.snapshotter.clone();
    let mut cl = SnapshotsClient::new(ctx.ch.clone());
    match a.command {
        Snapshots::Ls { filters } => {
            let mut t = Table::new(&["KEY", "PARENT", "KIND"]);
            for i in list(ctx, &sn, filters).await? {
                t.row(
                    vec![i.name.clone(), i.parent.clone(), kind(i.kind).into()],
                    json!({"key": i.name, "parent": i.parent, "kind": kind(i.kind), "labels": i.labels,
                           "created_at": time_json(i.created_at.as_ref()),
                           "updated_at": time_json(i.updated_at.as_ref())}),
                );
            }
            t.print(ctx.format)?;
        }
        Snapshots::Tree => {
            let all = list(ctx, &sn, vec![]).await?;
            print_tree(ctx.format, &all)?;
        }
        Snapshots::Info { key } => {
            let i = cl
                .stat(ctx.req(api::StatSnapshotRequest {
                    snapshotter: sn,
                    key,
                }))
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            let v = json!({"name": i.name, "parent": i.parent, "kind": kind(i.kind), "labels": i.labels,
                           "created": time_json(i.created_at.as_ref()), "updated": time_json(i.updated_at.as_ref())});
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Snapshots::Usage { key } => {
            let keys = match key {
                Some(k) => vec![k],
                None => list(ctx, &sn, vec![])
                    .await?
                    .into_iter()
                    .map(|i| i.name)
                    .collect(),
            };
            let mut t = Table::new(&["KEY", "SIZE", "INODES"]);
            for k in keys {
                let u = cl
                    .usage(ctx.req(api::UsageRequest {
                        snapshotter: sn.clone(),
                        key: k.clone(),
                    }))
                    .await?
                    .into_inner();
                t.row(
                    vec![k.clone(), human_size(u.size), u.inodes.to_string()],
                    json!({"key": k, "size": u.size, "inodes": u.inodes}),
                );
            }
            t.print(ctx.format)?;
        }
        Snapshots::Prepare {
            key,
            parent,
            target,
        } => {
            // Held by a gc.root label: nothing else references a snapshot
            // made by hand.
            let labels = root_label();
            let m = cl
                .prepare(ctx.req(api::PrepareSnapshotRequest {
                    snapshotter: sn,
                    key,
                    parent: parent.unwrap_or_default(),
                    labels,
                }))
                .await?
                .into_inner()
                .mounts;
            print_mounts(ctx, &m, target.as_deref());
        }
        Snapshots::View {
            key,
            parent,
            target,
        } => {
            let m = cl
                .view(ctx.req(api::ViewSnapshotRequest {
                    snapshotter: sn,
                    key,
                    parent,
                    labels: root_label(),
                }))
                .await?
                .into_inner()
                .mounts;
            print_mounts(ctx, &m, target.as_deref());
        }
        Snapshots::Commit { name, key } => {
            cl.commit(ctx.req(api::CommitSnapshotRequest {
                snapshotter: sn,
                name,
                key,
                labels: root_label(),
                parent: String::new(),
            }))
            .await?;
        }
        Snapshots::Rm { keys } => {
            for key in keys {
                cl.remove(ctx.req(api::RemoveSnapshotRequest {
                    snapshotter: sn.clone(),
                    key: key.clone(),
                }))
                .await?;
                println!("{key}");
            }
        }
        Snapshots::Mounts { target, key } => {
            let m = cl
                .mounts(ctx.req(api::MountsRequest {
                    snapshotter: sn,
                    key,
                }))
                .await?
                .into_inner()
                .mounts;
            print_mounts(ctx, &m, Some(&target));
        }
        Snapshots::Label { key, labels } => {
            let l = crate::ctx::parse_labels(&labels);
            let mask = crate::ctx::label_mask(&l);
            let i = cl
                .update(ctx.req(api::UpdateSnapshotRequest {
                    snapshotter: sn,
                    info: Some(api::Info {
                        name: key,
                        labels: l,
                        ..Default::default()
                    }),
                    update_mask: Some(mask),
                }))
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            println!("{}", fmt_labels(&i.labels));
        }
    }
    Ok(())
}

/// Snapshots as a tree of parents and children: indented lines for
/// people, nested objects (`key`, `kind`, `children`) in JSON. A snapshot
/// whose parent is not listed is a root too.
fn print_tree(format: Format, all: &[api::Info]) -> Result<()> {
    let known: std::collections::HashSet<&str> = all.iter().map(|i| i.name.as_str()).collect();
    let mut children: HashMap<&str, Vec<&api::Info>> = HashMap::new();
    let mut roots = Vec::new();
    for i in all {
        if known.contains(i.parent.as_str()) {
            children.entry(i.parent.as_str()).or_default().push(i);
        } else {
            roots.push(i);
        }
    }
    roots.sort_by(|a, b| a.name.cmp(&b.name));
    for v in children.values_mut() {
        v.sort_by(|a, b| a.name.cmp(&b.name));
    }
    fn node(i: &api::Info, children: &HashMap<&str, Vec<&api::Info>>) -> serde_json::Value {
        let kids: Vec<_> = children
            .get(i.name.as_str())
            .into_iter()
            .flatten()
            .map(|c| node(c, children))
            .collect();
        json!({"key": i.name, "parent": i.parent, "kind": kind(i.kind), "children": kids})
    }
    fn lines(
        i: &api::Info,
        depth: usize,
        children: &HashMap<&str, Vec<&api::Info>>,
        out: &mut String,
    ) {
        if depth == 0 {
            out.push_str(&format!("{}\n", i.name));
        } else {
            out.push_str(&format!("{}\\_ {}\n", "  ".repeat(depth - 1), i.name));
        }
        for c in children.get(i.name.as_str()).into_iter().flatten() {
            lines(c, depth + 1, children, out);
        }
    }
    if format == Format::Json {
        let v: Vec<_> = roots.iter().map(|r| node(r, &children)).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut out = String::new();
        for r in roots {
            lines(r, 0, &children, &mut out);
        }
        print!("{out}");
    }
    Ok(())
}

fn root_label() -> HashMap<String, String> {
    HashMap::from([(
        "containerd.io/gc.root".to_string(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )])
}

fn print_mounts(ctx: &Ctx, m: &[Mount], target: Option<&str>) {
    if ctx.format == Format::Json {
        let v: Vec<_> = m
            .iter()
            .map(|m| json!({"type": m.r#type, "source": m.source, "options": m.options}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    for mm in m {
        println!("{}", mount_command(mm, target.unwrap_or("<target>")));
    }
}
