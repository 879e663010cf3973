//! Image-archive rules shared by berthd's import and export and by
//! berthctl's client-side ones (for daemons without a Transfer service), so
//! that both read and write archives alike: the paths and links of an
//! archive's members, the names an import gives images (the archive's own
//! names, `--base-name`, `--digests`, the `import-<date>` fallback), the
//! conversion of a docker-archive `manifest.json` entry into an image
//! manifest, and the names an export writes. Pure functions over parsed
//! JSON and strings; reading the tar and storing blobs stay with each side.

use crate::reference::Reference;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Read;

/// Largest metadata file (index.json, manifest.json) read into memory.
pub const MAX_METADATA: u64 = 16 << 20;
/// The `oci-layout` file an export writes.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Annotation carrying an image's full name in an OCI layout's index.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Annotation carrying a manifest's tag (or name) in an OCI layout's index.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Media types an archive's images are written with.
pub mod media {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

/// Why an archive cannot be imported. Every variant is the archive's fault
/// (an invalid argument), except [`ArchiveError::NoManifestForPlatform`],
/// which is a not-found.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "malformed or truncated image archive: {0}; expected an OCI image layout or docker-archive tar"
    )]
    Malformed(String),
    #[error("{0} in the archive is larger than {MAX_METADATA} bytes")]
    MetadataTooLarge(String),
    #[error(
        "not an OCI image layout or docker-archive: the archive has neither index.json nor manifest.json"
    )]
    NotAnArchive,
    #[error("the archive holds no image named under {0:?}")]
    NoImageUnder(String),
    #[error(
        "the archive names no image: give a base name (--base-name) or ask for digest names (--digests)"
    )]
    NoImageNamed,
    #[error("the archive is missing blob {digest} ({what}): it is referenced but not included")]
    MissingBlob { digest: String, what: String },
    #[error("index {index} has no manifest for platform {platform} (it has: {})", have.join(", "))]
    NoManifestForPlatform {
        index: String,
        platform: String,
        have: Vec<String>,
    },
    /// A ref name in index.json that is no image reference.
    #[error("{0}")]
    RefName(String),
    #[error("docker-archive: config {0:?} named in manifest.json is not in the archive")]
    DockerConfigMissing(String),
    #[error("docker-archive: layer {0:?} named in manifest.json is not in the archive")]
    DockerLayerMissing(String),
    #[error("docker-archive: RepoTags: {0}")]
    DockerRepoTag(String),
}

impl ArchiveError {
    /// The error for an import that found no image to create.
    pub fn no_image(base_name: Option<&str>) -> Self {
        match base_name {
            Some(b) => Self::NoImageUnder(b.to_string()),
            None => Self::NoImageNamed,
        }
    }

    /// Whether this is a not-found rather than an invalid argument.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NoManifestForPlatform { .. })
    }
}

/// An archive member's path as the archive's metadata names it.
pub fn clean_path(p: &str) -> String {
    p.trim_start_matches("./").trim_end_matches('/').to_string()
}

/// Whether `path` is a metadata file kept in memory rather than a blob.
pub fn is_metadata(path: &str) -> bool {
    matches!(
        path,
        "index.json" | "manifest.json" | "oci-layout" | "repositories"
    )
}

/// Reads the metadata file `path` (see [`is_metadata`]) from `r`, refusing
/// one over [`MAX_METADATA`] bytes (it is held in memory).
pub fn read_metadata(r: &mut impl Read, path: &str) -> Result<Vec<u8>, ArchiveError> {
    let mut data = Vec::new();
    r.take(MAX_METADATA + 1)
        .read_to_end(&mut data)
        .map_err(|e| ArchiveError::Malformed(e.to_string()))?;
    if data.len() as u64 > MAX_METADATA {
        return Err(ArchiveError::MetadataTooLarge(path.to_string()));
    }
    Ok(data)
}

/// Where an export stores the blob `digest` (`sha256:<hex>`).
pub fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// A regular member of the archive, once it is in the content store.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub size: i64,
    /// Its first bytes (to tell gzip and zstd layers from plain tar).
    pub magic: [u8; 4],
}

/// The archive's stored members by path, and its links between them
/// (docker save links duplicate layers to one copy).
#[derive(Debug, Default)]
pub struct Members {
    files: HashMap<String, Blob>,
    links: HashMap<String, String>,
}

