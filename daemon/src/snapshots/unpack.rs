//! Unpacking an image into a snapshotter: each layer becomes a committed
//! snapshot named by its chain ID. A chain ID that already exists is
//! skipped; concurrent unpacks of the same layer wait for one another
//! instead of doing the work twice. The image's config blob then records the
//! top snapshot with `containerd.io/gc.ref.snapshot.<snapshotter>`, which
//! keeps the chain alive for as long as the image is.
//!
//! Reads blobs from `content`, writes through `snapshots` and `diff`.

use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::images::oci::{self, Platform};
use crate::snapshots::Snapshots;
use crate::types::{Ctx, Descriptor, Digest, Labels};
use sha2::Digest as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Chain IDs being unpacked right now, each with a lock its unpacker holds.
#[derive(Default)]
struct InFlight(Mutex<HashMap<String, Arc<Mutex<()>>>>);

impl InFlight {
    fn lock(&self, key: &str) -> Arc<Mutex<()>> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(key.to_string()).or_default().clone()
    }

    fn done(&self, key: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = m.get(key)
            && Arc::strong_count(l) <= 1
        {
            m.remove(key);
        }
    }
}

/// The chain IDs of a list of diff IDs.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let h = sha2::Sha256::digest(format!("{prev} {d}").as_bytes());
                Digest::from_hash(&h).to_string()
            }
        };
        out.push(next);
    }
    out
}

/// Unpacks images into snapshots; one per daemon, so concurrent unpacks of
/// a layer share the work.
pub struct Unpacker {
    content: Arc<ContentStore>,
    snapshots: Arc<Snapshots>,
    /// Where layers that need a mount are mounted while applied.
    tmp: PathBuf,
    in_flight: InFlight,
}

impl Unpacker {
    pub fn new(content: Arc<ContentStore>, snapshots: Arc<Snapshots>, tmp: PathBuf) -> Unpacker {
        Unpacker {
            content,
            snapshots,
            tmp,
            in_flight: InFlight::default(),
        }
    }

    /// Unpacks the image `target` for `platform` into snapshotter `sn`;
    /// returns the top chain ID.
    pub fn unpack(
        &self,
        ctx: &Ctx,
        target: &Descriptor,
        sn: &str,
        platform: &Platform,
    ) -> Result<String> {
        self.unpack_with(ctx, target, sn, platform, &|_| Ok(()))
    }

    /// [`unpack`](Self::unpack) for layers still arriving: `ready(layer)` returns once that
    /// layer's blob is in the content store (or fails the unpack). Layers whose
    /// snapshot exists are never waited for.
    pub fn unpack_with(
        &self,
        ctx: &Ctx,
        target: &Descriptor,
        sn: &str,
        platform: &Platform,
        ready: &dyn Fn(&Descriptor) -> Result<()>,
    ) -> Result<String> {
        let (sn, _) = self.snapshots.get(sn)?;
        let (manifest, config, layers) =
            oci::resolve_manifest(&self.content, &ctx.ns, target, platform)?;
        let cfg_digest = Digest::parse(&config.digest)?;
        let cfg: serde_json::Value =
            serde_json::from_slice(&self.content.read_all(&ctx.ns, &cfg_digest)?).map_err(|e| {
                Error::invalid(format!("image config {cfg_digest} is not JSON: {e}"))
            })?;
        let diff_ids: Vec<String> = cfg
            .pointer("/rootfs/diff_ids")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if diff_ids.len() != layers.len() {
            return Err(Error::invalid(format!(
                "image manifest {} has {} layers but its config lists {} diff IDs",
                manifest.digest,
                layers.len(),
                diff_ids.len()
            )));
        }
        let chains = chain_ids(&diff_ids);
        let tmp = &self.tmp;
        for (i, layer) in layers.iter().enumerate() {
            let chain = &chains[i];
            if self.snapshots.stat(&ctx.ns, &sn, chain).is_ok() {
                continue;
            }
            let key = format!("{sn}/{}/{chain}", ctx.ns);
            let lock = self.in_flight.lock(&key);
            let outcome = {
                let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
                if self.snapshots.stat(&ctx.ns, &sn, chain).is_ok() {
                    Ok(())
                } else if let Err(e) = ready(layer) {
                    Err(e)
                } else {
                    let parent = if i == 0 { "" } else { chains[i - 1].as_str() };
                    self.unpack_layer(ctx, &sn, layer, &diff_ids[i], chain, parent, tmp)
                        .map_err(|e| {
                            e.context(format!(
                                "unpack layer {i} ({}) of {}",
                                layer.digest, manifest.digest
                            ))
                        })
                }
            };
            drop(lock);
            self.in_flight.done(&key);
            outcome?;
        }
        let top = chains
            .last()
            .cloned()
            .ok_or_else(|| Error::invalid("image has no layers to unpack"))?;
        let label = format!("containerd.io/gc.ref.snapshot.{sn}");
        let labels = Labels::from([(label.clone(), top.clone())]);
        self.content
            .update(&ctx.ns, &cfg_digest, &labels, &[format!("labels.{label}")])?;
        Ok(top)
    }

    #[allow(clippy::too_many_arguments)]
    fn unpack_layer(
        &self,
        ctx: &Ctx,
        sn: &str,
        layer: &Descriptor,
        diff_id: &str,
        chain: &str,
        parent: &str,
        tmp: &Path,
    ) -> Result<()> {
        let key = format!("extract-{} {chain}", uuid::Uuid::new_v4().simple());
        let labels = Labels::from([("containerd.io/snapshot.ref".to_string(), chain.to_string())]);
        let mounts = self
            .snapshots
            .prepare(ctx, sn, &key, parent, labels.clone())?;
        let applied =
            crate::snapshots::diff::apply_blob(&self.content, &ctx.ns, layer, &mounts, tmp);
        let result = applied.and_then(|a| {
            if a.diff_id.as_str() != diff_id {
                return Err(Error::invalid(format!(
                    "layer {} unpacks to diff ID {}, but the image config says {diff_id}",
                    layer.digest, a.diff_id
                )));
            }
            match self.snapshots.commit(ctx, sn, chain, &key, labels) {
                // Someone else committed it meanwhile (another process's client).
                Err(e) if e.is_already_exists() => Ok(()),
                other => other,
            }
        });
        if result.is_err() || self.snapshots.stat(&ctx.ns, sn, &key).is_ok() {
            let _ = self.snapshots.remove(&ctx.ns, sn, &key);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::chain_ids;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        let want = crate::types::Digest::of(format!("{a} {b}").as_bytes());
        assert_eq!(c[1], want.to_string());
    }
}
