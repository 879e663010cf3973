//! Test images and certificates for `cri_images.rs`.

use berth_tests::{run_openssl, self_signed};
use std::path::Path;

/// An OCI layout tar, tagged `1`: an index of a manifest for this host
/// (one small layer, config `User` = `user`) and one for another
/// architecture. Returns the tar and the host manifest's size parts.
pub fn user_image(user: &str) -> (Vec<u8>, u64) {
    use berth_tests::{host_arch, layer_tar, sha256};
    use std::io::Write;
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut entries = Vec::new();
    let mut host_size = 0u64;
    for arch in [host_arch(), "s390x"] {
        let layer = layer_tar(&[("etc/arch", arch.as_bytes())]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer).unwrap();
        let gz = gz.finish().unwrap();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux", "config": {"User": user, "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&gz), "size": gz.len()}],
        }))
        .unwrap();
        if arch == host_arch() {
            host_size = (gz.len() + config.len() + manifest.len()) as u64;
        }
        entries.push(serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest), "size": manifest.len(), "platform": {"os": "linux", "architecture": arch}}));
        blobs.extend([
            (sha256(&gz), gz),
            (sha256(&config), config),
            (sha256(&manifest), manifest),
        ]);
    }
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries,
    }))
    .unwrap();
    host_size += inner.len() as u64;
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(&inner),
        "size": inner.len(), "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))
    .unwrap();
    blobs.push((sha256(&inner), inner));
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for (d, data) in &blobs {
        add(&format!("blobs/sha256/{}", &d[7..]), data);
    }
    add("index.json", &index);
    (b.into_inner().unwrap(), host_size)
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it
/// (`cert.pem`, `key.pem`) in `dir`.
pub fn tls_files(openssl: &Path, dir: &Path) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    self_signed(
        openssl,
        "berth-cri-ca",
        &dir.join("ca.key"),
        &dir.join("ca.pem"),
    );
    let subj = ["-subj", "/CN=127.0.0.1"];
    let (key, csr, cert) = (p("key.pem"), p("server.csr"), p("cert.pem"));
    let req = [
        "req", "-newkey", "rsa:2048", "-nodes", subj[0], subj[1], "-keyout", &key, "-out", &csr,
    ];
    run_openssl(openssl, &req);
    let (ca, cakey, ext) = (p("ca.pem"), p("ca.key"), p("ext.cnf"));
    let sign = [
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &cakey,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ];
    run_openssl(openssl, &sign);
}
