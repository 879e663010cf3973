//! The diff service: applying layers to snapshot mounts (`apply`, confined
//! by `target`, with `attrs` and `stream`), and computing a layer from two
//! mount sets (`compute`). May use `content` and `images::oci`.

pub mod apply;
mod attrs;
pub mod compute;
mod stream;
mod target;

use crate::content::ContentStore;
use crate::error::{Error, Result, io_err};
use crate::images::oci::media;
use crate::types::{Ctx, Descriptor, Digest, Labels};
use apply::{Applied, Whiteouts};
use berth_snapshotter::Mount;
use berth_snapshotter::mount::TempMount;
use sha2::Digest as _;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// Label containerd puts on compressed layers naming their diff ID.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// True for layer media types the applier reads.
pub fn is_layer(mt: &str) -> bool {
    matches!(
        mt,
        media::OCI_LAYER
            | media::OCI_LAYER_GZIP
            | media::OCI_LAYER_ZSTD
            | media::DOCKER_LAYER
            | media::DOCKER_LAYER_GZIP
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

/// Applies a layer stream to what `mounts` describe. A single bind mount
/// is written in place, an overlay's upper directory directly (with overlay
/// whiteouts); anything else is mounted under `tmp` first.
pub fn apply_to_mounts(layer: impl Read + Send, mounts: &[Mount], tmp: &Path) -> Result<Applied> {
    if let [m] = mounts {
        if m.kind == "bind" {
            return apply::apply(Path::new(&m.source), layer, Whiteouts::Delete);
        }
        if m.kind == "overlay"
            && let Some(upper) = m.options.iter().find_map(|o| o.strip_prefix("upperdir="))
        {
            // lowerdir= lists the parent layers topmost first.
            let lowers: Vec<&Path> = m
                .options
                .iter()
                .find_map(|o| o.strip_prefix("lowerdir="))
                .map(|l| l.split(':').map(Path::new).collect())
                .unwrap_or_default();
            return apply::apply_over(Path::new(upper), &lowers, layer, Whiteouts::Overlay);
        }
    }
    let mnt = TempMount::new(mounts, Some(tmp)).map_err(|e| Error::new(e.kind(), e.message()))?;
    apply::apply(mnt.path(), layer, Whiteouts::Delete)
}

/// Applies the content-store layer `desc` to `mounts`.
pub fn apply_blob(
    content: &ContentStore,
    ns: &str,
    desc: &Descriptor,
    mounts: &[Mount],
    tmp: &Path,
) -> Result<Applied> {
    if !is_layer(&desc.media_type) {
        return Err(Error::unimplemented(format!(
            "cannot apply media type {:?}: not a layer type this daemon knows",
            desc.media_type
        )));
    }
    let d = Digest::parse(&desc.digest)?;
    let (f, _) = content.open_blob(ns, &d)?;
    apply_to_mounts(std::io::BufReader::with_capacity(1 << 20, f), mounts, tmp)
        .map_err(|e| e.context(format!("apply layer {d}")))
}

/// An `io::Write` over a content upload that also hashes what it sees.
struct Upload {
    w: crate::content::Writer,
}

impl std::io::Write for Upload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w
            .write(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct HashWrite<W> {
    inner: W,
    hash: sha2::Sha256,
}

impl<W: std::io::Write> std::io::Write for HashWrite<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Computes the layer from `lower` to `upper` into the content store as
/// `media_type` (gzip unless told otherwise); returns its descriptor with
/// the diff ID label.
#[allow(clippy::too_many_arguments)]
pub fn diff_mounts(
    content: &Arc<ContentStore>,
    ctx: &Ctx,
    lower: &[Mount],
    upper: &[Mount],
    media_type: &str,
    reference: &str,
    mut labels: Labels,
    tmp: &Path,
) -> Result<Descriptor> {
    let mt = if media_type.is_empty() {
        media::OCI_LAYER_GZIP
    } else {
        media_type
    };
    if !is_layer(mt) {
        return Err(Error::unimplemented(format!(
            "cannot write a diff as {mt:?}: use an OCI or Docker layer media type"
        )));
    }
    // Snapshots are mounted below: owner-only.
    berth_snapshotter::mount::private::dir(tmp, berth_snapshotter::mount::private::OWNER_ONLY)
        .map_err(|e| io_err(format!("create {}", tmp.display()), e))?;
    let empty = tempfile::Builder::new()
        .prefix("empty-")
        .tempdir_in(tmp)
        .map_err(|e| io_err("create empty lower", e))?;
    let lmnt = if lower.is_empty() {
        None
    } else {
        Some(TempMount::new(&ro(lower), Some(tmp)).map_err(|e| Error::new(e.kind(), e.message()))?)
    };
    let umnt =
        TempMount::new(&ro(upper), Some(tmp)).map_err(|e| Error::new(e.kind(), e.message()))?;
    let lpath = lmnt.as_ref().map_or(empty.path(), |m| m.path());
    let reference = if reference.is_empty() {
        format!("diff-{}", uuid::Uuid::new_v4())
    } else {
        reference.to_string()
    };
    let writer = content.writer(ctx, &reference, 0, None)?;
    let mut upload = Upload { w: writer };
    upload.w.truncate()?;
    let diff_id = {
        let compressed: Box<dyn std::io::Write + '_> = if mt.ends_with("gzip") {
            Box::new(flate2::write::GzEncoder::new(
                &mut upload,
                flate2::Compression::default(),
            ))
        } else if mt.ends_with("zstd") {
            Box::new(
                zstd::stream::write::Encoder::new(&mut upload, 3)
                    .map_err(|e| io_err("start zstd", e))?
                    .auto_finish(),
            )
        } else {
            Box::new(&mut upload)
        };
        let hw = HashWrite {
            inner: compressed,
            hash: sha2::Sha256::new(),
        };
        let mut hw = compute::diff_trees(lpath, umnt.path(), hw)?;
        std::io::Write::flush(&mut hw).map_err(|e| io_err("finish layer", e))?;
        let d = Digest::from_hash(&hw.hash.clone().finalize());
        drop(hw); // finishes the compressor
        d
    };
    let size = upload.w.status().offset;
    labels.insert(LABEL_UNCOMPRESSED.to_string(), diff_id.to_string());
    let (digest, _) = upload.w.commit(size, None, labels)?;
    Ok(Descriptor {
        media_type: mt.to_string(),
        digest: digest.to_string(),
        size,
        annotations: HashMap::new(),
    })
}

fn ro(mounts: &[Mount]) -> Vec<Mount> {
    mounts
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.options.retain(|o| o != "rw");
            if !m.options.iter().any(|o| o == "ro") {
                m.options.push("ro".into());
            }
            m
        })
        .collect()
}
