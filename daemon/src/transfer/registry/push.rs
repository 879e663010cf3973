//! Push: configs and layers first (a bounded number at a time), skipping
//! what the registry already has and mounting what another repository of
//! the same registry holds; then manifests, children before the index that
//! names them, the root last under the tag.

use super::remote::Remote;
use super::request::{Credentials, ProgressEvent, ProgressFn, ResolverOptions};
use crate::config::RegistryConfig;
use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::images::Images;
use crate::images::oci::{self, Node, Platform};
use crate::types::{Descriptor, Digest};
use bytes::Bytes;
use oci_client::RegistryOperation;
use oci_client::errors::OciDistributionError;
use std::collections::HashSet;
use std::io::Read;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What to push and where.
#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    /// The local image.
    pub name: String,
    /// Where to push it; the image's own name when empty.
    pub reference: String,
    /// Push only these platforms' manifests of an index (the index itself
    /// is then not pushed, as it would name manifests the registry lacks).
    pub platforms: Vec<Platform>,
    pub resolver: ResolverOptions,
}

/// Pushes an image of namespace `ns`; returns the descriptor pushed under
/// the reference.
pub async fn push(
    content: &Arc<ContentStore>,
    images: &Images,
    registry: &RegistryConfig,
    ns: &str,
    req: PushRequest,
    creds: Option<Arc<dyn Credentials>>,
    progress: ProgressFn,
) -> Result<Descriptor> {
    let img = images.get(ns, &req.name)?;
    let target = if req.reference.is_empty() {
        req.name.clone()
    } else {
        req.reference.clone()
    };
    let target = berth_proto::reference::normalize(&target).map_err(Error::invalid)?;
    push_image(
        content,
        registry,
        ns,
        &img.record.target,
        &target,
        &req,
        creds.as_deref(),
        &progress,
    )
    .await
    .map_err(|e| e.context(format!("push {target}")))
}

// One caller; the arguments are the narrow stores plus the request itself.
#[allow(clippy::too_many_arguments)]
async fn push_image(
    content: &Arc<ContentStore>,
    registry: &RegistryConfig,
    ns: &str,
    root: &Descriptor,
    target: &str,
    req: &PushRequest,
    creds: Option<&dyn Credentials>,
    progress: &ProgressFn,
) -> Result<Descriptor> {
    // What to push, read from the content store: manifests (parents after
    // children) and the blobs they name.
    let mut manifests: Vec<(Descriptor, Vec<u8>)> = Vec::new();
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen = HashSet::new();
    let root = if req.platforms.is_empty() {
        root.clone()
    } else {
        let mut one = None;
        for p in &req.platforms {
            let (m, _, _) = oci::resolve_manifest(content, ns, root, p)?;
            if one.replace(m).is_some() {
                return Err(Error::invalid(
                    "push takes one --platform: a subset of an index cannot be pushed as that index",
                ));
            }
        }
        one.ok_or_else(|| Error::invalid("no platform given"))?
    };
    collect(content, ns, &root, 0, &mut manifests, &mut blobs, &mut seen)?;

    progress(ProgressEvent::new("resolving", target));
    let remote = Arc::new(
        Remote::new(
            registry,
            target,
            // Pushes go to the first host that takes them (the registry
            // itself unless hosts.toml says otherwise).
            &super::hosts::usable(registry, target, &req.resolver, RegistryOperation::Push)?[0],
            creds,
            RegistryOperation::Push,
        )
        .await?,
    );
    let sem = Arc::new(tokio::sync::Semaphore::new(remote.max_concurrent));
    let mut uploads = tokio::task::JoinSet::new();
    for b in blobs {
        let (content, ns, remote, sem, progress) = (
            content.clone(),
            ns.to_string(),
            remote.clone(),
            sem.clone(),
            progress.clone(),
        );
        uploads.spawn(async move {
            let _permit = sem.acquire_owned().await;
            push_blob(&content, &ns, &remote, &b, &progress).await
        });
    }
    while let Some(r) = uploads.join_next().await {
        let r = r
            .map_err(|e| Error::internal(format!("upload task: {e}")))
            .and_then(|r| r);
        if let Err(e) = r {
            uploads.abort_all();
            return Err(e);
        }
    }
    for (desc, data) in manifests {
        let is_root = desc.digest == root.digest;
        let r = if is_root && remote.reference.digest().is_none() {
            remote.reference.clone()
        } else {
            remote.at_digest(&desc.digest)
        };
        let ct = reqwest_header(&desc.media_type)?;
        let body = Bytes::from(data);
        remote
            .retry("push manifest", || {
                remote
                    .client
                    .push_manifest_raw(&r, body.clone(), ct.clone())
            })
            .await?;
        progress(ProgressEvent {
            desc: Some(desc.clone()),
            progress: desc.size,
            total: desc.size,
            ..ProgressEvent::new("complete", &format!("manifest-{}", desc.digest))
        });
    }
    progress(ProgressEvent {
        desc: Some(root.clone()),
        ..ProgressEvent::new("pushed", target)
    });
    Ok(root)
}

