//! The CRI image service's logic: images in namespace `k8s.io`, seen as
//! containerd's CRI sees them.
//!
//! An image's id is the digest of its config (for this host's platform).
//! Every image record of the namespace whose config has that digest is a
//! reference of the same CRI image: a pull creates three, the tag
//! (`docker.io/library/busybox:1`), the repo digest (`…busybox@sha256:<target>`)
//! and the id itself, each labelled `io.cri-containerd.image=managed`, so
//! `ctr -n k8s.io images ls` shows them. Records made by other clients in
//! the namespace (ctr, berthctl) are CRI images too, as with containerd.

use super::images_auth::AuthCredentials;
use super::store::NAMESPACE;
use crate::config::RegistryConfig;
use crate::error::{Error, Result};
use crate::images::oci::{Platform, resolve_manifest};
use crate::images::{Image, ImageRecord};
use crate::snapshots::Snapshots;
use crate::transfer::registry::{self, Credentials, PullRequest};
use crate::transfer::stores::ImageStores;
use crate::types::{Ctx, Descriptor, Digest, Labels};
use berth_proto::cri::AuthConfig;
use berth_proto::reference::Reference;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Marks the image records the CRI made.
pub const LABEL_IMAGE: &str = "io.cri-containerd.image";
pub const LABEL_IMAGE_MANAGED: &str = "managed";
/// Marks images the kubelet must not garbage-collect (the sandbox image).
pub const LABEL_PINNED: &str = "io.cri-containerd.pinned";
pub const LABEL_PINNED_VALUE: &str = "pinned";

/// One CRI image: every record of the namespace with this config digest.
#[derive(Debug, Clone, PartialEq)]
pub struct CriImage {
    /// The config digest.
    pub id: String,
    /// The target of its records (of the first, should they differ: an
    /// index and its manifest for this platform are the same image).
    pub target: Descriptor,
    /// Record names, sorted.
    pub references: Vec<String>,
    /// Bytes of the target, manifest, config and layers (compressed).
    pub size: u64,
    /// The config's `User` (`uid`, `name`, `uid:gid` …).
    pub user: String,
    pub pinned: bool,
    /// Annotations of the manifest.
    pub annotations: BTreeMap<String, String>,
    pub chain_id: String,
    /// The whole image config, for verbose status.
    pub config: serde_json::Value,
}

impl CriImage {
    /// Tags (`repo:tag`) and digests (`repo@sha256:…`) among the references;
    /// the id record is neither.
    pub fn repo_tags_and_digests(&self) -> (Vec<String>, Vec<String>) {
        let (mut tags, mut digests) = (Vec::new(), Vec::new());
        for r in &self.references {
            match Reference::parse(r) {
                Ok(p) if p.digest.is_some() && p.tag.is_none() => digests.push(r.clone()),
                Ok(p) if p.tag.is_some() && !r.starts_with("sha256:") => tags.push(r.clone()),
                _ => {}
            }
        }
        (tags, digests)
    }

    /// How a container records its image (containerd's `imageRef`): a
    /// repo digest when there is one, else the id.
    pub fn image_ref(&self) -> String {
        let (_, digests) = self.repo_tags_and_digests();
        digests
            .into_iter()
            .next()
            .unwrap_or_else(|| self.id.clone())
    }

    /// The numeric uid or the user name of the image's `User` (a group is
    /// dropped), as the kubelet wants them.
    pub fn uid_or_username(&self) -> (Option<i64>, String) {
        uid_or_username(&self.user)
    }
}

pub(crate) fn uid_or_username(user: &str) -> (Option<i64>, String) {
    let user = user.split(':').next().unwrap_or("");
    if user.is_empty() {
        return (None, String::new());
    }
    match user.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

/// A reference normalized as the CRI (docker's `ParseDockerRef`) does:
/// `busybox` → `docker.io/library/busybox:latest`; a tag beside a digest is
/// dropped.
pub fn normalize(r: &str) -> Result<String> {
    let mut p = Reference::parse(r).map_err(Error::invalid)?;
    if p.digest.is_some() {
        p.tag = None;
    }
    Ok(p.to_string())
}

/// Usage of the image filesystem (the default snapshotter's snapshots in
/// `k8s.io`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
    /// Nanoseconds since the epoch.
    pub timestamp: i64,
}

