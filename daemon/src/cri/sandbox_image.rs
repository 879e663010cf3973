//! The sandbox image: pulled into `k8s.io` when missing, as PullImage pulls
//! (a managed, pinned CRI image; no credentials: the kubelet has none for
//! it either), unpacked into the default snapshotter, and its config read
//! for the infra process.

use super::CriService;
use super::store::NAMESPACE;
use crate::error::{Error, Result};
use crate::images::oci::Platform;
use crate::snapshots::DEFAULT_SNAPSHOTTER;
use crate::types::Ctx;
use serde_json::Value;

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
        let img = match self.resolve_image(reference) {
            Ok(i) => i,
            Err(e) if e.is_not_found() => {
                tracing::info!(image = %reference, "CRI: pulling the sandbox image");
                self.cri_images
                    .pull(reference, None)
                    .await
                    .map_err(|e| e.context(format!("pull the sandbox image {reference}")))?;
                self.resolve_image(reference)?
            }
            Err(e) => return Err(e),
        };
        let unpacker = self.images.unpacker.clone();
        let (target, name) = (img.image.target.clone(), img.name.clone());
        let chain_id = tokio::task::spawn_blocking(move || {
            unpacker
                .unpack(
                    &Ctx::new(NAMESPACE),
                    &target,
                    DEFAULT_SNAPSHOTTER,
                    &Platform::host(),
                )
                .map_err(|e| e.context(format!("unpack image {name}")))
        })
        .await
        .map_err(|e| Error::internal(format!("image task: {e}")))??;
        Ok(ReadyImage {
            name: img.name,
            config: img.image.config["config"].clone(),
            chain_id,
        })
    }
}