fn reqwest_header(mt: &str) -> Result<tonic::codegen::http::HeaderValue> {
    tonic::codegen::http::HeaderValue::from_str(mt)
        .map_err(|_| Error::invalid(format!("media type {mt:?} cannot be sent as a header")))
}

/// Walks `desc` depth first: children's manifests land in `manifests`
/// before their parent's; configs and layers in `blobs` once each.
fn collect(
    content: &Arc<ContentStore>,
    ns: &str,
    desc: &Descriptor,
    depth: usize,
    manifests: &mut Vec<(Descriptor, Vec<u8>)>,
    blobs: &mut Vec<Descriptor>,
    seen: &mut HashSet<String>,
) -> Result<()> {
    if depth > 3 {
        return Err(Error::invalid("image indexes nest too deeply"));
    }
    if !seen.insert(desc.digest.clone()) {
        return Ok(());
    }
    let d = Digest::parse(&desc.digest)?;
    let data = content.read_all(ns, &d).map_err(|e| {
        if e.is_not_found() {
            Error::precondition(format!(
                "{} ({}) is not in the content store: pull the image with --all-platforms first, or push one --platform",
                desc.digest, desc.media_type
            ))
        } else {
            e
        }
    })?;
    match oci::parse(&desc.media_type, &data)? {
        Node::Index(children) => {
            for c in children {
                collect(content, ns, &c.desc, depth + 1, manifests, blobs, seen)?;
            }
        }
        Node::Manifest { config, layers } => {
            for b in std::iter::once(config).chain(layers) {
                if seen.insert(b.digest.clone()) {
                    // Present locally, or the push would fail halfway.
                    content.info(ns, &Digest::parse(&b.digest)?).map_err(|e| {
                        if e.is_not_found() {
                            Error::precondition(format!(
                                "blob {} of {} is not in the content store: pull the image again",
                                b.digest, desc.digest
                            ))
                        } else {
                            e
                        }
                    })?;
                    blobs.push(b);
                }
            }
        }
    }
    manifests.push((desc.clone(), data));
    Ok(())
}

/// Uploads one blob unless the registry has it; mounts it from another
/// repository of the same registry when the content store knows one.
async fn push_blob(
    content: &Arc<ContentStore>,
    ns: &str,
    remote: &Remote,
    desc: &Descriptor,
    progress: &ProgressFn,
) -> Result<()> {
    let name = format!("blob-{}", desc.digest);
    let report = |event: &str, done: i64| {
        progress(ProgressEvent {
            desc: Some(desc.clone()),
            progress: done,
            total: desc.size,
            ..ProgressEvent::new(event, &name)
        })
    };
    let exists = remote
        .retry("check", || {
            remote.client.blob_exists(&remote.reference, &desc.digest)
        })
        .await?;
    let repo = remote.reference.repository();
    if exists {
        let _ = super::source::add_source(content, ns, &desc.digest, &remote.host, repo).await;
        report("exists", desc.size);
        return Ok(());
    }
    let d = Digest::parse(&desc.digest)?;
    let info = content.info(ns, &d)?;
    let sources = info
        .record
        .labels
        .get(&super::source::source_label_key(&remote.host))
        .cloned()
        .unwrap_or_default();
    for from_repo in sources.split(',').filter(|r| !r.is_empty() && *r != repo) {
        let from = oci_client::Reference::with_tag(
            remote.reference.registry().to_string(),
            from_repo.to_string(),
            "latest".to_string(),
        );
        match remote
            .client
            .mount_blob(&remote.reference, &from, &desc.digest)
            .await
        {
            Ok(()) => {
                let _ =
                    super::source::add_source(content, ns, &desc.digest, &remote.host, repo).await;
                report("mounted", desc.size);
                return Ok(());
            }
            Err(e) => tracing::debug!("mount {} from {from_repo}: {e}", desc.digest),
        }
    }
    let mut attempt = 0;
    loop {
        let (file, size) = content.open_blob(ns, &d)?;
        let (tx, rx) = mpsc::channel::<oci_client::errors::Result<Bytes>>(4);
        let reader = tokio::task::spawn_blocking(move || read_into(file, tx));
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        report("uploading", 0);
        let r = remote
            .client
            .push_blob_stream(&remote.reference, stream, &desc.digest, Some(size as u64))
            .await;
        reader.abort();
        match r {
            Ok(_) => break,
            Err(e) if remote.should_retry(attempt, &e) => {
                attempt += 1;
                tokio::time::sleep(super::remote::backoff(attempt)).await;
            }
            Err(e) => return Err(remote.error(&format!("upload {}", desc.digest), &e)),
        }
    }
    let _ = super::source::add_source(content, ns, &desc.digest, &remote.host, repo).await;
    report("complete", desc.size);
    Ok(())
}

/// Reads a blob file into the upload stream.
fn read_into(mut f: std::fs::File, tx: mpsc::Sender<oci_client::errors::Result<Bytes>>) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tx
                    .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(OciDistributionError::IoError(e)));
                return;
            }
        }
    }
}