/// The CRI image service over the daemon's image stores and snapshots.
pub struct CriImages {
    stores: ImageStores,
    snapshots: Arc<Snapshots>,
    registry: RegistryConfig,
    /// berthd's root: the snapshotters' directories are below it.
    root: PathBuf,
    /// The configured sandbox image, normalized: pulled pinned.
    sandbox_image: Option<String>,
}

impl CriImages {
    pub fn new(
        stores: ImageStores,
        snapshots: Arc<Snapshots>,
        registry: RegistryConfig,
        root: PathBuf,
    ) -> CriImages {
        CriImages {
            stores,
            snapshots,
            registry,
            root,
            sandbox_image: None,
        }
    }

    /// Pulls of `image` (`[cri] sandbox_image`) are pinned.
    pub fn set_sandbox_image(&mut self, image: &str) -> Result<()> {
        self.sandbox_image = Some(normalize(image).map_err(|e| e.context("sandbox_image"))?);
        Ok(())
    }

    /// Every CRI image of the namespace, by id.
    pub fn all(&self) -> Result<Vec<CriImage>> {
        let records = self.stores.images.list(NAMESPACE, &[])?;
        let mut by_target: BTreeMap<String, Option<CriImage>> = BTreeMap::new();
        let mut out: BTreeMap<String, CriImage> = BTreeMap::new();
        for rec in records {
            let digest = rec.record.target.digest.clone();
            let base = by_target
                .entry(digest)
                .or_insert_with(|| match self.describe(&rec.record.target) {
                    Ok(i) => Some(i),
                    Err(e) => {
                        // As containerd: an image whose content is missing
                        // (or not for this platform) is no CRI image.
                        tracing::debug!(image = %rec.name, "not a CRI image: {}", e.chain());
                        None
                    }
                })
                .clone();
            let Some(base) = base else { continue };
            let pinned =
                rec.record.labels.get(LABEL_PINNED).map(String::as_str) == Some(LABEL_PINNED_VALUE);
            let entry = out.entry(base.id.clone()).or_insert(base);
            entry.references.push(rec.name);
            entry.pinned |= pinned;
        }
        Ok(out
            .into_values()
            .map(|mut i| {
                i.references.sort();
                i
            })
            .collect())
    }

