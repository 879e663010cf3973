//! Client-side image facts: the manifest for a platform, its configuration
//! and layer chain IDs, and unpacking on demand (as ctr does, through the
//! Snapshots and Diff services, under a lease).

use crate::ctx::Ctx;
use crate::error::CtlError;
use anyhow::{Result, bail};
use berth_proto::client::with_lease;
use berth_proto::services::content::v1 as content;
use berth_proto::services::content::v1::content_client::ContentClient;
use berth_proto::services::diff::v1 as dapi;
use berth_proto::services::diff::v1::diff_client::DiffClient;
use berth_proto::services::images::v1 as images;
use berth_proto::services::images::v1::images_client::ImagesClient;
use berth_proto::services::leases::v1 as lapi;
use berth_proto::services::leases::v1::leases_client::LeasesClient;
use berth_proto::services::snapshots::v1 as sapi;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::types::Descriptor;
use serde_json::Value;
use sha2::Digest as _;
use std::collections::HashMap;
use tokio_stream::StreamExt;

/// What running an image needs to know about it.
pub struct Resolved {
    pub name: String,
    pub config_digest: String,
    pub config: Value,
    pub layers: Vec<Descriptor>,
    pub chain_ids: Vec<String>,
}

impl Resolved {
    /// The top layer's chain ID (the snapshot to start from).
    pub fn top(&self) -> &str {
        self.chain_ids.last().map_or("", String::as_str)
    }
}

/// The host platform in OCI terms.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("linux/{arch}")
}

/// Parses an `os/arch[/variant]` flag.
pub(crate) fn platform(s: &str) -> Result<berth_proto::types::Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        return Err(CtlError(format!(
            "platform {s:?} is invalid: expected os/arch[/variant], e.g. linux/amd64"
        ))
        .into());
    }
    Ok(berth_proto::types::Platform {
        os: parts[0].into(),
        architecture: parts[1].into(),
        variant: parts.get(2).map(|v| v.to_string()).unwrap_or_default(),
        ..Default::default()
    })
}

