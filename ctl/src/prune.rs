//! docker's `system df`, `system prune`, `image prune` and `container
//! prune` over the containerd API. An image is *dangling* when it has no
//! name of its own: berthctl names such images [`DANGLING`]`@<digest>`
//! (as moby's containerd store does with `moby-dangling@`), e.g. `commit`
//! without a name, or the image a `commit` took the name from.

use crate::cli::{Format, PruneArgs};
use crate::ctx::Ctx;
use crate::error::{CtlError, status_error};
use crate::output::{Table, confirm, human_size};
use crate::ps::is_live;
use anyhow::Result;
use berth_proto::pb::berth::services::networks::v1 as napi;
use berth_proto::pb::berth::services::networks::v1::networks_client::NetworksClient;
use berth_proto::pb::berth::services::volumes::v1 as vapi;
use berth_proto::pb::berth::services::volumes::v1::volumes_client::VolumesClient;
use berth_proto::pb::containerd::v1::types::Process;
use berth_proto::services::containers::v1 as capi;
use berth_proto::services::containers::v1::containers_client::ContainersClient;
use berth_proto::services::images::v1 as iapi;
use berth_proto::services::images::v1::images_client::ImagesClient;
use berth_proto::services::snapshots::v1 as sapi;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use serde_json::json;
use std::collections::HashSet;

/// Name prefix of images without a name of their own.
pub(crate) const DANGLING: &str = "berth-dangling";

/// The name a dangling image of manifest `digest` gets.
pub(crate) fn dangling_name(digest: &str) -> String {
    format!("{DANGLING}@{digest}")
}

pub(crate) fn is_dangling(name: &str) -> bool {
    name.strip_prefix(DANGLING)
        .is_some_and(|rest| rest.starts_with("@sha256:"))
}

/// Every container with its task (if any).
async fn containers(ctx: &Ctx) -> Result<Vec<(capi::Container, Option<Process>)>> {
    let list = ContainersClient::new(ctx.ch.clone())
        .list(ctx.req(capi::ListContainersRequest { filters: vec![] }))
        .await?
        .into_inner()
        .containers;
    let mut tasks = crate::ps::tasks_by_container(ctx).await?;
    Ok(list
        .into_iter()
        .map(|c| {
            let t = tasks.remove(&c.id);
            (c, t)
        })
        .collect())
}

async fn images(ctx: &Ctx) -> Result<Vec<iapi::Image>> {
    Ok(ImagesClient::new(ctx.ch.clone())
        .list(ctx.req(iapi::ListImagesRequest { filters: vec![] }))
        .await?
        .into_inner()
        .images)
}

/// Bytes of an image's content for this host (manifest's layers and
/// config); 0 when it cannot be read (e.g. another platform only).
async fn image_size(ctx: &Ctx, img: &iapi::Image) -> i64 {
    let Some(t) = img.target.as_ref() else {
        return 0;
    };
    match crate::image::resolve_target(ctx, &img.name, &t.digest, None).await {
        Ok(r) => t.size + r.layers.iter().map(|l| l.size).sum::<i64>(),
        Err(_) => t.size,
    }
}

/// Bytes written by a container (its writable snapshot's own usage).
async fn container_size(ctx: &Ctx, c: &capi::Container) -> i64 {
    if c.snapshot_key.is_empty() {
        return 0;
    }
    SnapshotsClient::new(ctx.ch.clone())
        .usage(ctx.req(sapi::UsageRequest {
            snapshotter: c.snapshotter.clone(),
            key: c.snapshot_key.clone(),
        }))
        .await
        .map_or(0, |u| u.into_inner().size)
}

/// Apparent size of the regular files under `dir` (not following links).
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

/// Which images the containers use (by name).
fn used_images(cs: &[(capi::Container, Option<Process>)]) -> HashSet<String> {
    cs.iter().map(|(c, _)| c.image.clone()).collect()
}

/// One `system df` row.
struct Usage {
    kind: &'static str,
    total: usize,
    active: usize,
    size: i64,
    reclaimable: i64,
}

/// docker's RECLAIMABLE cell: bytes and their share of the total.
fn reclaimable_text(reclaimable: i64, size: i64) -> String {
    if size <= 0 {
        return format!("{} (0%)", human_size(reclaimable.max(0)));
    }
    let pct = (i128::from(reclaimable) * 100 + i128::from(size) / 2) / i128::from(size);
    format!("{} ({pct}%)", human_size(reclaimable))
}