    /// What an image's target holds for this host's platform; the
    /// references are left empty.
    fn describe(&self, target: &Descriptor) -> Result<CriImage> {
        let content = &self.stores.content;
        let (manifest, config, layers) =
            resolve_manifest(content, NAMESPACE, target, &Platform::host())?;
        let data = content.read_all(NAMESPACE, &Digest::parse(&config.digest)?)?;
        let cfg: serde_json::Value = serde_json::from_slice(&data)
            .map_err(|e| Error::invalid(format!("image config {}: {e}", config.digest)))?;
        let mdata = content.read_all(NAMESPACE, &Digest::parse(&manifest.digest)?)?;
        let annotations = serde_json::from_slice::<serde_json::Value>(&mdata)
            .ok()
            .and_then(|m| serde_json::from_value(m["annotations"].clone()).ok())
            .unwrap_or_default();
        let mut size = manifest.size + config.size + layers.iter().map(|l| l.size).sum::<i64>();
        if target.digest != manifest.digest {
            size += target.size;
        }
        let diff_ids: Vec<String> = cfg["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok(CriImage {
            id: config.digest.clone(),
            target: target.clone(),
            references: Vec::new(),
            size: size.max(0) as u64,
            user: cfg["config"]["User"].as_str().unwrap_or("").to_string(),
            pinned: false,
            annotations,
            chain_id: chain_id(&diff_ids),
            config: cfg,
        })
    }

    /// The image `ref_or_id` names: an id (`sha256:…`), a reference (as
    /// the CRI normalizes it) or a unique prefix of an id's hex. None if
    /// there is none.
    pub fn resolve(&self, ref_or_id: &str) -> Result<Option<CriImage>> {
        let all = self.all()?;
        if ref_or_id.is_empty() {
            return Err(Error::invalid("image must be set"));
        }
        if let Some(i) = all.iter().find(|i| i.id == ref_or_id) {
            return Ok(Some(i.clone()));
        }
        if let Ok(name) = normalize(ref_or_id)
            && let Some(i) = all.iter().find(|i| i.references.contains(&name))
        {
            return Ok(Some(i.clone()));
        }
        // A short id, as containerd's digest set looks it up.
        let hex = ref_or_id.strip_prefix("sha256:").unwrap_or(ref_or_id);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let found: Vec<&CriImage> = all
            .iter()
            .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex))
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some((*one).clone())),
            _ => Err(Error::invalid(format!(
                "image id prefix {ref_or_id:?} is ambiguous: it matches {} images",
                found.len()
            ))),
        }
    }

    /// Images, all or the one `filter` names.
    pub fn list(&self, filter: Option<&str>) -> Result<Vec<CriImage>> {
        match filter.filter(|f| !f.is_empty()) {
            None => self.all(),
            Some(f) => Ok(self.resolve(f)?.into_iter().collect()),
        }
    }

    /// Pulls `image` with the kubelet's credentials and unpacks it into the
    /// default snapshotter; returns the image id.
    pub async fn pull(&self, image: &str, auth: Option<&AuthConfig>) -> Result<String> {
        let name = normalize(image)?;
        let creds: Option<Arc<dyn Credentials>> = match auth {
            Some(a) => AuthCredentials::from_cri(a)?.map(|c| Arc::new(c) as Arc<dyn Credentials>),
            None => None,
        };
        let mut labels = Labels::from([(LABEL_IMAGE.into(), LABEL_IMAGE_MANAGED.into())]);
        if self.sandbox_image.as_deref() == Some(&name) {
            labels.insert(LABEL_PINNED.into(), LABEL_PINNED_VALUE.into());
        }
        let (snapshotter, _) = self.snapshots.get("")?;
        let req = PullRequest {
            reference: name.clone(),
            name: name.clone(),
            unpack: vec![(None, snapshotter)],
            labels: labels.clone(),
            ..Default::default()
        };
        let pulled = registry::pull(
            &self.stores,
            &self.registry,
            NAMESPACE,
            req,
            creds,
            Arc::new(|_| {}),
        )
        .await?;
        let target = pulled.record.target.clone();
        let id = self.describe(&target)?.id;
        let parsed = Reference::parse(&name).map_err(Error::invalid)?;
        let repo_digest = format!("{}@{}", parsed.repository(), target.digest);
        let mut made = Vec::new();
        for r in [&id, &repo_digest] {
            if *r == name {
                continue;
            }
            match self.reference(r, &target, &labels) {
                Ok(true) => made.push(r.clone()),
                Ok(false) => {}
                Err(e) => {
                    // Leave no half-made image: drop what this pull added.
                    for m in &made {
                        let _ = self.stores.images.delete(NAMESPACE, m, None, false).await;
                    }
                    return Err(e.context(format!("pull {name}: record {r}")));
                }
            }
        }
        tracing::info!(image = %name, %id, digest = %target.digest, "CRI pulled");
        Ok(id)
    }

    /// Creates or retargets the record `name`; true if it was new.
    fn reference(&self, name: &str, target: &Descriptor, labels: &Labels) -> Result<bool> {
        let img = Image {
            name: name.to_string(),
            record: ImageRecord {
                target: target.clone(),
                labels: labels.clone(),
                ..Default::default()
            },
        };
        let ctx = Ctx::new(NAMESPACE);
        match self.stores.images.create(&ctx, img.clone()) {
            Ok(_) => Ok(true),
            Err(e) if e.is_already_exists() => {
                let mut paths = vec!["target".to_string()];
                paths.extend(labels.keys().map(|k| format!("labels.{k}")));
                self.stores.images.update(NAMESPACE, img, &paths)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes every reference of the image; a missing image is no error.
    pub async fn remove(&self, image: &str) -> Result<()> {
        let Some(img) = self.resolve(image)? else {
            return Ok(());
        };
        let n = img.references.len();
        for (i, r) in img.references.iter().enumerate() {
            // The last deletion waits for the content to be collected.
            match self
                .stores
                .images
                .delete(NAMESPACE, r, None, i + 1 == n)
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.context(format!("remove image {}", img.id))),
            }
        }
        Ok(())
    }

    /// Disk used by the image filesystem: the default snapshotter's
    /// snapshots in `k8s.io`, at its root directory.
    pub fn fs_info(&self) -> Result<FsUsage> {
        let (sn, _) = self.snapshots.get("")?;
        let (mut used_bytes, mut inodes_used) = (0u64, 0u64);
        for info in self.snapshots.list(NAMESPACE, &sn, &[])? {
            match self.snapshots.usage(NAMESPACE, &sn, &info.name) {
                Ok(u) => {
                    used_bytes += u.size.max(0) as u64;
                    inodes_used += u.inodes.max(0) as u64;
                }
                // Removed meanwhile.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(FsUsage {
            mountpoint: self.root.join("snapshots").join(&sn),
            used_bytes,
            inodes_used,
            timestamp: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        })
    }
}

