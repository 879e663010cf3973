//! `berthctl images import` without a Transfer service: streams the tar
//! once, each blob up through [`Upload`] under a lease; then checks the
//! images complete, unpacks them and names them. A failure drops the lease
//! synchronously, so nothing half-made stays.

use super::upload::{Upload, code, present, put_blob, set_labels};
use crate::cli::ImportArgs;
use crate::ctx::{Ctx, parse_kv_labels};
use crate::error::CtlError;
use crate::image::{Lease, ensure_unpacked, host_platform, platform, platform_matches, read_json};
use anyhow::{Result, bail};
use berth_proto::archive::{
    self as rules, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ArchiveError, Blob, Members,
    NameRules, media,
};
use berth_proto::services::images::v1 as images;
use berth_proto::services::images::v1::images_client::ImagesClient;
use berth_proto::types::Descriptor;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::Read;

/// Bytes per Content.Write message (well under gRPC's 4 MiB limit).
const CHUNK: usize = 1 << 20;

fn malformed(e: impl std::fmt::Display) -> CtlError {
    ArchiveError::Malformed(e.to_string()).into()
}

/// The garbage-collection references a manifest or index holds (the
/// labels containerd's own import sets).
fn child_labels(v: &Value) -> HashMap<String, String> {
    let mut l = HashMap::new();
    let digest = |d: &Value| d["digest"].as_str().unwrap_or_default().to_string();
    if let Some(ms) = v["manifests"].as_array() {
        for (i, m) in ms.iter().enumerate() {
            l.insert(format!("containerd.io/gc.ref.content.m.{i}"), digest(m));
        }
    } else {
        if v["config"].is_object() {
            l.insert(
                "containerd.io/gc.ref.content.config".into(),
                digest(&v["config"]),
            );
        }
        for (i, d) in v["layers"].as_array().into_iter().flatten().enumerate() {
            l.insert(format!("containerd.io/gc.ref.content.l.{i}"), digest(d));
        }
    }
    l
}

/// Reads until `buf` is full or the entry ends.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// An image the archive names.
struct Named {
    name: String,
    target: Descriptor,
}

/// `berthctl images import` without a Transfer service; returns the
/// names of the images made.
pub(crate) async fn import(
    ctx: &Ctx,
    a: &ImportArgs,
    reader: Box<dyn Read + Send>,
) -> Result<Vec<String>> {
    let labels = parse_kv_labels(&a.labels)?;
    if let Some(p) = &a.platform {
        platform(p)?;
    }
    let lease = Lease::create(ctx).await?;
    let out = import_leased(ctx, a, reader, &labels, &lease.id).await;
    // On success the images hold what they need and the rest is collected.
    lease.drop_lease(ctx, out.is_err()).await;
    out
}

