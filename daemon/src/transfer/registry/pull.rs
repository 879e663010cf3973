//! Pull: resolve the reference, fetch manifests, then configs and layers
//! (a bounded number at a time) straight into the content store, unpacking
//! each layer as soon as it and the ones below it are in. The image record
//! is written last, so a failed pull leaves no image behind.
//!
//! Blobs are uploaded under containerd's refs (`layer-<digest>`, ...), held
//! by a lease that expires after a day: if berthd dies mid-download, the
//! next pull of the same content resumes from the stored offset with a
//! range request.

use super::fetch::{Blob, fetch_blob};
use super::remote::{ACCEPT, Remote, manifest_media_type};
use super::request::{Credentials, ProgressEvent, ProgressFn, ResolverOptions};
use crate::config::RegistryConfig;
use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::images::oci::{self, Node, Platform};
use crate::images::{Image, ImageRecord};
use crate::metadata::leases::LABEL_EXPIRE;
use crate::transfer::stores::ImageStores;
use crate::types::{Ctx, Descriptor, Digest, Labels};
use berth_proto::errdefs::Kind;
use bytes::Bytes;
use oci_client::RegistryOperation;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};

/// What to pull and how.
#[derive(Debug, Clone, Default)]
pub struct PullRequest {
    /// The reference to pull (normalized like docker: `busybox` means
    /// `docker.io/library/busybox:latest`).
    pub reference: String,
    /// Name of the image to store; the normalized reference when empty.
    pub name: String,
    /// Platforms to fetch from an index; the host's when empty.
    pub platforms: Vec<Platform>,
    /// Fetch every platform of an index.
    pub all_platforms: bool,
    /// Unpack into these snapshotters, for these platforms (host if None).
    pub unpack: Vec<(Option<Platform>, String)>,
    /// Labels of the image record.
    pub labels: Labels,
    pub resolver: ResolverOptions,
}

/// Pulls an image into namespace `ns`; returns the image record.
pub async fn pull(
    stores: &ImageStores,
    registry: &RegistryConfig,
    ns: &str,
    req: PullRequest,
    creds: Option<Arc<dyn Credentials>>,
    progress: ProgressFn,
) -> Result<Image> {
    let name = berth_proto::reference::normalize(&req.reference).map_err(Error::invalid)?;
    let lease = format!("pull-{}", uuid::Uuid::new_v4().simple());
    let expire = chrono::Utc::now() + chrono::Duration::hours(24);
    stores.leases.create(
        ns,
        &lease,
        Labels::from([
            (LABEL_EXPIRE.to_string(), expire.to_rfc3339()),
            ("berth.io/pull".to_string(), name.clone()),
        ]),
    )?;
    let ctx = Ctx::new(ns).with_lease(Some(lease.clone()));
    let out = pull_leased(
        stores,
        registry,
        &ctx,
        &name,
        &req,
        creds.as_deref(),
        &progress,
    )
    .await
    .map_err(|e| e.context(format!("pull {name}")));
    match &out {
        // The image holds what it needs now.
        Ok(_) => {
            if let Err(e) = stores.leases.delete(ns, &lease, false).await {
                tracing::warn!("pull {name}: dropping lease {lease}: {}", e.chain());
            }
        }
        // What was fetched stays, held by the lease until it expires, so
        // that pulling again resumes instead of starting over.
        Err(e) => {
            tracing::info!(
                "pull {name} failed, fetched content kept under lease {lease}: {}",
                e.chain()
            )
        }
    }
    out
}

