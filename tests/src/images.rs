//! Image and blob helpers: digests, OCI archives built in memory, reading
//! a tar member, and checks on a content store's blobs.

use std::path::Path;
use std::process::Command;

/// sha256 of bytes, as `sha256:<hex>`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Every committed blob on disk hashes to its name (none is partial).
pub fn assert_blobs_intact(root: &Path) {
    let dir = root.join("content/blobs/sha256");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in rd {
        let e = e.expect("entry");
        let data = std::fs::read(e.path()).expect("read blob");
        let name = e.file_name().to_string_lossy().to_string();
        assert_eq!(
            sha256(&data),
            format!("sha256:{name}"),
            "blob {name} under blobs/ does not match its digest (partial write visible)"
        );
    }
}

/// Names of the blobs on disk.
pub fn blobs_on_disk(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("content/blobs/sha256"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads one file out of a tar archive.
pub fn tar_member(archive: &Path, member: &str) -> Option<Vec<u8>> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// A layer tar built from `(path, contents)` files (directories implied).
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, p, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

/// An OCI image layout tar with the given uncompressed layers (gzipped
/// inside), tagged `tag`. `diff_ids` overrides the config's diff IDs.
pub fn oci_image(layers: &[Vec<u8>], tag: &str, diff_ids: Option<Vec<String>>) -> Vec<u8> {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let manifest = image_manifest(&mut blobs, layers, host_arch(), diff_ids);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest),
            "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))
    .expect("json");
    blobs.push((sha256(&manifest), manifest));
    image_layout(&blobs, &index)
}

/// An OCI image-layout tar holding a multi-platform image tagged `tag`: one
/// manifest per `(architecture, layers)` entry (linux), under an index.
pub fn oci_multi_platform_image(entries: &[(&str, Vec<Vec<u8>>)], tag: &str) -> Vec<u8> {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifests = Vec::new();
    for (arch, layers) in entries {
        let m = image_manifest(&mut blobs, layers, arch, None);
        manifests.push(serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&m), "size": m.len(), "platform": {"os": "linux", "architecture": arch}}));
        blobs.push((sha256(&m), m));
    }
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests,
    }))
    .expect("json");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(&inner),
            "size": inner.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))
    .expect("json");
    blobs.push((sha256(&inner), inner));
    image_layout(&blobs, &index)
}

/// Adds gzipped `layers` and a config for `arch` to `blobs`; returns the
/// manifest (not yet added).
fn image_manifest(
    blobs: &mut Vec<(String, Vec<u8>)>,
    layers: &[Vec<u8>],
    arch: &str,
    diff_ids: Option<Vec<String>>,
) -> Vec<u8> {
    use std::io::Write;
    let mut descs = Vec::new();
    let mut ids = Vec::new();
    for l in layers {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(l).expect("gzip");
        let gz = gz.finish().expect("gzip");
        ids.push(sha256(l));
        descs.push(
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256(&gz), "size": gz.len()}),
        );
        blobs.push((sha256(&gz), gz));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.unwrap_or(ids)},
    }))
    .expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": descs,
    }))
    .expect("json");
    blobs.push((sha256(&config), config));
    manifest
}

fn image_layout(blobs: &[(String, Vec<u8>)], index: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("append");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for (d, data) in blobs {
        add(&format!("blobs/sha256/{}", &d[7..]), data);
    }
    add("index.json", index);
    b.into_inner().expect("tar")
}

/// The host's architecture in OCI terms.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
