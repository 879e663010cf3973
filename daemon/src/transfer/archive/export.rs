//! Export: an OCI image-layout tar with a docker-compatible manifest.json.

use super::layout::{DockerEntry, LayoutDescriptor};
use crate::content::ContentStore;
use crate::error::{Error, Result, io_err};
use crate::images::Image;
use crate::images::oci::{self, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Node, Platform, media};
use crate::types::{Descriptor, Digest};
use berth_proto::archive as rules;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::Arc;

/// How to export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Platforms to include (default: the host's).
    pub platforms: Vec<Platform>,
    /// Include every platform whose blobs are present.
    pub all_platforms: bool,
    /// Leave out the docker-compatible manifest.json.
    pub skip_docker_manifest: bool,
}

/// Writes `images` as an OCI image layout tar (with a docker-compatible
/// manifest.json, so `docker load` accepts it too). Blocking I/O.
pub fn export(
    content: &Arc<ContentStore>,
    ns: &str,
    images: &[Image],
    w: &mut dyn Write,
    opts: &ExportOptions,
) -> Result<()> {
    let platforms = if opts.platforms.is_empty() {
        vec![Platform::host()]
    } else {
        opts.platforms.clone()
    };
    let mut blobs: BTreeMap<String, ()> = BTreeMap::new();
    let mut order: Vec<Digest> = Vec::new();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for img in images {
        let t = &img.record.target;
        let mut manifests = Vec::new();
        collect(
            content,
            ns,
            t,
            &platforms,
            opts.all_platforms,
            &mut blobs,
            &mut order,
            &mut manifests,
        )
        .map_err(|e| e.context(format!("export {}", img.name)))?;
        let mut annotations =
            HashMap::from([(ANNOTATION_IMAGE_NAME.to_string(), img.name.clone())]);
        if let Some(tag) = rules::ref_name(&img.name) {
            annotations.insert(ANNOTATION_REF_NAME.to_string(), tag);
        }
        index.push(LayoutDescriptor {
            media_type: t.media_type.clone(),
            digest: t.digest.clone(),
            size: t.size,
            annotations,
            platform: None,
        });
        if let [(config, layers)] = manifests.as_slice() {
            docker.push(DockerEntry {
                config: rules::blob_path(config.as_str()),
                repo_tags: rules::repo_tags(&img.name),
                layers: layers
                    .iter()
                    .map(|l| rules::blob_path(l.as_str()))
                    .collect(),
            });
        }
    }
    let mut tar = tar::Builder::new(w);
    let add =
        |tar: &mut tar::Builder<&mut dyn Write>, path: &str, size: u64, data: &mut dyn Read| {
            let mut h = tar::Header::new_ustar();
            h.set_size(size);
            h.set_mode(0o444);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, path, data)
                .map_err(|e| io_err(format!("export: write {path}"), e))
        };
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_mtime(0);
    dir.set_size(0);
    for d in ["blobs/", "blobs/sha256/"] {
        tar.append_data(&mut dir.clone(), d, std::io::empty())
            .map_err(|e| io_err("export: write directory", e))?;
    }
    let layout = rules::OCI_LAYOUT;
    add(
        &mut tar,
        "oci-layout",
        layout.len() as u64,
        &mut &layout[..],
    )?;
    for d in &order {
        let (mut f, size) = content.open_blob(ns, d)?;
        add(&mut tar, &rules::blob_path(d.as_str()), size as u64, &mut f)?;
    }
    let index_json = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": index,
    }))
    .map_err(|e| Error::internal(e.to_string()))?;
    add(
        &mut tar,
        "index.json",
        index_json.len() as u64,
        &mut index_json.as_slice(),
    )?;
    if !opts.skip_docker_manifest && !docker.is_empty() {
        let m = serde_json::to_vec(&docker).map_err(|e| Error::internal(e.to_string()))?;
        add(&mut tar, "manifest.json", m.len() as u64, &mut m.as_slice())?;
    }
    tar.into_inner()
        .and_then(|w| w.flush())
        .map_err(|e| io_err("export: finish archive", e))
}

#[allow(clippy::too_many_arguments)]
fn collect(
    content: &Arc<ContentStore>,
    ns: &str,
    desc: &Descriptor,
    platforms: &[Platform],
    all: bool,
    seen: &mut BTreeMap<String, ()>,
    order: &mut Vec<Digest>,
    manifests: &mut Vec<(Digest, Vec<Digest>)>,
) -> Result<()> {
    let digest = Digest::parse(&desc.digest)?;
    let data = content.read_all(ns, &digest)?;
    if seen.insert(digest.to_string(), ()).is_none() {
        order.push(digest.clone());
    }
    match oci::parse(&desc.media_type, &data)? {
        Node::Index(children) => {
            let mut any = false;
            for c in &children {
                let wanted = all
                    || c.platform
                        .as_ref()
                        .is_none_or(|p| platforms.iter().any(|want| want.matches(p)));
                let present = Digest::parse(&c.desc.digest)
                    .ok()
                    .is_some_and(|d| content.info(ns, &d).is_ok());
                // With every platform asked for, take those we have.
                if wanted && (present || !all) {
                    collect(content, ns, &c.desc, platforms, all, seen, order, manifests)?;
                    any = true;
                }
            }
            if !any {
                return Err(Error::not_found(format!(
                    "index {digest} has no manifest for the requested platforms"
                )));
            }
        }
        Node::Manifest { config, layers } => {
            let mut ls = Vec::new();
            let cfg = Digest::parse(&config.digest)?;
            for d in std::iter::once(&config).chain(layers.iter()) {
                let dg = Digest::parse(&d.digest)?;
                content.info(ns, &dg).map_err(|_| {
                    Error::not_found(format!(
                        "blob {dg} of manifest {digest} is not in the content store"
                    ))
                })?;
                if seen.insert(dg.to_string(), ()).is_none() {
                    order.push(dg.clone());
                }
                if dg != cfg {
                    ls.push(dg);
                }
            }
            manifests.push((cfg, ls));
        }
    }
    Ok(())
}