/// A manifest chosen for pulling.
struct Chosen {
    desc: Descriptor,
    platform: Option<Platform>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

async fn pull_leased(
    stores: &ImageStores,
    registry: &RegistryConfig,
    ctx: &Ctx,
    name: &str,
    req: &PullRequest,
    creds: Option<&dyn Credentials>,
    progress: &ProgressFn,
) -> Result<Image> {
    progress(ProgressEvent::new("resolving", name));
    let (remote, root, root_data) = resolve(registry, name, req, creds).await?;
    let remote = Arc::new(remote);
    let source = Labels::from([(
        super::source::source_label_key(&remote.host),
        remote.reference.repository().to_string(),
    )]);
    progress(ProgressEvent {
        desc: Some(root.clone()),
        ..ProgressEvent::new("resolved", name)
    });

    // Manifests first (small, needed to know what else to fetch).
    let mut chosen: Vec<Chosen> = Vec::new();
    let mut pending = vec![(root.clone(), root_data, None::<Platform>, 0usize)];
    while let Some((desc, data, platform, depth)) = pending.pop() {
        let node = oci::parse(&desc.media_type, &data)?;
        let mut labels = oci::child_labels(&node);
        labels.extend(source.clone());
        store_small(&stores.content, ctx, &desc, &data, labels).await?;
        match node {
            Node::Index(children) => {
                if depth >= 2 {
                    return Err(Error::invalid("image indexes nest too deeply"));
                }
                for c in select(&children, req, name)? {
                    let r = remote.at_digest(&c.desc.digest);
                    let (d, data) = fetch_manifest(&remote, &r, Some(&c.desc)).await?;
                    pending.push((d, data, c.platform.clone(), depth + 1));
                }
            }
            Node::Manifest { config, layers } => chosen.push(Chosen {
                desc,
                platform,
                config,
                layers,
            }),
        }
    }

    // Configs next: the unpackers need them before any layer.
    for c in &chosen {
        let blob = Blob::new("config", &c.config);
        fetch_blob(&stores.content, ctx, &remote, &blob, &source, progress).await?;
    }

    // Layers, in manifest order, a bounded number at a time; unpackers
    // apply each as soon as it and those below it are stored.
    let arrivals = Arc::new(Arrivals::default());
    let mut unpackers = tokio::task::JoinSet::new();
    for (platform, sn) in &req.unpack {
        let want = platform.clone().unwrap_or_else(Platform::host);
        let Some(c) = chosen
            .iter()
            .find(|c| c.platform.as_ref().is_none_or(|p| want.matches(p)))
        else {
            return Err(Error::not_found(format!(
                "cannot unpack {name} for {want}: the image has no manifest for it"
            )));
        };
        let (stores, ctx, target, sn) = (stores.clone(), ctx.clone(), c.desc.clone(), sn.clone());
        let (arrivals, progress, name) = (arrivals.clone(), progress.clone(), name.to_string());
        unpackers.spawn_blocking(move || {
            progress(ProgressEvent::new("unpacking", &name));
            let wait = |l: &Descriptor| arrivals.wait(&l.digest);
            let top = stores
                .unpacker
                .unpack_with(&ctx, &target, &sn, &want, &wait)
                .map_err(|e| e.context(format!("unpack into {sn}")))?;
            progress(ProgressEvent::new("unpacked", &name));
            Ok::<_, Error>(top)
        });
    }
    let mut seen = HashSet::new();
    let layers: Vec<Descriptor> = chosen
        .iter()
        .flat_map(|c| c.layers.iter().cloned())
        .filter(|l| seen.insert(l.digest.clone()))
        .collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(remote.max_concurrent));
    let mut downloads = tokio::task::JoinSet::new();
    for l in layers {
        let (stores, ctx, remote, source) =
            (stores.clone(), ctx.clone(), remote.clone(), source.clone());
        let (sem, arrivals, progress) = (sem.clone(), arrivals.clone(), progress.clone());
        let blob = Blob::new("layer", &l);
        progress(ProgressEvent {
            desc: Some(l.clone()),
            total: l.size,
            ..ProgressEvent::new("waiting", &blob.reference)
        });
        downloads.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = fetch_blob(&stores.content, &ctx, &remote, &blob, &source, &progress).await;
            arrivals.done(&l.digest, r.as_ref().map(|_| ()).map_err(Clone::clone));
            r
        });
    }
    let mut failure: Option<Error> = None;
    while let Some(r) = downloads.join_next().await {
        let r = r
            .map_err(|e| Error::internal(format!("download task: {e}")))
            .and_then(|r| r);
        if let Err(e) = r
            && failure.is_none()
        {
            // Stop the rest; unpackers waiting for a layer give up.
            downloads.abort_all();
            arrivals.fail_all(&e);
            failure = Some(e);
        }
    }
    while let Some(r) = unpackers.join_next().await {
        let r = r
            .map_err(|e| Error::internal(format!("unpack task: {e}")))
            .and_then(|r| r);
        if let Err(e) = r
            && failure.is_none()
        {
            failure = Some(e);
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }

    let img = Image {
        name: if req.name.is_empty() {
            name.to_string()
        } else {
            req.name.clone()
        },
        record: ImageRecord {
            target: root,
            labels: req.labels.clone(),
            ..Default::default()
        },
    };
    let core2 = stores.clone();
    let ctx2 = ctx.clone();
    let saved =
        tokio::task::spawn_blocking(move || match core2.images.create(&ctx2, img.clone()) {
            Err(e) if e.is_already_exists() => core2.images.update(&ctx2.ns, img, &[]),
            other => other,
        })
        .await
        .map_err(|e| Error::internal(format!("save image: {e}")))??;
    progress(ProgressEvent {
        desc: Some(saved.record.target.clone()),
        ..ProgressEvent::new("saved", &saved.name)
    });
    Ok(saved)
}

/// Resolves `name` on the first configured host (mirrors in `hosts.toml`
/// order, then the registry) that answers with its manifest; that host
/// serves the whole pull. Every host's failure is reported if none does.
async fn resolve(
    registry: &RegistryConfig,
    name: &str,
    req: &PullRequest,
    creds: Option<&dyn Credentials>,
) -> Result<(Remote, Descriptor, Bytes)> {
    let hosts = super::hosts::usable(registry, name, &req.resolver, RegistryOperation::Pull)?;
    let mut failed: Vec<Error> = Vec::new();
    for h in &hosts {
        let attempt = async {
            let remote = Remote::new(registry, name, h, creds, RegistryOperation::Pull).await?;
            let (root, data) = fetch_manifest(&remote, &remote.reference, None).await?;
            Ok::<_, Error>((remote, root, data))
        }
        .await;
        match attempt {
            Ok(found) => return Ok(found),
            Err(e) => {
                if hosts.len() > 1 {
                    tracing::info!(host = %h.host, "resolve {name}: {}; trying the next host", e.chain());
                }
                failed.push(e);
            }
        }
    }
    let last = failed
        .pop()
        .unwrap_or_else(|| Error::not_found(format!("{name}: no host")));
    if failed.is_empty() {
        return Err(last);
    }
    let before: Vec<String> = failed.iter().map(|e| e.message().to_string()).collect();
    Err(last.context(format!("mirrors failed first: {}", before.join("; "))))
}