pub(crate) async fn df(ctx: &Ctx) -> Result<()> {
    let cs = containers(ctx).await?;
    let used = used_images(&cs);
    let mut rows = Vec::new();
    let imgs = images(ctx).await?;
    let mut u = Usage {
        kind: "Images",
        total: imgs.len(),
        active: 0,
        size: 0,
        reclaimable: 0,
    };
    for i in &imgs {
        let s = image_size(ctx, i).await;
        u.size += s;
        if used.contains(&i.name) {
            u.active += 1;
        } else {
            u.reclaimable += s;
        }
    }
    rows.push(u);
    let mut u = Usage {
        kind: "Containers",
        total: cs.len(),
        active: 0,
        size: 0,
        reclaimable: 0,
    };
    let mut sources = HashSet::new();
    for (c, t) in &cs {
        let s = container_size(ctx, c).await;
        u.size += s;
        if is_live(t.as_ref()) {
            u.active += 1;
        } else {
            u.reclaimable += s;
        }
        let spec = crate::ps::spec_of(c);
        for m in spec["mounts"].as_array().into_iter().flatten() {
            if let Some(src) = m["source"].as_str() {
                sources.insert(src.to_string());
            }
        }
    }
    rows.push(u);
    let vols = VolumesClient::new(ctx.ch.clone())
        .list(ctx.req(vapi::ListVolumesRequest {}))
        .await
        .map_err(|s| status_error(&s))?
        .into_inner()
        .volumes;
    let mut u = Usage {
        kind: "Local Volumes",
        total: vols.len(),
        active: 0,
        size: 0,
        reclaimable: 0,
    };
    for v in &vols {
        let s = i64::try_from(dir_size(std::path::Path::new(&v.mountpoint))).unwrap_or(i64::MAX);
        u.size += s;
        if sources.contains(&v.mountpoint) {
            u.active += 1;
        } else {
            u.reclaimable += s;
        }
    }
    rows.push(u);
    rows.push(Usage {
        kind: "Build Cache",
        total: 0,
        active: 0,
        size: 0,
        reclaimable: 0,
    });
    let mut t = Table::new(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
    for u in rows {
        t.row(
            vec![
                u.kind.into(),
                u.total.to_string(),
                u.active.to_string(),
                human_size(u.size),
                reclaimable_text(u.reclaimable, u.size),
            ],
            json!({"type": u.kind, "total": u.total, "active": u.active,
                   "size": u.size, "reclaimable": u.reclaimable}),
        );
    }
    t.print(ctx.format)?;
    Ok(())
}

/// Removes every container without a live task; returns their names and
/// the bytes their snapshots held.
async fn prune_containers(ctx: &Ctx) -> Result<(Vec<String>, i64)> {
    let mut gone = Vec::new();
    let mut bytes = 0;
    for (c, t) in containers(ctx).await? {
        if is_live(t.as_ref()) {
            continue;
        }
        let size = container_size(ctx, &c).await;
        match crate::lifecycle::rm(ctx, &c.id, false).await {
            Ok(()) => {
                gone.push(c.id);
                bytes += size;
            }
            // Started or removed meanwhile: prune leaves it.
            Err(e) => eprintln!("berthctl: not removed: {}: {e}", c.id),
        }
    }
    Ok((gone, bytes))
}

/// Removes dangling images (with `all`, every image no container uses).
async fn prune_images(ctx: &Ctx, all: bool) -> Result<(Vec<String>, i64)> {
    let used = used_images(&containers(ctx).await?);
    let mut gone = Vec::new();
    let mut bytes = 0;
    for i in images(ctx).await? {
        if used.contains(&i.name) || !(all || is_dangling(&i.name)) {
            continue;
        }
        let size = image_size(ctx, &i).await;
        match ImagesClient::new(ctx.ch.clone())
            .delete(ctx.req(iapi::DeleteImageRequest {
                name: i.name.clone(),
                sync: false,
                target: None,
            }))
            .await
        {
            Ok(_) => {
                gone.push(i.name);
                bytes += size;
            }
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => {
                return Err(
                    CtlError(format!("remove image {}: {}", i.name, status_error(&s))).into(),
                );
            }
        }
    }
    Ok((gone, bytes))
}

fn report(ctx: &Ctx, what: &str, names: &[String]) {
    if ctx.format == Format::Table && !names.is_empty() {
        println!("Deleted {what}:");
        names.iter().for_each(|n| println!("{n}"));
        println!();
    }
}

/// What a prune removed, printed once (one JSON object in JSON mode).
#[derive(Default)]
struct Pruned {
    containers: Vec<String>,
    networks: Vec<String>,
    volumes: Vec<String>,
    images: Vec<String>,
    bytes: i64,
}

impl Pruned {
    fn print(&self, ctx: &Ctx) {
        if ctx.format == Format::Json {
            println!(
                "{}",
                json!({"containers": self.containers, "networks": self.networks,
                       "volumes": self.volumes, "images": self.images,
                       "reclaimed_bytes": self.bytes})
            );
            return;
        }
        report(ctx, "Containers", &self.containers);
        report(ctx, "Networks", &self.networks);
        report(ctx, "Volumes", &self.volumes);
        report(ctx, "Images", &self.images);
        println!("Total reclaimed space: {}", human_size(self.bytes));
    }
}

/// Removes the user networks no container uses (the daemon refuses those
/// in use; prune leaves them).
async fn prune_networks(ctx: &Ctx) -> Result<Vec<String>> {
    let mut cl = NetworksClient::new(ctx.ch.clone());
    let list = cl
        .list(ctx.req(napi::ListNetworksRequest {}))
        .await
        .map_err(|s| status_error(&s))?
        .into_inner()
        .networks;
    let mut gone = Vec::new();
    for n in list.into_iter().filter(|n| !n.default) {
        match cl
            .delete(ctx.req(napi::DeleteNetworkRequest {
                name: n.name.clone(),
            }))
            .await
        {
            Ok(_) => gone.push(n.name),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::NotFound
                ) => {}
            Err(s) => {
                return Err(
                    CtlError(format!("remove network {}: {}", n.name, status_error(&s))).into(),
                );
            }
        }
    }
    Ok(gone)
}