impl Members {
    pub fn add_file(&mut self, path: String, blob: Blob) {
        self.files.insert(path, blob);
    }

    /// Records the link at `path` to `target` (relative to `path`'s folder
    /// for a symlink, to the archive's root for a hard link).
    pub fn add_link(&mut self, path: String, target: &str, symlink: bool) {
        let resolved = if symlink {
            resolve_relative(&path, target)
        } else {
            clean_path(target)
        };
        self.links.insert(path, resolved);
    }

    /// The member at `path`, following links (a few hops: a cycle ends it).
    pub fn lookup(&self, path: &str) -> Option<&Blob> {
        let mut p = clean_path(path);
        for _ in 0..8 {
            if let Some(b) = self.files.get(&p) {
                return Some(b);
            }
            p = self.links.get(&p)?.clone();
        }
        None
    }
}

fn resolve_relative(path: &str, target: &str) -> String {
    if let Some(abs) = target.strip_prefix('/') {
        return clean_path(abs);
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// A layer's media type from its first bytes, as docker save does not say.
pub fn layer_media_type(magic: [u8; 4]) -> &'static str {
    match magic {
        [0x1f, 0x8b, ..] => media::DOCKER_LAYER_GZIP,
        [0x28, 0xb5, 0x2f, 0xfd] => media::OCI_LAYER_ZSTD,
        _ => media::DOCKER_LAYER,
    }
}

/// The image manifest (docker schema 2) for a docker-archive entry whose
/// config and layers are the members at `config` and `layers`.
pub fn docker_manifest<'a>(
    members: &Members,
    config: &str,
    layers: impl IntoIterator<Item = &'a str>,
) -> Result<Value, ArchiveError> {
    let cfg = members
        .lookup(config)
        .ok_or_else(|| ArchiveError::DockerConfigMissing(config.to_string()))?;
    let mut ls = Vec::new();
    for l in layers {
        let b = members
            .lookup(l)
            .ok_or_else(|| ArchiveError::DockerLayerMissing(l.to_string()))?;
        ls.push(json!({
            "mediaType": layer_media_type(b.magic), "size": b.size, "digest": b.digest,
        }));
    }
    Ok(json!({
        "schemaVersion": 2,
        "mediaType": media::DOCKER_MANIFEST,
        "config": {
            "mediaType": media::DOCKER_CONFIG,
            "size": cfg.size,
            "digest": cfg.digest,
        },
        "layers": ls,
    }))
}

/// The names an import gives the images an archive holds.
#[derive(Debug, Clone)]
pub struct NameRules {
    /// Name prefix (`--base-name`): OCI tags become `<base>:<tag>`, and only
    /// images under it are imported.
    pub base_name: Option<String>,
    /// Also name each image `<name>@<digest>` (`--digests`).
    pub digests: bool,
    /// The date in the fallback repository `import-<date>`.
    pub date: String,
}

impl NameRules {
    /// The rules for an import made today.
    pub fn new(base_name: Option<String>, digests: bool) -> Self {
        let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
        NameRules {
            base_name,
            digests,
            date,
        }
    }

    /// Names for an OCI index entry with digest `digest` and the image-name
    /// (`full`) and ref-name annotations; none means it is not imported.
    pub fn oci(
        &self,
        full: Option<&str>,
        refname: Option<&str>,
        digest: &str,
    ) -> Result<Vec<String>, ArchiveError> {
        let mut names = Vec::new();
        match &self.base_name {
            Some(base) => {
                if let Some(r) = refname.filter(|r| is_bare_tag(r)) {
                    names.push(format!("{base}:{r}"));
                } else if let Some(f) = full.or(refname).filter(|f| f.starts_with(base.as_str())) {
                    names.push(f.to_string());
                }
            }
            None => {
                if let Some(f) = full {
                    names.push(f.to_string());
                } else if let Some(r) = refname {
                    if is_bare_tag(r) {
                        names.push(format!("import-{}:{r}", self.date));
                    } else {
                        names.push(
                            Reference::parse(r)
                                .map_err(ArchiveError::RefName)?
                                .to_string(),
                        );
                    }
                }
            }
        }
        if self.digests {
            names.push(self.digest_name(&names, digest));
        }
        Ok(names)
    }

