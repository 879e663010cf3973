//! `berthctl commit CONTAINER [REPO[:TAG]]`, as nerdctl does it over the
//! containerd API: pause the task (unless `--pause=false`), diff the
//! container's snapshot against a view of its parent (Diff.Diff: the layer
//! blob goes to the content store), then a new image config (the layer's
//! diff ID appended to `rootfs.diff_ids`, one history entry appended),
//! manifest and image record, all under a lease until the image holds
//! them; the new layer is unpacked so that `run` finds it at once.

use crate::cli::CommitArgs;
use crate::ctx::Ctx;
use crate::error::CtlError;
use crate::image::{Lease, Resolved, ensure_unpacked, resolve, resolve_target};
use crate::prune::{dangling_name, is_dangling};
use crate::ps::{get_container, get_task, state_name};
use anyhow::Result;
use berth_proto::client::with_lease;
use berth_proto::services::content::v1 as content;
use berth_proto::services::content::v1::content_client::ContentClient;
use berth_proto::services::diff::v1 as dapi;
use berth_proto::services::diff::v1::diff_client::DiffClient;
use berth_proto::services::images::v1 as iapi;
use berth_proto::services::images::v1::images_client::ImagesClient;
use berth_proto::services::snapshots::v1 as sapi;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::services::tasks::v1 as tapi;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::types::Descriptor;
use serde_json::{Value, json};
use sha2::Digest as _;
use std::collections::HashMap;
use tokio_stream::StreamExt;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

pub(crate) async fn run(ctx: &Ctx, a: CommitArgs) -> Result<()> {
    // Validated before anything is touched.
    let name = a
        .reference
        .as_deref()
        .map(|r| {
            berth_proto::reference::normalize(r)
                .map_err(|e| CtlError(format!("invalid image name {r:?}: {e}")))
        })
        .transpose()?;
    let c = get_container(ctx, &a.container).await?;
    if c.snapshot_key.is_empty() {
        return Err(CtlError(format!(
            "container {} has no root file system snapshot to commit",
            a.container
        ))
        .into());
    }
    let base = resolve(ctx, &c.image, None).await.map_err(|e| {
        CtlError(format!(
            "the image of {} ({}) cannot be read: {e}; commit needs its configuration",
            a.container, c.image
        ))
    })?;
    let task = get_task(ctx, &a.container).await?;
    let pause = a.pause && state_name(task.as_ref()) == "running";
    let mut tasks = TasksClient::new(ctx.ch.clone());
    if pause {
        tasks
            .pause(ctx.req(tapi::PauseTaskRequest {
                container_id: a.container.clone(),
            }))
            .await?;
    }
    let lease = Lease::create(ctx).await?;
    let diff = layer(ctx, &c.snapshotter, &c.snapshot_key, &base, &lease).await;
    if pause {
        // Resumed whatever the diff's outcome.
        let r = tasks
            .resume(ctx.req(tapi::ResumeTaskRequest {
                container_id: a.container.clone(),
            }))
            .await;
        if let Err(s) = r {
            eprintln!("berthctl: resume {}: {}", a.container, s.message());
        }
    }
    let out = match diff {
        Ok((layer, diff_id)) => {
            image(ctx, &a, name, &c.snapshotter, base, layer, diff_id, &lease).await
        }
        Err(e) => Err(e),
    };
    lease.drop_lease(ctx, out.is_err()).await;
    println!("{}", out?);
    Ok(())
}