/// Opens blob `digest` whole, as a stream of chunks.
pub async fn read_blob(
    ctx: &Ctx,
    digest: &str,
) -> Result<tonic::Streaming<content::ReadContentResponse>> {
    Ok(ContentClient::new(ctx.ch.clone())
        .read(ctx.req(content::ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await?
        .into_inner())
}

/// Reads a (small) blob as JSON.
pub async fn read_json(ctx: &Ctx, digest: &str) -> Result<Value> {
    let mut s = read_blob(ctx, digest).await?;
    let mut buf = Vec::new();
    while let Some(c) = s.next().await {
        buf.extend_from_slice(&c?.data);
        if buf.len() > 16 << 20 {
            bail!(CtlError(format!(
                "blob {digest} is too large to be a manifest"
            )));
        }
    }
    Ok(serde_json::from_slice(&buf)?)
}

fn desc(v: &Value) -> Descriptor {
    Descriptor {
        media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
        digest: v["digest"].as_str().unwrap_or_default().to_string(),
        size: v["size"].as_i64().unwrap_or(0),
        annotations: HashMap::new(),
    }
}

/// True if an index entry's `platform` (JSON; absent matches anything)
/// runs on `want` (`os/arch[/variant]`): same OS and architecture, and the
/// same variant when both name one.
pub fn platform_matches(want: &str, p: &Value) -> bool {
    if p.is_null() {
        return true;
    }
    let mut w = want.split('/');
    let (os, arch, variant) = (
        w.next().unwrap_or(""),
        w.next().unwrap_or(""),
        w.next().unwrap_or(""),
    );
    let pv = p["variant"].as_str().unwrap_or("");
    p["os"].as_str() == Some(os)
        && p["architecture"].as_str() == Some(arch)
        && (variant.is_empty() || pv.is_empty() || variant == pv)
}

/// The stored name of image `name`: `name` itself when an image has that
/// exact name (imports without a registry name), else its docker-normalized
/// form (`busybox` → `docker.io/library/busybox:latest`), as `run` finds
/// images. Not found either way: the error names what the user typed.
pub async fn local_name(ctx: &Ctx, name: &str) -> Result<String> {
    let mut ic = ImagesClient::new(ctx.ch.clone());
    let get = |n: &str| images::GetImageRequest {
        name: n.to_string(),
    };
    match ic.get(ctx.req(get(name))).await {
        Ok(_) => Ok(name.to_string()),
        Err(s) if s.code() == tonic::Code::NotFound => {
            let not_found = || CtlError(format!("image {name} not found"));
            let Ok(n) = berth_proto::reference::normalize(name) else {
                return Err(not_found().into());
            };
            match ic.get(ctx.req(get(&n))).await {
                Ok(_) => Ok(n),
                Err(s) if s.code() == tonic::Code::NotFound => Err(not_found().into()),
                Err(s) => Err(s.into()),
            }
        }
        Err(s) => Err(s.into()),
    }
}

/// Resolves an image for `platform` (default: the host's).
pub async fn resolve(ctx: &Ctx, name: &str, platform: Option<&str>) -> Result<Resolved> {
    let img = ImagesClient::new(ctx.ch.clone())
        .get(ctx.req(images::GetImageRequest {
            name: name.to_string(),
        }))
        .await?
        .into_inner()
        .image
        .unwrap_or_default();
    resolve_target(ctx, name, &img.target.unwrap_or_default().digest, platform).await
}

/// Resolves the manifest, config and chain IDs under `digest` (a manifest
/// or index) for `platform` (default: the host's); `name` is for messages.
pub async fn resolve_target(
    ctx: &Ctx,
    name: &str,
    digest: &str,
    platform: Option<&str>,
) -> Result<Resolved> {
    let want = platform.map_or_else(host_platform, str::to_string);
    let mut digest = digest.to_string();
    let mut v = read_json(ctx, &digest).await?;
    for _ in 0..4 {
        let Some(ms) = v.get("manifests").and_then(Value::as_array) else {
            break;
        };
        let m = ms
            .iter()
            .find(|m| platform_matches(&want, &m["platform"]))
            .ok_or_else(|| CtlError(format!("image {name} has no manifest for {want}")))?;
        digest = m["digest"].as_str().unwrap_or_default().to_string();
        v = read_json(ctx, &digest).await?;
    }
    let cfg_digest = v["config"]["digest"]
        .as_str()
        .ok_or_else(|| CtlError(format!("manifest {digest} has no config")))?
        .to_string();
    let config = read_json(ctx, &cfg_digest).await?;
    let layers: Vec<Descriptor> = v["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(desc)
        .collect();
    let mut chain_ids = Vec::new();
    for d in config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let d = d.as_str().unwrap_or_default();
        let next = match chain_ids.last() {
            None => d.to_string(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        chain_ids.push(next);
    }
    if chain_ids.is_empty() {
        bail!(CtlError(format!("image {name} has no layers")));
    }
    if chain_ids.len() != layers.len() {
        bail!(CtlError(format!(
            "image {name}: manifest and config disagree on the number of layers"
        )));
    }
    Ok(Resolved {
        name: name.to_string(),
        config_digest: cfg_digest,
        config,
        layers,
        chain_ids,
    })
}

/// A temporary lease, deleted (with its unreferenced objects) on `done`.
pub struct Lease {
    pub id: String,
}

impl Lease {
    pub async fn create(ctx: &Ctx) -> Result<Lease> {
        let expire = chrono::Utc::now() + chrono::Duration::hours(1);
        let l = LeasesClient::new(ctx.ch.clone())
            .create(ctx.req(lapi::CreateRequest {
                id: String::new(),
                labels: HashMap::from([("containerd.io/gc.expire".into(), expire.to_rfc3339())]),
            }))
            .await?
            .into_inner()
            .lease
            .unwrap_or_default();
        Ok(Lease { id: l.id })
    }

    pub async fn done(self, ctx: &Ctx) {
        self.drop_lease(ctx, false).await;
    }

    /// Deletes the lease; with `sync`, waits until what only it held is
    /// collected (after a failure, so nothing half-made stays).
    pub async fn drop_lease(self, ctx: &Ctx, sync: bool) {
        let _ = LeasesClient::new(ctx.ch.clone())
            .delete(ctx.req(lapi::DeleteRequest { id: self.id, sync }))
            .await;
    }
}

/// Unpacks the image into `snapshotter` unless its top snapshot exists.
pub async fn ensure_unpacked(
    ctx: &Ctx,
    img: &Resolved,
    snapshotter: &str,
    lease: &Lease,
) -> Result<()> {
    let probe = SnapshotsClient::new(ctx.ch.clone());
    let mut sn = probe.clone();
    let exists = |key: String| {
        let mut sn = probe.clone();
        let snapshotter = snapshotter.to_string();
        async move {
            sn.stat(ctx.req(sapi::StatSnapshotRequest { snapshotter, key }))
                .await
                .is_ok()
        }
    };
    if exists(img.top().to_string()).await {
        return Ok(());
    }
    eprintln!("unpacking {}…", img.name);
    for (i, chain) in img.chain_ids.iter().enumerate() {
        if exists(chain.clone()).await {
            continue;
        }
        let key = format!("extract-{} {chain}", uuid::Uuid::new_v4().simple());
        let parent = if i == 0 {
            String::new()
        } else {
            img.chain_ids[i - 1].clone()
        };
        let mounts = sn
            .prepare(with_lease(
                ctx.req(sapi::PrepareSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: key.clone(),
                    parent,
                    labels: HashMap::new(),
                }),
                &lease.id,
            ))
            .await?
            .into_inner()
            .mounts;
        let applied = DiffClient::new(ctx.ch.clone())
            .apply(with_lease(
                ctx.req(dapi::ApplyRequest {
                    diff: Some(img.layers[i].clone()),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                }),
                &lease.id,
            ))
            .await;
        let applied = match applied {
            Ok(a) => a.into_inner().applied.unwrap_or_default(),
            Err(e) => {
                let _ = sn
                    .remove(ctx.req(sapi::RemoveSnapshotRequest {
                        snapshotter: snapshotter.to_string(),
                        key,
                    }))
                    .await;
                return Err(e.into());
            }
        };
        let want = img.config["rootfs"]["diff_ids"][i]
            .as_str()
            .unwrap_or_default();
        if applied.digest != want {
            let _ = sn
                .remove(ctx.req(sapi::RemoveSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key,
                }))
                .await;
            bail!(CtlError(format!(
                "layer {i} of {} unpacks to {}, but its config says {want}",
                img.name, applied.digest
            )));
        }
        sn.commit(with_lease(
            ctx.req(sapi::CommitSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                name: chain.clone(),
                key,
                labels: HashMap::new(),
                parent: String::new(),
            }),
            &lease.id,
        ))
        .await?;
    }
    // The image now holds its unpacked layers, as after a daemon-side unpack.
    let label = format!("containerd.io/gc.ref.snapshot.{snapshotter}");
    ContentClient::new(ctx.ch.clone())
        .update(ctx.req(content::UpdateRequest {
            info: Some(content::Info {
                digest: img.config_digest.clone(),
                labels: HashMap::from([(label.clone(), img.top().to_string())]),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![format!("labels.{label}")],
            }),
        }))
        .await?;
    Ok(())
}
