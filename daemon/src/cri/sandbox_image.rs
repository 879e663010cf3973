//! The sandbox image: pulled into `k8s.io` when missing (a plain pull, no
//! credentials: the kubelet has none for it either), unpacked into the
//! default snapshotter, and its config read for the infra process.

use super::{CriService, NAMESPACE};
use crate::error::{Error, Result};
use crate::images::oci::{self, Platform};
use crate::snapshots::DEFAULT_SNAPSHOTTER;
use crate::transfer::registry;
use crate::types::{Ctx, Digest};
use serde_json::Value;
use std::sync::Arc;

/// An image ready to make a rootfs from.
pub struct ReadyImage {
    /// The stored name (normalized reference).
    pub name: String,
    /// The image config (`config` object of the OCI image config).
    pub config: Value,
    /// The top chain ID: the parent of a new rootfs snapshot.
    pub chain_id: String,
}

impl CriService {
    /// `reference` in `k8s.io`, pulled if missing, unpacked.
    pub async fn ensure_image(&self, reference: &str) -> Result<ReadyImage> {
        let name = berth_proto::reference::normalize(reference)
            .map_err(|e| Error::invalid(format!("image {reference:?}: {e}")))?;
        let img = match self.images.images.get(NAMESPACE, &name) {
            Ok(i) => i,
            Err(e) if e.is_not_found() => {
                tracing::info!(image = %name, "CRI: pulling the sandbox image");
                registry::pull(
                    &self.images,
                    &self.registry,
                    NAMESPACE,
                    registry::PullRequest {
                        reference: name.clone(),
                        unpack: vec![(None, DEFAULT_SNAPSHOTTER.to_string())],
                        ..Default::default()
                    },
                    None,
                    Arc::new(|_| {}),
                )
                .await
                .map_err(|e| e.context(format!("pull the sandbox image {name}")))?
            }
            Err(e) => return Err(e),
        };
        let stores = self.images.clone();
        let target = img.record.target.clone();
        let n = name.clone();
        tokio::task::spawn_blocking(move || {
            let platform = Platform::host();
            let ctx = Ctx::new(NAMESPACE);
            let chain_id = stores
                .unpacker
                .unpack(&ctx, &target, DEFAULT_SNAPSHOTTER, &platform)
                .map_err(|e| e.context(format!("unpack image {n}")))?;
            let (_, cfg_desc, _) =
                oci::resolve_manifest(&stores.content, NAMESPACE, &target, &platform)?;
            let raw = stores
                .content
                .read_all(NAMESPACE, &Digest::parse(&cfg_desc.digest)?)?;
            let cfg: Value = serde_json::from_slice(&raw)
                .map_err(|e| Error::invalid(format!("image {n}: config is not JSON: {e}")))?;
            Ok(ReadyImage {
                name: n,
                config: cfg.get("config").cloned().unwrap_or(Value::Null),
                chain_id,
            })
        })
        .await
        .map_err(|e| Error::internal(format!("image task: {e}")))?
    }
}