/// The container's changes as a layer blob: its descriptor and diff ID.
async fn layer(
    ctx: &Ctx,
    snapshotter: &str,
    key: &str,
    base: &Resolved,
    lease: &Lease,
) -> Result<(Descriptor, String)> {
    let mut sn = SnapshotsClient::new(ctx.ch.clone());
    let info = sn
        .stat(ctx.req(sapi::StatSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
        }))
        .await?
        .into_inner()
        .info
        .unwrap_or_default();
    let upper = sn
        .mounts(ctx.req(sapi::MountsRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
        }))
        .await?
        .into_inner()
        .mounts;
    let view = format!("commit-view-{}", uuid::Uuid::new_v4().simple());
    let lower = if info.parent.is_empty() {
        Vec::new()
    } else {
        sn.view(with_lease(
            ctx.req(sapi::ViewSnapshotRequest {
                snapshotter: snapshotter.into(),
                key: view.clone(),
                parent: info.parent.clone(),
                labels: HashMap::new(),
            }),
            &lease.id,
        ))
        .await?
        .into_inner()
        .mounts
    };
    let docker = base
        .layers
        .first()
        .is_some_and(|l| l.media_type.starts_with("application/vnd.docker"));
    let d = DiffClient::new(ctx.ch.clone())
        .diff(with_lease(
            ctx.req(dapi::DiffRequest {
                left: lower,
                right: upper,
                media_type: if docker { DOCKER_LAYER } else { OCI_LAYER }.into(),
                r#ref: format!("commit-{}", uuid::Uuid::new_v4().simple()),
                labels: HashMap::new(),
                source_date_epoch: None,
            }),
            &lease.id,
        ))
        .await;
    if !info.parent.is_empty() {
        let _ = sn
            .remove(ctx.req(sapi::RemoveSnapshotRequest {
                snapshotter: snapshotter.into(),
                key: view,
            }))
            .await;
    }
    let d = d?.into_inner().diff.unwrap_or_default();
    let diff_id = ContentClient::new(ctx.ch.clone())
        .info(ctx.req(content::InfoRequest {
            digest: d.digest.clone(),
        }))
        .await?
        .into_inner()
        .info
        .unwrap_or_default()
        .labels
        .remove("containerd.io/uncompressed")
        .ok_or_else(|| {
            CtlError(format!(
                "layer {} has no uncompressed digest label",
                d.digest
            ))
        })?;
    Ok((d, diff_id))
}

/// The new image config: the layer appended, with its history entry.
pub fn new_config(
    base: &Value,
    diff_id: &str,
    now: &str,
    message: Option<&str>,
    author: Option<&str>,
) -> Value {
    let mut cfg = base.clone();
    if !cfg["rootfs"]["diff_ids"].is_array() {
        cfg["rootfs"] = json!({"type": "layers", "diff_ids": []});
    }
    if let Some(ids) = cfg["rootfs"]["diff_ids"].as_array_mut() {
        ids.push(json!(diff_id));
    }
    let mut h = json!({"created": now, "created_by": "berthctl commit"});
    if let Some(m) = message {
        h["comment"] = json!(m);
    }
    if let Some(a) = author {
        h["author"] = json!(a);
        cfg["author"] = json!(a);
    }
    match cfg["history"].as_array_mut() {
        Some(hs) => hs.push(h),
        None => cfg["history"] = json!([h]),
    }
    cfg["created"] = json!(now);
    cfg
}

#[allow(clippy::too_many_arguments)]
async fn image(
    ctx: &Ctx,
    a: &CommitArgs,
    name: Option<String>,
    snapshotter: &str,
    base: Resolved,
    layer: Descriptor,
    diff_id: String,
    lease: &Lease,
) -> Result<String> {
    let docker = layer.media_type == DOCKER_LAYER;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let cfg = new_config(
        &base.config,
        &diff_id,
        &now,
        a.message.as_deref(),
        a.author.as_deref(),
    );
    let cfg_bytes = serde_json::to_vec(&cfg)?;
    let cfg_desc = put(ctx, &cfg_bytes, HashMap::new(), lease).await?;
    let mut layers = base.layers.clone();
    layers.push(layer);
    let jl: Vec<Value> = layers
        .iter()
        .map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": if docker { DOCKER_MANIFEST } else { OCI_MANIFEST },
        "config": {"mediaType": if docker { DOCKER_CONFIG } else { OCI_CONFIG },
                   "digest": cfg_desc.0, "size": cfg_desc.1},
        "layers": jl,
    });
    let mut refs = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        cfg_desc.0.clone(),
    )]);
    for (i, l) in layers.iter().enumerate() {
        refs.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.clone(),
        );
    }
    let m_bytes = serde_json::to_vec(&manifest)?;
    let (m_digest, m_size) = put(ctx, &m_bytes, refs, lease).await?;
    // Unpacked now (the parent layers exist): run needs no unpack.
    let resolved = resolve_target(ctx, &base.name, &m_digest, None).await?;
    ensure_unpacked(ctx, &resolved, snapshotter, lease).await?;
    let target = Descriptor {
        media_type: manifest["mediaType"].as_str().unwrap_or_default().into(),
        digest: m_digest.clone(),
        size: m_size,
        annotations: HashMap::new(),
    };
    let name = name.unwrap_or_else(|| dangling_name(&m_digest));
    set_image(ctx, &name, target).await?;
    Ok(m_digest)
}