/// The children of an index to pull.
fn select<'a>(
    children: &'a [oci::Child],
    req: &PullRequest,
    name: &str,
) -> Result<Vec<&'a oci::Child>> {
    if req.all_platforms {
        return Ok(children.iter().collect());
    }
    let wanted = if req.platforms.is_empty() {
        vec![Platform::host()]
    } else {
        req.platforms.clone()
    };
    let mut out: Vec<&oci::Child> = Vec::new();
    for w in &wanted {
        // Index entries without a platform match anything, as in containerd.
        let found = children
            .iter()
            .find(|c| c.platform.as_ref().is_some_and(|p| w.matches(p)))
            .or_else(|| children.iter().find(|c| c.platform.is_none()));
        match found {
            Some(c) if !out.iter().any(|o| o.desc.digest == c.desc.digest) => out.push(c),
            Some(_) => {}
            None => {
                let have: Vec<String> = children
                    .iter()
                    .filter_map(|c| c.platform.as_ref().map(ToString::to_string))
                    .collect();
                return Err(Error::not_found(format!(
                    "{name} has no image for platform {w} (it has: {}); pick one with --platform",
                    have.join(", ")
                )));
            }
        }
    }
    Ok(out)
}

/// Fetches a manifest or index; its digest is checked against the
/// reference (or `expect`) by the client.
async fn fetch_manifest(
    remote: &Remote,
    r: &oci_client::Reference,
    expect: Option<&Descriptor>,
) -> Result<(Descriptor, Bytes)> {
    let (data, digest) = remote
        .retry("fetch manifest of", || {
            remote.client.pull_manifest_raw(r, remote.auth(), ACCEPT)
        })
        .await?;
    let subject = r.whole();
    let actual = Digest::of(&data).to_string();
    if actual != digest || expect.is_some_and(|e| e.digest != actual) {
        return Err(Error::new(
            Kind::DataLoss,
            format!(
                "manifest {subject} from registry {} has digest {actual}, expected {}: the registry's copy is corrupt",
                remote.host,
                expect.map_or(digest.as_str(), |e| e.digest.as_str())
            ),
        ));
    }
    let media_type = match expect {
        Some(e) if !e.media_type.is_empty() => e.media_type.clone(),
        _ => manifest_media_type(&data, &subject)?,
    };
    if media_type == oci::media::DOCKER_SCHEMA1 || media_type == oci::media::DOCKER_SCHEMA1_SIGNED {
        return Err(Error::precondition(super::remote::schema1(&subject)));
    }
    Ok((
        Descriptor {
            media_type,
            digest: actual,
            size: data.len() as i64,
            annotations: Default::default(),
        },
        data,
    ))
}

/// Stores a manifest or index fetched whole.
async fn store_small(
    content: &Arc<ContentStore>,
    ctx: &Ctx,
    desc: &Descriptor,
    data: &Bytes,
    labels: Labels,
) -> Result<()> {
    let kind = if oci::is_index(&desc.media_type) {
        "index"
    } else {
        "manifest"
    };
    let reference = format!("{kind}-{}", desc.digest);
    let expected = Digest::parse(&desc.digest)?;
    let (content, ctx, data) = (content.clone(), ctx.clone(), data.clone());
    tokio::task::spawn_blocking(move || {
        content
            .write_blob(&ctx, &reference, &mut &data[..], Some(expected), labels)
            .map(|_| ())
    })
    .await
    .map_err(|e| Error::internal(format!("store manifest: {e}")))?
}

/// Which layers are in the content store yet, for unpackers waiting on
/// downloads.
#[derive(Default)]
struct Arrivals {
    state: Mutex<ArrivalState>,
    changed: Condvar,
}

#[derive(Default)]
struct ArrivalState {
    done: HashMap<String, Option<Error>>,
    failed: Option<Error>,
}

impl Arrivals {
    fn done(&self, digest: &str, r: std::result::Result<(), Error>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done.insert(digest.to_string(), r.err());
        self.changed.notify_all();
    }

    fn fail_all(&self, e: &Error) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.failed = Some(e.clone());
        self.changed.notify_all();
    }

    /// Blocks until `digest` is stored; fails if its download (or the
    /// pull) failed.
    fn wait(&self, digest: &str) -> Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = s.done.get(digest) {
                return match r {
                    None => Ok(()),
                    Some(e) => Err(e.clone()),
                };
            }
            if let Some(e) = &s.failed {
                return Err(e.clone());
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}