async fn import_leased(
    ctx: &Ctx,
    a: &ImportArgs,
    reader: Box<dyn Read + Send>,
    labels: &HashMap<String, String>,
    lease: &str,
) -> Result<Vec<String>> {
    let mut archive = tar::Archive::new(reader);
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    let mut members = Members::default();
    let mut buf = vec![0u8; CHUNK];
    // Reading the archive blocks; this future runs on block_on's thread,
    // not on a runtime worker, so the connection keeps being served.
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let path = rules::clean_path(&entry.path().map_err(malformed)?.to_string_lossy());
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
            let data = rules::read_metadata(&mut entry, &path).map_err(CtlError::from)?;
            small.insert(path, data);
            continue;
        }
        let expected = match path.strip_prefix("blobs/sha256/") {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(format!("sha256:{}", hex.to_ascii_lowercase()))
            }
            Some(_) => bail!(CtlError(format!(
                "archive entry {path:?} is not named by a sha256 digest"
            ))),
            None => None,
        };
        let declared = entry.header().size().map_err(malformed)?;
        let reference = format!("berthctl-import-{}", uuid::Uuid::new_v4().simple());
        let mut up =
            Upload::open(ctx, lease, &reference, expected.as_deref(), declared as i64).await?;
        let mut magic = [0u8; 4];
        let mut count = 0u64;
        let copied: Result<()> = async {
            loop {
                let n = fill(&mut entry, &mut buf).map_err(malformed)?;
                if n == 0 {
                    return Ok(());
                }
                if count == 0 {
                    let k = n.min(4);
                    magic[..k].copy_from_slice(&buf[..k]);
                }
                count += n as u64;
                if let Some(u) = up.as_mut() {
                    u.write(&buf[..n]).await?;
                }
            }
        }
        .await;
        let copied = copied.and_then(|()| {
            if count == declared {
                Ok(())
            } else {
                Err(malformed(format!(
                    "member {path:?} is cut short ({count} of {declared} bytes)"
                ))
                .into())
            }
        });
        if let Err(e) = copied {
            Upload::abort(ctx, &reference).await;
            return Err(e);
        }
        let (digest, size) = match up {
            Some(u) => match u
                .commit(ctx, lease, expected.as_deref(), HashMap::new())
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    Upload::abort(ctx, &reference).await;
                    if code(&e) == Some(tonic::Code::FailedPrecondition)
                        && let Some(d) = &expected
                    {
                        bail!(CtlError(format!(
                            "archive entry {path:?} does not match its digest {d}: {}",
                            e.downcast_ref::<tonic::Status>()
                                .map(|s| s.message().to_string())
                                .unwrap_or_default()
                        )));
                    }
                    return Err(e);
                }
            },
            None => (expected.clone().unwrap_or_default(), count as i64),
        };
        members.add_file(
            path,
            Blob {
                digest,
                size,
                magic,
            },
        );
    }
    let platform = a.platform.clone().unwrap_or_else(host_platform);
    let named = if let Some(index) = small.get("index.json") {
        oci_images(ctx, a, index, &platform, lease).await?
    } else if let Some(manifest) = small.get("manifest.json") {
        docker_images(ctx, a, manifest, &members, lease).await?
    } else {
        bail!(CtlError::from(ArchiveError::NotAnArchive));
    };
    if named.is_empty() {
        bail!(CtlError::from(ArchiveError::no_image(
            a.base_name.as_deref()
        )));
    }
    // Unpack first, while the lease holds everything: a failure then
    // leaves no image behind.
    if !a.no_unpack {
        let lease = Lease {
            id: lease.to_string(),
        };
        let mut done = HashSet::new();
        for n in &named {
            if !done.insert(n.target.digest.clone()) {
                continue;
            }
            let img = crate::image::resolve_target(ctx, &n.name, &n.target.digest, Some(&platform))
                .await?;
            ensure_unpacked(ctx, &img, &ctx.snapshotter, &lease).await?;
            crate::output::progress(ctx.format, &format!("unpacked: {}", n.name));
        }
    }
    let mut ic = ImagesClient::new(ctx.ch.clone());
    let mut made = Vec::new();
    for n in named {
        let image = images::Image {
            name: n.name.clone(),
            labels: labels.clone(),
            target: Some(n.target),
            ..Default::default()
        };
        match ic
            .create(ctx.req(images::CreateImageRequest {
                image: Some(image.clone()),
                ..Default::default()
            }))
            .await
        {
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                ic.update(ctx.req(images::UpdateImageRequest {
                    image: Some(image),
                    ..Default::default()
                }))
                .await?;
            }
            r => {
                r?;
            }
        }
        crate::output::progress(ctx.format, &format!("image: {}", n.name));
        made.push(n.name);
    }
    Ok(made)
}

async fn oci_images(
    ctx: &Ctx,
    a: &ImportArgs,
    index_json: &[u8],
    platform: &str,
    lease: &str,
) -> Result<Vec<Named>> {
    let index: Value = serde_json::from_slice(index_json)
        .map_err(|e| CtlError(format!("index.json in the archive is malformed: {e}")))?;
    let naming = NameRules::new(a.base_name.clone(), a.digests);
    let mut out = Vec::new();
    let mut checked = HashSet::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let desc = Descriptor {
            media_type: m["mediaType"].as_str().unwrap_or_default().to_string(),
            digest: m["digest"].as_str().unwrap_or_default().to_string(),
            size: m["size"].as_i64().unwrap_or(0),
            annotations: HashMap::new(),
        };
        if !desc.digest.starts_with("sha256:") {
            bail!(CtlError(format!(
                "index.json in the archive names {:?}, which is not a sha256 digest",
                desc.digest
            )));
        }
        let names = naming
            .oci(
                m["annotations"][ANNOTATION_IMAGE_NAME].as_str(),
                m["annotations"][ANNOTATION_REF_NAME].as_str(),
                &desc.digest,
            )
            .map_err(CtlError::from)?;
        if names.is_empty() {
            continue;
        }
        if checked.insert(desc.digest.clone()) {
            ensure_complete(
                ctx,
                &desc.digest,
                platform,
                a.all_platforms,
                "the archive's index".into(),
            )
            .await?;
        }
        out.extend(names.into_iter().map(|name| Named {
            name,
            target: desc.clone(),
        }));
    }
    if let Some(name) = &a.index_name {
        let digest = put_blob(ctx, lease, index_json, child_labels(&index)).await?;
        out.push(Named {
            name: name.clone(),
            target: Descriptor {
                media_type: media::OCI_INDEX.into(),
                digest,
                size: index_json.len() as i64,
                annotations: HashMap::new(),
            },
        });
    }
    Ok(out)
}