/// The OCI chain id of a layer stack from its diff ids.
pub(crate) fn chain_id(diff_ids: &[String]) -> String {
    let mut it = diff_ids.iter();
    let Some(first) = it.next() else {
        return String::new();
    };
    it.fold(first.clone(), |acc, d| {
        Digest::of(format!("{acc} {d}").as_bytes()).to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_like_docker() {
        let d = format!("sha256:{}", "b".repeat(64));
        for (i, o) in [
            ("busybox", "docker.io/library/busybox:latest".to_string()),
            (
                "registry.k8s.io/pause:3.10",
                "registry.k8s.io/pause:3.10".into(),
            ),
            ("quay.io/a/b", "quay.io/a/b:latest".into()),
            (
                &format!("busybox:1@{d}"),
                format!("docker.io/library/busybox@{d}"),
            ),
        ] {
            assert_eq!(normalize(i).unwrap(), o, "{i}");
        }
        let e = normalize("Not A Ref").unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::InvalidArgument);
    }

    #[test]
    fn users_split_like_containerd() {
        assert_eq!(uid_or_username(""), (None, String::new()));
        assert_eq!(uid_or_username("1000"), (Some(1000), String::new()));
        assert_eq!(uid_or_username("1000:50"), (Some(1000), String::new()));
        assert_eq!(uid_or_username("nobody:nogroup"), (None, "nobody".into()));
    }

    #[test]
    fn tags_digests_and_ids_are_told_apart() {
        let d = format!("sha256:{}", "c".repeat(64));
        let i = CriImage {
            id: d.clone(),
            target: Descriptor::default(),
            references: vec![
                d.clone(),
                format!("docker.io/library/busybox@{d}"),
                "docker.io/library/busybox:1".into(),
            ],
            size: 0,
            user: String::new(),
            pinned: false,
            annotations: Default::default(),
            chain_id: String::new(),
            config: serde_json::Value::Null,
        };
        let (t, g) = i.repo_tags_and_digests();
        assert_eq!(t, vec!["docker.io/library/busybox:1".to_string()]);
        assert_eq!(g, vec![format!("docker.io/library/busybox@{d}")]);
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = format!("sha256:{}", "1".repeat(64));
        let b = format!("sha256:{}", "2".repeat(64));
        assert_eq!(chain_id(std::slice::from_ref(&a)), a);
        let want = Digest::of(format!("{a} {b}").as_bytes()).to_string();
        assert_eq!(chain_id(&[a, b]), want);
        assert_eq!(chain_id(&[]), "");
    }
}

#[cfg(test)]
#[path = "images_tests.rs"]
mod store_tests;
