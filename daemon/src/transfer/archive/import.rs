//! Import: stream the tar once into the content store under a temporary
//! lease, then check completeness, unpack, and create the images.

use super::layout::{DockerEntry, LayoutIndex};
use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::images::oci::{self, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Node, Platform, media};
use crate::images::{Image, ImageRecord};
use crate::metadata::leases::LABEL_EXPIRE;
use crate::transfer::stores::ImageStores;
use crate::types::{Ctx, Descriptor, Digest, Labels};
use berth_proto::archive::{self as rules, ArchiveError, Blob, Members, NameRules};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Name prefix for OCI tags (`<base>:<tag>`); only images under it are imported.
    pub base_name: Option<String>,
    /// Also keep the archive's whole index under this name.
    pub index_name: Option<String>,
    /// Also create `<name>@<digest>` images.
    pub digests: bool,
    /// Platform whose blobs must be present (default: the host's).
    pub platform: Option<Platform>,
    /// Require the blobs of every platform.
    pub all_platforms: bool,
    /// Labels for the created images.
    pub labels: Labels,
    /// Unpack each image into these snapshotters (platform: the one chosen
    /// for import when absent).
    pub unpack: Vec<(Option<Platform>, String)>,
}

/// What an import reports as it goes.
pub type Progress<'a> = &'a mut (dyn FnMut(&str, &str) + Send);

/// Records the first bytes read through it (to tell gzip from plain tar)
/// and counts them (to catch a member cut short by a truncated archive).
struct Sniff<'a, R: Read> {
    inner: &'a mut R,
    magic: [u8; 4],
    count: u64,
}

impl<R: Read> Read for Sniff<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let seen = self.count.min(4) as usize;
        let take = (4 - seen).min(n);
        self.magic[seen..seen + take].copy_from_slice(&buf[..take]);
        self.count += n as u64;
        Ok(n)
    }
}

fn malformed(e: impl std::fmt::Display) -> Error {
    ArchiveError::Malformed(e.to_string()).into()
}

/// Imports an archive read from `reader` into `ctx`'s namespace; returns the
/// images created or updated. Runs blocking I/O: call from a blocking task.
pub fn import(
    stores: &ImageStores,
    ctx: &Ctx,
    reader: &mut dyn Read,
    opts: &ImportOptions,
    progress: Progress<'_>,
) -> Result<Vec<Image>> {
    let lease = format!("import-{}", uuid::Uuid::new_v4());
    let expire = chrono::Utc::now() + chrono::Duration::hours(1);
    stores.leases.create(
        &ctx.ns,
        &lease,
        Labels::from([(LABEL_EXPIRE.to_string(), expire.to_rfc3339())]),
    )?;
    let lctx = ctx.clone().with_lease(Some(lease.clone()));
    let out = import_leased(stores, &lctx, reader, opts, progress);
    // The images (if any) now hold what they need; the rest is collected.
    let rt = tokio::runtime::Handle::current();
    let sync = out.is_err();
    if let Err(e) = rt.block_on(stores.leases.delete(&ctx.ns, &lease, sync)) {
        tracing::warn!("import: dropping lease {lease}: {}", e.chain());
    }
    out
}

