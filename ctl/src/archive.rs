//! Image archives handled by berthctl itself, for daemons without a
//! Transfer service (containerd 1.6). Import streams the tar once: each
//! blob goes up through `Content.Write` (digest checked by the daemon)
//! under a lease; then the images are checked complete, unpacked through
//! `Diff.Apply` and `Snapshots`, and named through `Images`. A failure
//! drops the lease synchronously, so nothing half-made stays. Export reads
//! the blobs through `Content.Read` and writes the OCI layout tar here.
//! The archive rules (names, platforms, docker-archive conversion) are
//! those of berthd's own import and export.

use crate::CtlError;
use crate::cli::{ExportArgs, ImportArgs};
use crate::commands::Ctx;
use crate::image::{Lease, ensure_unpacked, host_platform, platform_matches, read_blob, read_json};
use anyhow::{Result, bail};
use berth_proto::archive::{
    self as rules, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ArchiveError, Blob, Members,
    NameRules, media,
};
use berth_proto::client::with_lease;
use berth_proto::services::content::v1 as content;
use berth_proto::services::content::v1::content_client::ContentClient;
use berth_proto::services::images::v1 as images;
use berth_proto::services::images::v1::images_client::ImagesClient;
use berth_proto::types::Descriptor;
use serde_json::{Value, json};
use sha2::Digest as _;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// Bytes per Content.Write message (well under gRPC's 4 MiB limit).
const CHUNK: usize = 1 << 20;

impl From<ArchiveError> for CtlError {
    fn from(e: ArchiveError) -> Self {
        CtlError(e.to_string())
    }
}

fn malformed(e: impl std::fmt::Display) -> CtlError {
    ArchiveError::Malformed(e.to_string()).into()
}

fn code(e: &anyhow::Error) -> Option<tonic::Code> {
    e.downcast_ref::<tonic::Status>().map(tonic::Status::code)
}

/// One blob going up through `Content.Write`, message by message.
struct Upload {
    tx: tokio::sync::mpsc::Sender<content::WriteContentRequest>,
    rx: tonic::Streaming<content::WriteContentResponse>,
    reference: String,
    offset: i64,
    hash: sha2::Sha256,
}