/// Checks that the blobs `digest` needs for `platform` (or all platforms)
/// are present, and labels parents with references to their children.
async fn ensure_complete(
    ctx: &Ctx,
    digest: &str,
    platform: &str,
    all: bool,
    what: String,
) -> Result<()> {
    if !present(ctx, digest).await? {
        bail!(CtlError::from(ArchiveError::MissingBlob {
            digest: digest.to_string(),
            what,
        }));
    }
    let v = read_json(ctx, digest).await?;
    set_labels(ctx, digest, child_labels(&v)).await?;
    if let Some(children) = v["manifests"].as_array() {
        let chosen: Vec<&Value> = children
            .iter()
            .filter(|c| all || platform_matches(platform, &c["platform"]))
            .collect();
        if chosen.is_empty() {
            let have: Vec<String> = children
                .iter()
                .filter_map(|c| {
                    let p = &c["platform"];
                    Some(format!(
                        "{}/{}",
                        p["os"].as_str()?,
                        p["architecture"].as_str()?
                    ))
                })
                .collect();
            bail!(CtlError::from(ArchiveError::NoManifestForPlatform {
                index: digest.to_string(),
                platform: platform.to_string(),
                have,
            }));
        }
        for c in children {
            let d = c["digest"].as_str().unwrap_or_default();
            if chosen.iter().any(|k| k["digest"] == c["digest"]) {
                Box::pin(ensure_complete(
                    ctx,
                    d,
                    platform,
                    all,
                    format!("manifest of index {digest}"),
                ))
                .await?;
            } else if present(ctx, d).await? {
                // Other platforms' blobs the archive brought are kept too.
                if let Ok(m) = read_json(ctx, d).await {
                    set_labels(ctx, d, child_labels(&m)).await?;
                }
            }
        }
        return Ok(());
    }
    let config = std::iter::once((&v["config"], "config".to_string()));
    let layers = v["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, l)| (l, format!("layer {i}")));
    for (d, role) in config.chain(layers) {
        let d = d["digest"].as_str().unwrap_or_default();
        if !present(ctx, d).await? {
            bail!(CtlError::from(ArchiveError::MissingBlob {
                digest: d.to_string(),
                what: format!("{role} of manifest {digest}"),
            }));
        }
    }
    Ok(())
}

/// The strings of a JSON list (a missing list or a non-string is empty,
/// which the rules then refuse by name).
fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap_or_default())
}

async fn docker_images(
    ctx: &Ctx,
    a: &ImportArgs,
    manifest_json: &[u8],
    members: &Members,
    lease: &str,
) -> Result<Vec<Named>> {
    let entries: Value = serde_json::from_slice(manifest_json)
        .map_err(|e| CtlError(format!("docker-archive: manifest.json is malformed: {e}")))?;
    let Some(entries) = entries.as_array() else {
        bail!(CtlError(
            "docker-archive: manifest.json is malformed: expected a list of images".into()
        ));
    };
    let naming = NameRules::new(a.base_name.clone(), a.digests);
    let mut out = Vec::new();
    for e in entries {
        let cfg_path = e["Config"].as_str().unwrap_or_default();
        let manifest = rules::docker_manifest(members, cfg_path, strings(&e["Layers"]))
            .map_err(CtlError::from)?;
        let bytes = serde_json::to_vec_pretty(&manifest)?;
        let digest = put_blob(ctx, lease, &bytes, child_labels(&manifest)).await?;
        let target = Descriptor {
            media_type: media::DOCKER_MANIFEST.into(),
            digest: digest.clone(),
            size: bytes.len() as i64,
            annotations: HashMap::new(),
        };
        let names = naming
            .docker(strings(&e["RepoTags"]), &digest)
            .map_err(CtlError::from)?;
        out.extend(names.into_iter().map(|name| Named {
            name,
            target: target.clone(),
        }));
    }
    Ok(out)
}