fn import_leased(
    stores: &ImageStores,
    ctx: &Ctx,
    reader: &mut dyn Read,
    opts: &ImportOptions,
    progress: Progress<'_>,
) -> Result<Vec<Image>> {
    let mut archive = tar::Archive::new(reader);
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    let mut members = Members::default();
    let mut n = 0usize;
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let raw = entry
            .path()
            .map_err(malformed)?
            .to_string_lossy()
            .to_string();
        let path = rules::clean_path(&raw);
        let et = entry.header().entry_type();
        if et.is_symlink() || et.is_hard_link() {
            // docker save links duplicate layers to one copy.
            if let Some(target) = entry.link_name().map_err(malformed)? {
                members.add_link(path, &target.to_string_lossy(), et.is_symlink());
            }
            continue;
        }
        if !et.is_file() {
            continue;
        }
        if rules::is_metadata(&path) {
            small.insert(path.clone(), rules::read_metadata(&mut entry, &path)?);
            continue;
        }
        let expected = match path.strip_prefix("blobs/sha256/") {
            Some(hex) => Some(Digest::parse(&format!("sha256:{hex}")).map_err(|_| {
                Error::invalid(format!(
                    "archive entry {path:?} is not named by a sha256 digest"
                ))
            })?),
            None => None,
        };
        n += 1;
        // Unique per import: concurrent imports of one image must not
        // contend for an upload ref (the store dedups the blob itself).
        let reference = format!("import-{}-{n}", uuid::Uuid::new_v4().simple());
        let declared = entry.header().size().map_err(malformed)?;
        let mut sniff = Sniff {
            inner: &mut entry,
            magic: [0; 4],
            count: 0,
        };
        let written =
            stores
                .content
                .write_blob(ctx, &reference, &mut sniff, expected.clone(), Labels::new());
        // A blob already stored is not read by write_blob; skip its bytes.
        if written.is_ok() {
            std::io::copy(&mut sniff, &mut std::io::sink()).map_err(malformed)?;
        }
        let (magic, count) = (sniff.magic, sniff.count);
        // A short member is truncation, whatever else failed because of it
        // (a write refused before reading anything is reported as is).
        if count != declared && (written.is_ok() || count > 0) {
            let _ = stores.content.abort(&ctx.ns, &reference);
            return Err(malformed(format!(
                "member {path:?} is cut short ({count} of {declared} bytes)"
            )));
        }
        let (digest, size) = match written {
            Ok(v) => v,
            Err(e) => {
                let _ = stores.content.abort(&ctx.ns, &reference);
                return Err(match (e.kind(), &expected) {
                    (berth_proto::errdefs::Kind::FailedPrecondition, Some(d)) => Error::invalid(
                        format!("archive entry {path:?} does not match its digest {d}: {e}"),
                    ),
                    (berth_proto::errdefs::Kind::InvalidArgument, _) => malformed(e.chain()),
                    _ => e.context(format!("import {path}")),
                });
            }
        };
        progress("saved", &path);
        members.add_file(
            path,
            Blob {
                digest: digest.to_string(),
                size,
                magic,
            },
        );
    }

    let mut images: Vec<Image> = Vec::new();
    if let Some(index) = small.get("index.json") {
        images.extend(oci_images(&stores.content, ctx, index, opts)?);
    } else if let Some(manifest) = small.get("manifest.json") {
        images.extend(docker_images(
            &stores.content,
            ctx,
            manifest,
            &members,
            opts,
        )?);
    } else {
        return Err(ArchiveError::NotAnArchive.into());
    }
    if images.is_empty() {
        return Err(ArchiveError::no_image(opts.base_name.as_deref()).into());
    }
    // Unpack first, while the import lease holds everything: a failure
    // then leaves no image behind.
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let mut done = HashSet::new();
    for img in &images {
        for (p, sn) in &opts.unpack {
            let p = p.clone().unwrap_or_else(|| platform.clone());
            if !done.insert((img.record.target.digest.clone(), sn.clone(), p.to_string())) {
                continue;
            }
            stores
                .unpacker
                .unpack(ctx, &img.record.target, sn, &p)
                .map_err(|e| e.context(format!("unpack {}", img.name)))?;
            progress("unpacked", &img.name);
        }
    }
    let mut out = Vec::new();
    for mut img in images {
        img.record.labels.extend(opts.labels.clone());
        let saved = match stores.images.create(ctx, img.clone()) {
            Err(e) if e.is_already_exists() => stores.images.update(&ctx.ns, img, &[])?,
            other => other?,
        };
        progress("image", &saved.name);
        out.push(saved);
    }
    Ok(out)
}

fn oci_images(
    content: &Arc<ContentStore>,
    ctx: &Ctx,
    index_json: &[u8],
    opts: &ImportOptions,
) -> Result<Vec<Image>> {
    let index: LayoutIndex = serde_json::from_slice(index_json)
        .map_err(|e| Error::invalid(format!("index.json in the archive is malformed: {e}")))?;
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let naming = NameRules::new(opts.base_name.clone(), opts.digests);
    let mut out = Vec::new();
    let mut checked = HashSet::new();
    for m in &index.manifests {
        let desc = Descriptor {
            media_type: m.media_type.clone(),
            digest: m.digest.clone(),
            size: m.size,
            annotations: HashMap::new(),
        };
        Digest::parse(&desc.digest).map_err(|e| e.context("index.json"))?;
        let names = naming.oci(
            m.annotations.get(ANNOTATION_IMAGE_NAME).map(String::as_str),
            m.annotations.get(ANNOTATION_REF_NAME).map(String::as_str),
            &desc.digest,
        )?;
        if names.is_empty() {
            continue;
        }
        if checked.insert(desc.digest.clone()) {
            ensure_complete(
                content,
                ctx,
                &desc,
                &platform,
                opts.all_platforms,
                "the archive's index",
            )?;
        }
        for name in names {
            out.push(Image {
                name,
                record: ImageRecord {
                    target: desc.clone(),
                    ..Default::default()
                },
            });
        }
    }
    if let Some(name) = &opts.index_name {
        let (digest, size) = content.write_blob(
            ctx,
            &format!("import-index-{}", uuid::Uuid::new_v4()),
            &mut &index_json[..],
            None,
            Labels::new(),
        )?;
        let node = oci::parse(media::OCI_INDEX, index_json)?;
        label_children(content, ctx, &digest, &node)?;
        out.push(Image {
            name: name.clone(),
            record: ImageRecord {
                target: Descriptor {
                    media_type: media::OCI_INDEX.to_string(),
                    digest: digest.to_string(),
                    size,
                    annotations: HashMap::new(),
                },
                ..Default::default()
            },
        });
    }
    Ok(out)
}