impl Upload {
    /// Starts an upload under `reference`; `None` when the daemon already
    /// has `expected` (it refuses a second writer with AlreadyExists).
    async fn open(
        ctx: &Ctx,
        lease: &str,
        reference: &str,
        expected: Option<&str>,
        total: i64,
    ) -> Result<Option<Upload>> {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tx.send(content::WriteContentRequest {
            action: content::WriteAction::Stat as i32,
            r#ref: reference.to_string(),
            total,
            expected: expected.unwrap_or_default().to_string(),
            ..Default::default()
        })
        .await?;
        let first = async {
            let mut rx = ContentClient::new(ctx.ch.clone())
                .write(with_lease(ctx.req(ReceiverStream::new(rx)), lease))
                .await?
                .into_inner();
            rx.next()
                .await
                .ok_or_else(|| tonic::Status::unavailable("the daemon closed the upload"))??;
            Ok::<_, tonic::Status>(rx)
        };
        match first.await {
            Ok(rx) => Ok(Some(Upload {
                tx,
                rx,
                reference: reference.to_string(),
                offset: 0,
                hash: sha2::Sha256::new(),
            })),
            Err(s) if s.code() == tonic::Code::AlreadyExists && expected.is_some() => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    async fn send(&mut self, req: content::WriteContentRequest) -> Result<String> {
        self.tx
            .send(req)
            .await
            .map_err(|_| CtlError("the daemon closed the upload".into()))?;
        let r = self
            .rx
            .next()
            .await
            .ok_or_else(|| CtlError("the daemon closed the upload".into()))??;
        Ok(r.digest)
    }

    async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hash.update(data);
        let req = content::WriteContentRequest {
            action: content::WriteAction::Write as i32,
            r#ref: self.reference.clone(),
            offset: self.offset,
            data: data.to_vec(),
            ..Default::default()
        };
        self.send(req).await?;
        self.offset += data.len() as i64;
        Ok(())
    }

    /// Commits under the digest of what was written (which must equal
    /// `expected` when given); a blob already present is success, once it
    /// is under our lease too.
    async fn commit(
        mut self,
        ctx: &Ctx,
        lease: &str,
        expected: Option<&str>,
        labels: HashMap<String, String>,
    ) -> Result<(String, i64)> {
        let digest = format!("sha256:{}", hex::encode(self.hash.clone().finalize()));
        let req = content::WriteContentRequest {
            action: content::WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            total: self.offset,
            offset: self.offset,
            expected: expected.unwrap_or(&digest).to_string(),
            labels,
            ..Default::default()
        };
        match self.send(req).await {
            Ok(_) => Ok((digest, self.offset)),
            Err(e) if code(&e) == Some(tonic::Code::AlreadyExists) => {
                // A commit that finds the blob does not lease it (containerd
                // leases an existing blob only when a writer names its
                // digest), so the collector could take it: name it now.
                let held = format!("{}-held", self.reference);
                match Upload::open(ctx, lease, &held, Some(&digest), self.offset).await? {
                    None => Ok((digest, self.offset)),
                    Some(_) => {
                        Upload::abort(ctx, &held).await;
                        bail!(CtlError(format!(
                            "blob {digest} was removed while it was being imported: import again"
                        )))
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn abort(ctx: &Ctx, reference: &str) {
        let _ = ContentClient::new(ctx.ch.clone())
            .abort(ctx.req(content::AbortRequest {
                r#ref: reference.to_string(),
            }))
            .await;
    }
}

/// Uploads a small blob held in memory; returns its digest.
async fn put_blob(
    ctx: &Ctx,
    lease: &str,
    data: &[u8],
    labels: HashMap<String, String>,
) -> Result<String> {
    let digest = digest_of(data);
    let reference = format!("berthctl-import-{}", uuid::Uuid::new_v4().simple());
    match Upload::open(ctx, lease, &reference, Some(&digest), data.len() as i64).await? {
        Some(mut up) => {
            up.write(data).await?;
            up.commit(ctx, lease, Some(&digest), labels).await?;
        }
        None => set_labels(ctx, &digest, labels).await?,
    }
    Ok(digest)
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Sets labels on a blob (the references that keep its children from
/// garbage collection).
async fn set_labels(ctx: &Ctx, digest: &str, labels: HashMap<String, String>) -> Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    let mask = crate::commands::label_mask(&labels);
    ContentClient::new(ctx.ch.clone())
        .update(ctx.req(content::UpdateRequest {
            info: Some(content::Info {
                digest: digest.to_string(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(mask),
        }))
        .await?;
    Ok(())
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

async fn present(ctx: &Ctx, digest: &str) -> Result<bool> {
    match ContentClient::new(ctx.ch.clone())
        .info(ctx.req(content::InfoRequest {
            digest: digest.to_string(),
        }))
        .await
    {
        Ok(i) => Ok(i.into_inner().info.is_some()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(s.into()),
    }
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

/// `berthctl images import` without a Transfer service.
pub async fn import(ctx: &Ctx, a: &ImportArgs, reader: Box<dyn Read + Send>) -> Result<()> {
    let labels = crate::transfer::parse_kv_labels(&a.labels)?;
    if let Some(p) = &a.platform {
        crate::transfer::platform(p)?;
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
) -> Result<()> {
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
            println!("unpacked: {}", n.name);
        }
    }
    let mut ic = ImagesClient::new(ctx.ch.clone());
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
        println!("image: {}", n.name);
    }
    Ok(())
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
pub async fn export(ctx: &Ctx, a: &ExportArgs, out: &mut dyn Write) -> Result<()> {
    let platforms = if a.platform.is_empty() {
        vec![host_platform()]
    } else {
        for p in &a.platform {
            crate::transfer::platform(p)?;
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
            .map_err(|s| CtlError(format!("export {name}: {}", crate::status_error(&s))))?
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