    /// Names for a docker-archive entry with RepoTags `repo_tags` whose
    /// manifest has digest `digest`: an untagged one gets a digest name.
    pub fn docker<'a>(
        &self,
        repo_tags: impl IntoIterator<Item = &'a str>,
        digest: &str,
    ) -> Result<Vec<String>, ArchiveError> {
        let mut names = Vec::new();
        for t in repo_tags {
            names.push(
                Reference::parse(t)
                    .map_err(ArchiveError::DockerRepoTag)?
                    .to_string(),
            );
        }
        if self.digests || names.is_empty() {
            names.push(self.digest_name(&names, digest));
        }
        if let Some(b) = &self.base_name {
            names.retain(|n| n.starts_with(b.as_str()));
        }
        Ok(names)
    }

    /// `<repository>@<digest>`, the repository being the first name's, the
    /// base name or `import-<date>`.
    fn digest_name(&self, names: &[String], digest: &str) -> String {
        let base = names
            .first()
            .and_then(|n| Reference::parse(n).ok())
            .map(|r| r.repository())
            .or_else(|| self.base_name.clone())
            .unwrap_or_else(|| format!("import-{}", self.date));
        format!("{base}@{digest}")
    }
}

fn is_bare_tag(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.contains(':') && !s.contains('@')
}

/// The tag an export writes as the ref-name annotation of image `name`.
pub fn ref_name(name: &str) -> Option<String> {
    Reference::parse(name).ok().and_then(|r| r.tag)
}

