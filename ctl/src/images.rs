//! `berthctl images …`: listing (with sizes and platforms), inspecting,
//! labelling and removing images, mounting one on the host, and handing
//! pull/push/tag to [`crate::registry`] and import/export to
//! [`crate::transfer`]. Resolving and unpacking images is [`crate::image`].

use crate::cli::Images;
use crate::ctx::{Ctx, label_mask, parse_labels};
use crate::error::CtlError;
use crate::output::{Table, human_size, labels as fmt_labels, time_json};
use anyhow::{Result, bail};
use berth_proto::services::images::v1 as images;
use berth_proto::services::images::v1::images_client::ImagesClient;
use serde_json::{Value, json};
use std::collections::HashMap;

pub(crate) async fn run(ctx: &Ctx, c: Images) -> Result<()> {
    let mut cl = ImagesClient::new(ctx.ch.clone());
    match c {
        Images::Ls { quiet, filters } => {
            let list = cl
                .list(ctx.req(images::ListImagesRequest { filters }))
                .await?
                .into_inner()
                .images;
            if quiet {
                list.iter().for_each(|i| println!("{}", i.name));
                return Ok(());
            }
            let mut t = Table::new(&["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]);
            for i in list {
                let target = i.target.clone().unwrap_or_default();
                // Unknown (content missing) is "-" for people, null in JSON.
                let (size, platforms) = match walk(ctx, &target).await {
                    Ok((s, p)) => (Some(s), Some(p)),
                    Err(_) => (None, None),
                };
                t.row(
                    vec![
                        i.name.clone(),
                        target.media_type.clone(),
                        target.digest.clone(),
                        size.map_or_else(|| "-".into(), human_size),
                        platforms
                            .as_ref()
                            .map_or_else(|| "-".into(), |p| p.join(",")),
                        fmt_labels(&i.labels),
                    ],
                    json!({"name": i.name, "media_type": target.media_type, "digest": target.digest,
                           "size": size, "platforms": platforms, "labels": i.labels,
                           "created_at": time_json(i.created_at.as_ref()),
                           "updated_at": time_json(i.updated_at.as_ref())}),
                );
            }
            t.print(ctx.format)?;
        }
        Images::Pull(a) => crate::registry::pull(ctx, a).await?,
        Images::Push(a) => crate::registry::push(ctx, a).await?,
        Images::Tag {
            source,
            target,
            force,
        } => crate::registry::tag(ctx, &source, &target, force).await?,
        Images::Import(a) => crate::transfer::import(ctx, a).await?,
        Images::Export(a) => crate::transfer::export(ctx, a).await?,
        Images::Rm { names, sync } => {
            for name in names {
                let name = crate::image::local_name(ctx, &name).await.map_err(|e| {
                    CtlError(format!("remove {name}: {}", crate::error::one_line(&e)))
                })?;
                cl.delete(ctx.req(images::DeleteImageRequest {
                    name: name.clone(),
                    sync,
                    target: None,
                }))
                .await
                .map_err(|s| {
                    CtlError(format!("remove {name}: {}", crate::error::status_error(&s)))
                })?;
                println!("{name}");
            }
        }
        Images::Label { name, labels } => {
            let l = parse_labels(&labels);
            let mask = label_mask(&l);
            let img = cl
                .update(ctx.req(images::UpdateImageRequest {
                    image: Some(images::Image {
                        name,
                        labels: l,
                        ..Default::default()
                    }),
                    update_mask: Some(mask),
                    source_date_epoch: None,
                }))
                .await?
                .into_inner()
                .image
                .unwrap_or_default();
            println!("{}", fmt_labels(&img.labels));
        }
        Images::Mount {
            name,
            target,
            rw,
            platform,
        } => mount_image(ctx, &name, &target, rw, platform.as_deref()).await?,
        Images::Prune(a) => crate::prune::image_prune(ctx, a).await?,
        Images::Unmount { target } => {
            let target = std::fs::canonicalize(&target)
                .map_err(|e| CtlError(format!("{}: {e}", target.display())))?;
            let st = std::process::Command::new("umount").arg(&target).status()?;
            if !st.success() {
                bail!(CtlError(format!(
                    "umount {} failed ({st})",
                    target.display()
                )));
            }
            use berth_proto::services::snapshots::v1 as sapi;
            sapi::snapshots_client::SnapshotsClient::new(ctx.ch.clone())
                .remove(ctx.req(sapi::RemoveSnapshotRequest {
                    snapshotter: ctx.snapshotter.clone(),
                    key: mount_key(&target),
                }))
                .await?;
            println!("{}", target.display());
        }
        Images::Inspect { name } => {
            let name = crate::image::local_name(ctx, &name).await?;
            let img = cl
                .get(ctx.req(images::GetImageRequest { name }))
                .await?
                .into_inner()
                .image
                .unwrap_or_default();
            let target = img.target.clone().unwrap_or_default();
            let manifest = crate::image::read_json(ctx, &target.digest).await?;
            let mut config = Value::Null;
            if let Some(d) = manifest.pointer("/config/digest").and_then(Value::as_str) {
                config = crate::image::read_json(ctx, d).await.unwrap_or(Value::Null);
            }
            let out = json!({
                "name": img.name,
                "labels": img.labels,
                "created_at": time_json(img.created_at.as_ref()),
                "updated_at": time_json(img.updated_at.as_ref()),
                "target": {"media_type": target.media_type, "digest": target.digest, "size": target.size},
                "manifest": manifest,
                "config": config,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}

fn mount_key(target: &std::path::Path) -> String {
    format!("berthctl-mount:{}", target.display())
}

async fn mount_image(
    ctx: &Ctx,
    name: &str,
    target: &std::path::Path,
    rw: bool,
    platform: Option<&str>,
) -> Result<()> {
    use berth_proto::services::snapshots::v1 as sapi;
    let target = std::fs::canonicalize(target)
        .map_err(|e| CtlError(format!("{}: {e}", target.display())))?;
    let name = &crate::image::local_name(ctx, name).await?;
    let chain = crate::image::resolve(ctx, name, platform)
        .await?
        .top()
        .to_string();
    let mut cl = sapi::snapshots_client::SnapshotsClient::new(ctx.ch.clone());
    if let Err(s) = cl
        .stat(ctx.req(sapi::StatSnapshotRequest {
            snapshotter: ctx.snapshotter.clone(),
            key: chain.clone(),
        }))
        .await
    {
        if s.code() == tonic::Code::NotFound {
            bail!(CtlError(format!(
                "image {name} is not unpacked (no snapshot {chain}): import it without --no-unpack"
            )));
        }
        return Err(s.into());
    }
    let key = mount_key(&target);
    let labels = HashMap::from([(
        "containerd.io/gc.root".to_string(),
        chrono::Utc::now().to_rfc3339(),
    )]);
    let mounts = if rw {
        cl.prepare(ctx.req(sapi::PrepareSnapshotRequest {
            snapshotter: ctx.snapshotter.clone(),
            key: key.clone(),
            parent: chain,
            labels,
        }))
        .await?
        .into_inner()
        .mounts
    } else {
        cl.view(ctx.req(sapi::ViewSnapshotRequest {
            snapshotter: ctx.snapshotter.clone(),
            key: key.clone(),
            parent: chain,
            labels,
        }))
        .await?
        .into_inner()
        .mounts
    };
    if let Err(e) = crate::snapshots::mount_with_tool(&mounts, &target) {
        let _ = cl
            .remove(ctx.req(sapi::RemoveSnapshotRequest {
                snapshotter: ctx.snapshotter.clone(),
                key,
            }))
            .await;
        return Err(e);
    }
    println!("{}", target.display());
    Ok(())
}

/// Size of an image for this host (index + manifest + config + layers, as
/// ctr counts it) and the platforms it offers.
async fn walk(ctx: &Ctx, target: &berth_proto::types::Descriptor) -> Result<(i64, Vec<String>)> {
    let v = crate::image::read_json(ctx, &target.digest).await?;
    if let Some(ms) = v.get("manifests").and_then(Value::as_array) {
        let host = crate::image::host_platform();
        let mut platforms = Vec::new();
        let mut chosen = None;
        for m in ms {
            let p = m.get("platform");
            let pos = p
                .and_then(|p| p.get("os"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let parch = p
                .and_then(|p| p.get("architecture"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if !pos.is_empty() {
                platforms.push(format!("{pos}/{parch}"));
            }
            if chosen.is_none() && (pos.is_empty() || format!("{pos}/{parch}") == host) {
                chosen = Some(m.clone());
            }
        }
        let mut size = target.size;
        if let Some(m) = chosen {
            let d = berth_proto::types::Descriptor {
                media_type: m["mediaType"].as_str().unwrap_or_default().to_string(),
                digest: m["digest"].as_str().unwrap_or_default().to_string(),
                size: m["size"].as_i64().unwrap_or(0),
                annotations: HashMap::new(),
            };
            if let Ok((s, p)) = Box::pin(walk(ctx, &d)).await {
                size += s;
                if platforms.is_empty() {
                    platforms = p;
                }
            }
        }
        return Ok((size, platforms));
    }
    let mut size = target.size;
    let mut platforms = Vec::new();
    if let Some(c) = v.get("config") {
        size += c["size"].as_i64().unwrap_or(0);
        if let Some(d) = c["digest"].as_str()
            && let Ok(cfg) = crate::image::read_json(ctx, d).await
        {
            platforms.push(format!(
                "{}/{}",
                cfg["os"].as_str().unwrap_or("?"),
                cfg["architecture"].as_str().unwrap_or("?")
            ));
        }
    }
    for l in v["layers"].as_array().into_iter().flatten() {
        size += l["size"].as_i64().unwrap_or(0);
    }
    Ok((size, platforms))
}
