//! `berthctl images export` without a Transfer service: collects the blobs
//! the images need for the asked platforms through `Content.Info`/`Read`
//! and writes the OCI layout tar (with a docker-compatible manifest.json)
//! berthd's own export writes.

use super::upload::present;
use crate::cli::ExportArgs;
use crate::ctx::Ctx;
use crate::error::CtlError;
use crate::image::{host_platform, platform, platform_matches, read_blob, read_json};
use anyhow::{Result, bail};
use berth_proto::archive::{self as rules, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, media};
use berth_proto::services::content::v1 as content;
use berth_proto::services::content::v1::content_client::ContentClient;
use berth_proto::services::images::v1 as images;
use berth_proto::services::images::v1::images_client::ImagesClient;
use serde_json::json;
use std::collections::HashSet;
use std::io::Write;
use tokio_stream::StreamExt;

/// What an export writes: blobs in order, the index and docker entries.
#[derive(Default)]
struct Collected {
    seen: HashSet<String>,
    blobs: Vec<(String, i64)>,
    /// (config, layers) of each manifest reached.
    manifests: Vec<(String, Vec<String>)>,
}

impl Collected {
    async fn add(&mut self, ctx: &Ctx, digest: &str, whose: &str) -> Result<()> {
        if self.seen.contains(digest) {
            return Ok(());
        }
        let info = ContentClient::new(ctx.ch.clone())
            .info(ctx.req(content::InfoRequest {
                digest: digest.to_string(),
            }))
            .await
            .map_err(|s| {
                if s.code() == tonic::Code::NotFound {
                    CtlError(format!(
                        "blob {digest} of {whose} is not in the content store"
                    ))
                    .into()
                } else {
                    anyhow::Error::from(s)
                }
            })?
            .into_inner()
            .info
            .unwrap_or_default();
        self.seen.insert(digest.to_string());
        self.blobs.push((digest.to_string(), info.size));
        Ok(())
    }

    async fn collect(
        &mut self,
        ctx: &Ctx,
        digest: &str,
        platforms: &[String],
        all: bool,
    ) -> Result<()> {
        self.add(ctx, digest, "the image").await?;
        let v = read_json(ctx, digest).await?;
        if let Some(children) = v["manifests"].as_array() {
            let mut any = false;
            for c in children {
                let d = c["digest"].as_str().unwrap_or_default();
                let wanted = all
                    || platforms
                        .iter()
                        .any(|p| platform_matches(p, &c["platform"]));
                // With every platform asked for, take those present.
                if wanted && (!all || present(ctx, d).await?) {
                    Box::pin(self.collect(ctx, d, platforms, all)).await?;
                    any = true;
                }
            }
            if !any {
                bail!(CtlError(format!(
                    "index {digest} has no manifest for the requested platforms"
                )));
            }
            return Ok(());
        }
        let config = v["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let whose = format!("manifest {digest}");
        self.add(ctx, &config, &whose).await?;
        let mut layers = Vec::new();
        for l in v["layers"].as_array().into_iter().flatten() {
            let d = l["digest"].as_str().unwrap_or_default();
            self.add(ctx, d, &whose).await?;
            layers.push(d.to_string());
        }
        self.manifests.push((config, layers));
        Ok(())
    }
}

/// A ustar header for a regular file or directory at `path`.
fn header(path: &str, size: u64, dir: bool) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o444 });
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_cksum();
    Ok(h)
}

fn pad(out: &mut dyn Write, size: u64) -> std::io::Result<()> {
    let rest = (512 - size % 512) % 512;
    out.write_all(&vec![0u8; rest as usize])
}

fn add_file(out: &mut dyn Write, path: &str, data: &[u8]) -> Result<()> {
    out.write_all(header(path, data.len() as u64, false)?.as_bytes())?;
    out.write_all(data)?;
    pad(out, data.len() as u64)?;
    Ok(())
}

/// `berthctl images export` without a Transfer service: the same OCI
/// layout (with a docker-compatible manifest.json) berthd writes.
pub(crate) async fn export(ctx: &Ctx, a: &ExportArgs, out: &mut dyn Write) -> Result<()> {
    let platforms = if a.platform.is_empty() {
        vec![host_platform()]
    } else {
        for p in &a.platform {
            platform(p)?;
        }
        a.platform.clone()
    };
    let mut ic = ImagesClient::new(ctx.ch.clone());
    let mut c = Collected::default();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for name in &a.names {
        let img = ic
            .get(ctx.req(images::GetImageRequest { name: name.clone() }))
            .await
            .map_err(|s| CtlError(format!("export {name}: {}", crate::error::status_error(&s))))?
            .into_inner()
            .image
            .unwrap_or_default();
        let t = img.target.unwrap_or_default();
        let before = c.manifests.len();
        c.collect(ctx, &t.digest, &platforms, a.all_platforms)
            .await
            .map_err(|e| CtlError(format!("export {name}: {e}")))?;
        let mut annotations = json!({ANNOTATION_IMAGE_NAME: name});
        if let Some(tag) = rules::ref_name(name) {
            annotations[ANNOTATION_REF_NAME] = json!(tag);
        }
        index.push(
            json!({"mediaType": t.media_type, "digest": t.digest, "size": t.size,
                          "annotations": annotations}),
        );
        if let [(config, layers)] = &c.manifests[before..] {
            let layers: Vec<String> = layers.iter().map(|l| rules::blob_path(l)).collect();
            let mut entry = json!({"Config": rules::blob_path(config), "Layers": layers});
            if let Some(tags) = rules::repo_tags(name) {
                entry["RepoTags"] = json!(tags);
            }
            docker.push(entry);
        }
    }
    for d in ["blobs/", "blobs/sha256/"] {
        out.write_all(header(d, 0, true)?.as_bytes())?;
    }
    add_file(out, "oci-layout", rules::OCI_LAYOUT)?;
    for (digest, size) in &c.blobs {
        let path = rules::blob_path(digest);
        out.write_all(header(&path, *size as u64, false)?.as_bytes())?;
        let mut s = read_blob(ctx, digest).await?;
        let mut n = 0u64;
        while let Some(chunk) = s.next().await {
            let chunk = chunk?;
            n += chunk.data.len() as u64;
            if n > *size as u64 {
                break;
            }
            out.write_all(&chunk.data)?;
        }
        if n != *size as u64 {
            bail!(CtlError(format!(
                "blob {digest} read back {n} bytes, but the content store says {size}"
            )));
        }
        pad(out, n)?;
    }
    let index_json = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": index,
    }))?;
    add_file(out, "index.json", &index_json)?;
    if !a.skip_manifest_json && !docker.is_empty() {
        add_file(out, "manifest.json", &serde_json::to_vec(&docker)?)?;
    }
    // The end of a tar: two zero blocks.
    out.write_all(&[0u8; 1024])?;
    out.flush()?;
    for name in &a.names {
        let line = format!("exported: {name}");
        if a.file.as_os_str() == "-" {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    Ok(())
}