/// Names `target` `name`; an image of that name it replaces becomes
/// dangling (as docker leaves it) unless another name still holds it.
async fn set_image(ctx: &Ctx, name: &str, target: Descriptor) -> Result<()> {
    let mut ic = ImagesClient::new(ctx.ch.clone());
    let img = iapi::Image {
        name: name.into(),
        target: Some(target),
        ..Default::default()
    };
    let all = ic
        .list(ctx.req(iapi::ListImagesRequest { filters: vec![] }))
        .await?
        .into_inner()
        .images;
    let old = all.iter().find(|i| i.name == name).cloned();
    match old {
        None => {
            ic.create(ctx.req(iapi::CreateImageRequest {
                image: Some(img),
                ..Default::default()
            }))
            .await?;
        }
        Some(old) => {
            ic.update(ctx.req(iapi::UpdateImageRequest {
                image: Some(img),
                ..Default::default()
            }))
            .await?;
            let od = old.target.clone().unwrap_or_default();
            let held = all.iter().any(|i| {
                i.name != name && i.target.as_ref().is_some_and(|t| t.digest == od.digest)
            });
            if !held && !is_dangling(name) && !od.digest.is_empty() {
                ic.create(ctx.req(iapi::CreateImageRequest {
                    image: Some(iapi::Image {
                        name: dangling_name(&od.digest),
                        target: Some(od),
                        labels: old.labels,
                        ..Default::default()
                    }),
                    ..Default::default()
                }))
                .await?;
            }
        }
    }
    Ok(())
}

/// Stores a small blob under the lease; its digest and size.
async fn put(
    ctx: &Ctx,
    data: &[u8],
    labels: HashMap<String, String>,
    lease: &Lease,
) -> Result<(String, i64)> {
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)));
    let size = i64::try_from(data.len())?;
    let msgs = vec![
        content::WriteContentRequest {
            action: content::WriteAction::Stat as i32,
            r#ref: format!("commit-{digest}"),
            total: size,
            expected: digest.clone(),
            ..Default::default()
        },
        content::WriteContentRequest {
            action: content::WriteAction::Commit as i32,
            r#ref: format!("commit-{digest}"),
            total: size,
            expected: digest.clone(),
            offset: 0,
            data: data.to_vec(),
            labels: labels.clone(),
        },
    ];
    let r = ContentClient::new(ctx.ch.clone())
        .write(with_lease(ctx.req(tokio_stream::iter(msgs)), &lease.id))
        .await;
    match r {
        Ok(r) => {
            let mut s = r.into_inner();
            while let Some(m) = s.next().await {
                m?;
            }
        }
        // The same blob is already stored: give it the labels.
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            ContentClient::new(ctx.ch.clone())
                .update(ctx.req(content::UpdateRequest {
                    update_mask: Some(crate::ctx::label_mask(&labels)),
                    info: Some(content::Info {
                        digest: digest.clone(),
                        labels,
                        ..Default::default()
                    }),
                }))
                .await?;
        }
        Err(s) => return Err(s.into()),
    }
    Ok((digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_gets_the_layer_and_history() {
        let base = json!({"architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": ["sha256:a"]},
                          "history": [{"created_by": "ADD"}], "config": {"Cmd": ["sh"]}});
        let c = new_config(
            &base,
            "sha256:b",
            "2026-01-01T00:00:00Z",
            Some("msg"),
            Some("me"),
        );
        assert_eq!(c["rootfs"]["diff_ids"], json!(["sha256:a", "sha256:b"]));
        assert_eq!(c["history"][1]["comment"], "msg");
        assert_eq!(c["history"][1]["author"], "me");
        assert_eq!(c["author"], "me");
        assert_eq!(c["config"]["Cmd"], json!(["sh"]));
        assert_eq!(c["created"], "2026-01-01T00:00:00Z");
        let c = new_config(&json!({}), "sha256:b", "t", None, None);
        assert_eq!(c["rootfs"]["diff_ids"], json!(["sha256:b"]));
        assert_eq!(c["history"].as_array().unwrap().len(), 1);
        assert!(c["history"][0].get("comment").is_none());
    }
}