pub(crate) async fn container_prune(ctx: &Ctx, force: bool) -> Result<()> {
    if !force && !confirm("This will remove all stopped containers.")? {
        return Ok(());
    }
    let (containers, bytes) = prune_containers(ctx).await?;
    Pruned {
        containers,
        bytes,
        ..Default::default()
    }
    .print(ctx);
    Ok(())
}

pub(crate) async fn image_prune(ctx: &Ctx, a: PruneArgs) -> Result<()> {
    let warning = if a.all {
        "This will remove all images without at least one container associated to them."
    } else {
        "This will remove all dangling images."
    };
    if !a.force && !confirm(warning)? {
        return Ok(());
    }
    let (images, bytes) = prune_images(ctx, a.all).await?;
    Pruned {
        images,
        bytes,
        ..Default::default()
    }
    .print(ctx);
    Ok(())
}

/// docker's warning before `system prune`.
pub fn system_warning(all: bool, volumes: bool) -> String {
    let mut w = String::from(
        "This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n",
    );
    if volumes {
        w.push_str("  - all volumes not used by at least one container\n");
    }
    w.push_str(if all {
        "  - all images without at least one container associated to them"
    } else {
        "  - all dangling images"
    });
    w
}

pub(crate) async fn system_prune(ctx: &Ctx, all: bool, force: bool, volumes: bool) -> Result<()> {
    if !force && !confirm(&system_warning(all, volumes))? {
        return Ok(());
    }
    // Containers first, so that what they used becomes unused.
    let mut p = Pruned::default();
    (p.containers, p.bytes) = prune_containers(ctx).await?;
    p.networks = prune_networks(ctx).await?;
    if volumes {
        let r = VolumesClient::new(ctx.ch.clone())
            .prune(ctx.req(vapi::PruneVolumesRequest {}))
            .await
            .map_err(|s| status_error(&s))?
            .into_inner();
        p.volumes = r.deleted;
        p.bytes += i64::try_from(r.reclaimed_bytes).unwrap_or(i64::MAX);
    }
    let (images, bytes) = prune_images(ctx, all).await?;
    p.images = images;
    p.bytes += bytes;
    p.print(ctx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangling_names() {
        let d = dangling_name("sha256:abc");
        assert_eq!(d, "berth-dangling@sha256:abc");
        assert!(is_dangling(&d));
        assert!(!is_dangling("docker.io/library/busybox:latest"));
        assert!(!is_dangling("berth-dangling:latest"));
        assert!(!is_dangling("docker.io/library/bb@sha256:abc"));
    }

    #[test]
    fn reclaimable_as_docker_shows_it() {
        assert_eq!(reclaimable_text(512, 1024), "512 B (50%)");
        assert_eq!(reclaimable_text(0, 0), "0 B (0%)");
        assert_eq!(reclaimable_text(1024, 1024), "1.0 KiB (100%)");
    }

    #[test]
    fn system_prune_warning_lists_what_goes() {
        let w = system_warning(false, false);
        assert!(w.contains("dangling images") && !w.contains("volumes"));
        let w = system_warning(true, true);
        assert!(w.contains("without at least one container") && w.contains("volumes"));
    }
}
