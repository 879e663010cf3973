//! OCI and Docker image structures: media types, platforms, and parsing of
//! manifests and indexes (through `oci-spec`) into the few facts the daemon
//! walks: which blobs a manifest or index references, and which manifest of
//! an image in the content store serves a platform.

use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::types::{Descriptor, Digest, Labels};
use oci_spec::image::{ImageIndex, ImageManifest};

/// Media types the daemon recognises.
pub mod media {
    // Those an image archive is written with are defined with its rules.
    pub use berth_proto::archive::media::{
        DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_INDEX, OCI_LAYER_ZSTD,
    };
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

/// Annotations naming an image fully (containerd's export writes it) and a
/// tag (or full reference) in an image layout.
pub use berth_proto::archive::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};

/// True for index (manifest list) media types.
pub fn is_index(mt: &str) -> bool {
    mt == media::OCI_INDEX || mt == media::DOCKER_LIST
}

/// True for image manifest media types.
pub fn is_manifest(mt: &str) -> bool {
    mt == media::OCI_MANIFEST || mt == media::DOCKER_MANIFEST
}

/// An OS/architecture/variant triple.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

impl Platform {
    /// The platform this daemon runs on.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "aarch64" => ("arm64", "v8"),
            "arm" => ("arm", "v7"),
            "x86" => ("386", ""),
            "powerpc64" => ("ppc64le", ""),
            "s390x" => ("s390x", ""),
            "riscv64" => ("riscv64", ""),
            other => (other, ""),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: arch.to_string(),
            variant: variant.to_string(),
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: String::new(),
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: v.to_string(),
            }),
            _ => Err(Error::invalid(format!(
                "platform {s:?} is invalid: expected os/arch[/variant], e.g. linux/amd64"
            ))),
        }
    }

    /// True if an image for `other` runs on `self`: same OS and
    /// architecture, and the same variant when both name one (arm64's
    /// default variant is v8).
    pub fn matches(&self, other: &Platform) -> bool {
        let norm = |p: &Platform| {
            if p.architecture == "arm64" && p.variant.is_empty() {
                "v8".to_string()
            } else {
                p.variant.clone()
            }
        };
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_empty() || other.variant.is_empty() || norm(self) == norm(other))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// A child reference of an index.
#[derive(Debug, Clone)]
pub struct Child {
    pub desc: Descriptor,
    pub platform: Option<Platform>,
}

/// The references a manifest or index holds.
#[derive(Debug, Clone)]
pub enum Node {
    Index(Vec<Child>),
    Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

fn desc(d: &oci_spec::image::Descriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size() as i64,
        annotations: d.annotations().clone().unwrap_or_default(),
    }
}

/// Parses a manifest or index blob of media type `mt`. Schema 1 manifests
/// are refused with a clear message.
pub fn parse(mt: &str, data: &[u8]) -> Result<Node> {
    if mt == media::DOCKER_SCHEMA1 || mt == media::DOCKER_SCHEMA1_SIGNED {
        return Err(Error::invalid(
            "Docker schema 1 manifests are not supported: push the image again with a current Docker or use an OCI image",
        ));
    }
    let as_index = is_index(mt)
        || (!is_manifest(mt)
            && serde_json::from_slice::<serde_json::Value>(data)
                .ok()
                .is_some_and(|v| v.get("manifests").is_some()));
    if as_index {
        let idx = ImageIndex::from_reader(data)
            .map_err(|e| Error::invalid(format!("image index is malformed: {e}")))?;
        return Ok(Node::Index(
            idx.manifests()
                .iter()
                .map(|m| Child {
                    desc: desc(m),
                    platform: m.platform().as_ref().map(|p| Platform {
                        os: p.os().to_string(),
                        architecture: p.architecture().to_string(),
                        variant: p.variant().clone().unwrap_or_default(),
                    }),
                })
                .collect(),
        ));
    }
    let m = ImageManifest::from_reader(data)
        .map_err(|e| Error::invalid(format!("image manifest is malformed: {e}")))?;
    Ok(Node::Manifest {
        config: desc(m.config()),
        layers: m.layers().iter().map(desc).collect(),
    })
}

/// The garbage-collection reference labels a parent blob carries for its
/// children, named as containerd names them.
pub fn child_labels(node: &Node) -> Labels {
    let mut l = Labels::new();
    match node {
        Node::Index(children) => {
            for (i, c) in children.iter().enumerate() {
                l.insert(
                    format!("containerd.io/gc.ref.content.m.{i}"),
                    c.desc.digest.clone(),
                );
            }
        }
        Node::Manifest { config, layers } => {
            l.insert(
                "containerd.io/gc.ref.content.config".into(),
                config.digest.clone(),
            );
            for (i, d) in layers.iter().enumerate() {
                l.insert(
                    format!("containerd.io/gc.ref.content.l.{i}"),
                    d.digest.clone(),
                );
            }
        }
    }
    l
}

/// Finds the manifest for `platform` under `target`.
pub fn resolve_manifest(
    content: &ContentStore,
    ns: &str,
    target: &Descriptor,
    platform: &Platform,
) -> Result<(Descriptor, Descriptor, Vec<Descriptor>)> {
    let mut desc = target.clone();
    for _ in 0..4 {
        let d = Digest::parse(&desc.digest)?;
        let data = content.read_all(ns, &d)?;
        match parse(&desc.media_type, &data)? {
            Node::Index(children) => {
                let c = children
                    .iter()
                    .find(|c| c.platform.as_ref().is_none_or(|p| platform.matches(p)))
                    .ok_or_else(|| {
                        Error::not_found(format!(
                            "image index {d} has no manifest for platform {platform}"
                        ))
                    })?;
                desc = c.desc.clone();
            }
            Node::Manifest { config, layers } => return Ok((desc, config, layers)),
        }
    }
    Err(Error::invalid("image indexes nest too deeply"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let h = Platform::host();
        assert!(h.matches(&h));
        let a = Platform::parse("linux/arm64").unwrap();
        let b = Platform::parse("linux/arm64/v8").unwrap();
        assert!(a.matches(&b) && b.matches(&a));
        assert!(!a.matches(&Platform::parse("linux/amd64").unwrap()));
        assert!(Platform::parse("linux").is_err());
        assert_eq!(b.to_string(), "linux/arm64/v8");
    }

    #[test]
    fn parses_and_labels() {
        let d = format!("sha256:{}", "a".repeat(64));
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{d}","size":2}},"layers":[{{"mediaType":"{}","digest":"{d}","size":3}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP
        );
        let n = parse(media::DOCKER_MANIFEST, m.as_bytes()).unwrap();
        let l = child_labels(&n);
        assert_eq!(l["containerd.io/gc.ref.content.config"], d);
        assert_eq!(l["containerd.io/gc.ref.content.l.0"], d);
        let e = parse(media::DOCKER_SCHEMA1_SIGNED, b"{}").unwrap_err();
        assert!(e.message().contains("schema 1"));
        assert!(parse(media::OCI_MANIFEST, b"{nope").is_err());
    }
}