/// The RepoTags an export writes in manifest.json for image `name`: its
/// familiar name when it is tagged.
pub fn repo_tags(name: &str) -> Option<Vec<String>> {
    Reference::parse(name)
        .ok()
        .filter(|r| r.tag.is_some())
        .map(|r| vec![r.familiar()])
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn rules(base: Option<&str>, digests: bool) -> NameRules {
        NameRules {
            base_name: base.map(str::to_string),
            digests,
            date: "2024-05-06".into(),
        }
    }

    #[test]
    fn links_resolve_relative_to_their_folder_and_cycles_end() {
        assert_eq!(
            resolve_relative("b/layer.tar", "../a/layer.tar"),
            "a/layer.tar"
        );
        assert_eq!(resolve_relative("x", "/y/z"), "y/z");
        assert_eq!(clean_path("./blobs/sha256/"), "blobs/sha256");
        let mut m = Members::default();
        let blob = Blob {
            digest: D.into(),
            size: 3,
            magic: [0; 4],
        };
        m.add_file("a/layer.tar".into(), blob);
        m.add_link("b/layer.tar".into(), "../a/layer.tar", true);
        m.add_link("c/layer.tar".into(), "./b/layer.tar", false);
        m.add_link("x".into(), "y", false);
        m.add_link("y".into(), "x", false);
        assert_eq!(m.lookup("./c/layer.tar").map(|b| b.size), Some(3));
        assert!(m.lookup("x").is_none() && m.lookup("nope").is_none());
    }

    #[test]
    fn oci_names_follow_annotations_base_name_and_digests() {
        let r = rules(None, false);
        assert_eq!(
            r.oci(Some("docker.io/library/a:1"), Some("1"), D).unwrap(),
            ["docker.io/library/a:1"]
        );
        assert_eq!(
            r.oci(None, Some("v1"), D).unwrap(),
            ["import-2024-05-06:v1"]
        );
        assert_eq!(
            r.oci(None, Some("busybox:1"), D).unwrap(),
            ["docker.io/library/busybox:1"]
        );
        assert!(r.oci(None, None, D).unwrap().is_empty());
        assert!(matches!(
            r.oci(None, Some("UPPER/x:1"), D),
            Err(ArchiveError::RefName(_))
        ));
        let b = rules(Some("example.com/app"), false);
        assert_eq!(
            b.oci(Some("docker.io/library/a:1"), Some("v2"), D).unwrap(),
            ["example.com/app:v2"]
        );
        assert_eq!(
            b.oci(Some("example.com/app:3"), None, D).unwrap(),
            ["example.com/app:3"]
        );
        assert!(
            b.oci(Some("docker.io/library/a:1"), None, D)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            rules(None, true).oci(None, Some("v1"), D).unwrap(),
            // The digest name takes the first name's repository, normalised.
            [
                "import-2024-05-06:v1".to_string(),
                format!("docker.io/library/import-2024-05-06@{D}")
            ]
        );
        assert_eq!(
            rules(Some("example.com/app"), true)
                .oci(None, None, D)
                .unwrap(),
            [format!("example.com/app@{D}")]
        );
    }

    #[test]
    fn docker_names_follow_repo_tags_base_name_and_digests() {
        let r = rules(None, false);
        assert_eq!(
            r.docker(["busybox:1"], D).unwrap(),
            ["docker.io/library/busybox:1"]
        );
        assert_eq!(r.docker([], D).unwrap(), [format!("import-2024-05-06@{D}")]);
        assert_eq!(
            rules(None, true).docker(["busybox:1"], D).unwrap(),
            [
                "docker.io/library/busybox:1".to_string(),
                format!("docker.io/library/busybox@{D}")
            ]
        );
        let b = rules(Some("docker.io/library/a"), false);
        assert_eq!(
            b.docker(["a:1", "b:1"], D).unwrap(),
            ["docker.io/library/a:1"]
        );
        assert_eq!(
            b.docker([], D).unwrap(),
            [format!("docker.io/library/a@{D}")]
        );
        assert!(matches!(
            r.docker(["Bad Tag"], D),
            Err(ArchiveError::DockerRepoTag(_))
        ));
    }

    #[test]
    fn docker_entries_become_schema2_manifests() {
        let mut m = Members::default();
        let cfg = "sha256:".to_string() + &"c".repeat(64);
        m.add_file(
            "cfg.json".into(),
            Blob {
                digest: cfg.clone(),
                size: 10,
                magic: *b"{\"ar",
            },
        );
        for (p, magic) in [
            ("gz/layer.tar", [0x1f, 0x8b, 8, 0]),
            ("zst/layer.tar", [0x28, 0xb5, 0x2f, 0xfd]),
            ("tar/layer.tar", *b"etc/"),
        ] {
            m.add_file(
                p.into(),
                Blob {
                    digest: D.into(),
                    size: 20,
                    magic,
                },
            );
        }
        m.add_link("dup/layer.tar".into(), "../gz/layer.tar", true);
        let v = docker_manifest(
            &m,
            "cfg.json",
            [
                "gz/layer.tar",
                "zst/layer.tar",
                "tar/layer.tar",
                "dup/layer.tar",
            ],
        )
        .unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], media::DOCKER_MANIFEST);
        assert_eq!(
            v["config"],
            json!({"mediaType": media::DOCKER_CONFIG, "size": 10, "digest": cfg})
        );
        let types: Vec<&str> = v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                media::DOCKER_LAYER_GZIP,
                media::OCI_LAYER_ZSTD,
                media::DOCKER_LAYER,
                media::DOCKER_LAYER_GZIP
            ]
        );
        assert!(matches!(
            docker_manifest(&m, "nope.json", []),
            Err(ArchiveError::DockerConfigMissing(p)) if p == "nope.json"
        ));
        assert!(matches!(
            docker_manifest(&m, "cfg.json", ["gone.tar"]),
            Err(ArchiveError::DockerLayerMissing(p)) if p == "gone.tar"
        ));
    }

    #[test]
    fn export_names_and_errors_read_as_before() {
        assert_eq!(ref_name("busybox:1").as_deref(), Some("1"));
        assert_eq!(ref_name(&format!("busybox@{D}")), None);
        assert_eq!(
            repo_tags("docker.io/library/busybox:1"),
            Some(vec!["busybox:1".into()])
        );
        assert_eq!(repo_tags(&format!("busybox@{D}")), None);
        assert_eq!(blob_path(D), format!("blobs/sha256/{}", &D[7..]));
        let big = vec![b' '; usize::try_from(MAX_METADATA).unwrap() + 1];
        assert!(matches!(
            read_metadata(&mut big.as_slice(), "index.json"),
            Err(ArchiveError::MetadataTooLarge(p)) if p == "index.json"
        ));
        assert_eq!(read_metadata(&mut &b"{}"[..], "index.json").unwrap(), b"{}");
        assert_eq!(
            ArchiveError::no_image(Some("x")).to_string(),
            "the archive holds no image named under \"x\""
        );
        let e = ArchiveError::NoManifestForPlatform {
            index: D.into(),
            platform: "linux/amd64".into(),
            have: vec!["linux/arm64".into(), "linux/s390x".into()],
        };
        assert!(e.is_not_found());
        assert!(
            e.to_string()
                .ends_with("(it has: linux/arm64, linux/s390x)")
        );
    }
}