fn label_children(
    content: &Arc<ContentStore>,
    ctx: &Ctx,
    parent: &Digest,
    node: &Node,
) -> Result<()> {
    let labels = oci::child_labels(node);
    let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
    content.update(&ctx.ns, parent, &labels, &paths)?;
    Ok(())
}

/// Labels whatever part of `desc`'s tree is present, so the garbage
/// collector keeps it with the image; absent parts are fine.
fn label_present(
    content: &Arc<ContentStore>,
    ctx: &Ctx,
    desc: &Descriptor,
    depth: usize,
) -> Result<()> {
    let digest = Digest::parse(&desc.digest)?;
    let data = match content.read_all(&ctx.ns, &digest) {
        Err(e) if e.is_not_found() => return Ok(()),
        other => other?,
    };
    let Ok(node) = oci::parse(&desc.media_type, &data) else {
        return Ok(());
    };
    label_children(content, ctx, &digest, &node)?;
    if let Node::Index(children) = &node
        && depth < 4
    {
        for c in children {
            label_present(content, ctx, &c.desc, depth + 1)?;
        }
    }
    Ok(())
}

/// Checks that the blobs `desc` needs for `platform` (or all platforms) are
/// in the namespace, and labels parents with references to their children.
fn ensure_complete(
    content: &Arc<ContentStore>,
    ctx: &Ctx,
    desc: &Descriptor,
    platform: &Platform,
    all: bool,
    what: &str,
) -> Result<()> {
    let digest = Digest::parse(&desc.digest)?;
    let data = content.read_all(&ctx.ns, &digest).map_err(|e| {
        if e.is_not_found() {
            ArchiveError::MissingBlob {
                digest: digest.to_string(),
                what: what.to_string(),
            }
            .into()
        } else {
            e
        }
    })?;
    let node = oci::parse(&desc.media_type, &data)?;
    label_children(content, ctx, &digest, &node)?;
    match &node {
        Node::Index(children) => {
            let chosen: Vec<_> = children
                .iter()
                .filter(|c| all || c.platform.as_ref().is_none_or(|p| platform.matches(p)))
                .collect();
            if chosen.is_empty() {
                let have: Vec<String> = children
                    .iter()
                    .filter_map(|c| c.platform.as_ref().map(ToString::to_string))
                    .collect();
                return Err(ArchiveError::NoManifestForPlatform {
                    index: digest.to_string(),
                    platform: platform.to_string(),
                    have,
                }
                .into());
            }
            for c in children {
                if chosen.iter().any(|k| k.desc.digest == c.desc.digest) {
                    ensure_complete(
                        content,
                        ctx,
                        &c.desc,
                        platform,
                        all,
                        &format!("manifest of index {digest}"),
                    )?;
                } else {
                    // Other platforms' blobs the archive brought are kept too.
                    label_present(content, ctx, &c.desc, 0)?;
                }
            }
        }
        Node::Manifest { config, layers } => {
            let need = std::iter::once((config, "config".to_string())).chain(
                layers
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (l, format!("layer {i}"))),
            );
            for (d, role) in need {
                let dg = Digest::parse(&d.digest)?;
                if content.info(&ctx.ns, &dg).is_err() {
                    return Err(ArchiveError::MissingBlob {
                        digest: dg.to_string(),
                        what: format!("{role} of manifest {digest}"),
                    }
                    .into());
                }
            }
        }
    }
    Ok(())
}

fn docker_images(
    content: &Arc<ContentStore>,
    ctx: &Ctx,
    manifest_json: &[u8],
    members: &Members,
    opts: &ImportOptions,
) -> Result<Vec<Image>> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(manifest_json)
        .map_err(|e| Error::invalid(format!("docker-archive: manifest.json is malformed: {e}")))?;
    let naming = NameRules::new(opts.base_name.clone(), opts.digests);
    let mut out = Vec::new();
    for e in entries {
        let manifest =
            rules::docker_manifest(members, &e.config, e.layers.iter().map(String::as_str))?;
        let bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::internal(e.to_string()))?;
        let digest = Digest::of(&bytes);
        let node = oci::parse(media::DOCKER_MANIFEST, &bytes)?;
        content.write_blob(
            ctx,
            &format!("import-manifest-{}", digest.hex()),
            &mut bytes.as_slice(),
            Some(digest.clone()),
            oci::child_labels(&node),
        )?;
        let target = Descriptor {
            media_type: media::DOCKER_MANIFEST.to_string(),
            digest: digest.to_string(),
            size: bytes.len() as i64,
            annotations: HashMap::new(),
        };
        let tags = e.repo_tags.iter().flatten().map(String::as_str);
        for name in naming.docker(tags, digest.as_str())? {
            out.push(Image {
                name,
                record: ImageRecord {
                    target: target.clone(),
                    ..Default::default()
                },
            });
        }
    }
    Ok(out)
}
