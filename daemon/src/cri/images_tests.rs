//! The CRI view of image records, over a real [`Core`] on a temp root:
//! which records are CRI images, how references group, pinning, lookups
//! by id, reference and short id, and removal.

use super::*;
use crate::core::Core;
use crate::images::oci::media;
use std::time::Duration;

struct Fixture {
    _dir: tempfile::TempDir,
    core: Arc<Core>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::open(
        &dir.path().join("root"),
        &dir.path().join("state"),
        Duration::from_millis(10),
    )
    .unwrap();
    Fixture { _dir: dir, core }
}

fn cri_images(core: &Core) -> CriImages {
    CriImages::new(
        core.image_stores(),
        core.snapshots.clone(),
        core.registry.clone(),
        core.root.clone(),
    )
}

fn put(core: &Arc<Core>, ns: &str, data: &[u8]) -> Descriptor {
    let d = Digest::of(data);
    core.content
        .write_blob(
            &Ctx::new(ns),
            &format!("test-{d}"),
            &mut &data[..],
            Some(d.clone()),
            Labels::new(),
        )
        .unwrap();
    Descriptor {
        media_type: String::new(),
        digest: d.to_string(),
        size: data.len() as i64,
        annotations: Default::default(),
    }
}

/// An image with config `{"config":{"User":user}}` plus `salt`; returns
/// the manifest's descriptor and the id (config digest).
fn image(core: &Arc<Core>, ns: &str, user: &str, salt: u32) -> (Descriptor, String) {
    let layer = put(core, ns, format!("layer {salt}").as_bytes());
    let config = serde_json::json!({
        "architecture": Platform::host().architecture, "os": "linux",
        "config": {"User": user}, "salt": salt,
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    })
    .to_string();
    let config = put(core, ns, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": media::OCI_LAYER, "digest": layer.digest, "size": layer.size}],
        "annotations": {"org.example": "yes"},
    })
    .to_string();
    let mut m = put(core, ns, manifest.as_bytes());
    m.media_type = media::OCI_MANIFEST.into();
    (m, config.digest)
}

fn record(core: &Arc<Core>, ns: &str, name: &str, target: &Descriptor, labels: Labels) {
    let img = Image {
        name: name.into(),
        record: ImageRecord {
            target: target.clone(),
            labels,
            ..Default::default()
        },
    };
    core.images.create(&Ctx::new(ns), img).unwrap();
}

#[tokio::test]
async fn records_group_by_config_and_resolve() {
    let f = fixture();
    let cri = cri_images(&f.core);
    let (m, id) = image(&f.core, NAMESPACE, "1000:1000", 0);
    // Made by another client (no CRI label): still a CRI image.
    record(
        &f.core,
        NAMESPACE,
        "docker.io/library/app:1",
        &m,
        Labels::new(),
    );
    record(
        &f.core,
        NAMESPACE,
        &id,
        &m,
        Labels::from([(LABEL_PINNED.into(), LABEL_PINNED_VALUE.into())]),
    );
    // Another namespace is not the CRI's.
    let (other, _) = image(&f.core, "default", "", 1);
    record(
        &f.core,
        "default",
        "docker.io/library/other:1",
        &other,
        Labels::new(),
    );
    // A record whose content is missing is no CRI image.
    let missing = Descriptor {
        media_type: media::OCI_MANIFEST.into(),
        digest: format!("sha256:{}", "e".repeat(64)),
        size: 10,
        annotations: Default::default(),
    };
    record(
        &f.core,
        NAMESPACE,
        "docker.io/library/gone:1",
        &missing,
        Labels::new(),
    );

    let all = cri.all().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let i = &all[0];
    assert_eq!(i.id, id);
    assert_eq!(
        i.references,
        vec!["docker.io/library/app:1".to_string(), id.clone()]
    );
    assert!(i.pinned, "one pinned reference pins the image");
    assert_eq!(i.uid_or_username(), (Some(1000), String::new()));
    assert_eq!(
        i.annotations.get("org.example").map(String::as_str),
        Some("yes")
    );
    let layers: i64 = 7; // "layer 0"
    let config = f
        .core
        .content
        .read_all(NAMESPACE, &Digest::parse(&id).unwrap())
        .unwrap()
        .len() as i64;
    assert_eq!(i.size as i64, m.size + config + layers);

    for name in [
        "app:1",
        "docker.io/library/app:1",
        id.as_str(),
        &id[7..15],
        &id[..15],
    ] {
        assert_eq!(
            cri.resolve(name).unwrap().map(|i| i.id),
            Some(id.clone()),
            "{name}"
        );
    }
    assert!(cri.resolve("app:2").unwrap().is_none());
    assert!(cri.resolve("gone:1").unwrap().is_none());
    assert!(cri.resolve("").is_err());
    assert_eq!(cri.list(Some("app:1")).unwrap().len(), 1);
    assert!(cri.list(Some("nope")).unwrap().is_empty());

    cri.remove("app:1").await.unwrap();
    assert!(cri.all().unwrap().is_empty());
    assert!(
        f.core.images.get(NAMESPACE, &id).is_err(),
        "every reference removed"
    );
    assert!(
        f.core
            .images
            .get("default", "docker.io/library/other:1")
            .is_ok()
    );
    cri.remove("app:1")
        .await
        .expect("a missing image removes fine");
}

#[tokio::test]
async fn short_ids_shared_by_two_images_are_ambiguous() {
    let f = fixture();
    let cri = cri_images(&f.core);
    let (m0, id0) = image(&f.core, NAMESPACE, "", 0);
    record(
        &f.core,
        NAMESPACE,
        "docker.io/library/a:1",
        &m0,
        Labels::new(),
    );
    // Find a second image whose id starts with the same hex digit.
    let (m1, id1) = (1..500)
        .map(|salt| image(&f.core, NAMESPACE, "", salt))
        .find(|(_, id)| id[7..8] == id0[7..8])
        .expect("a shared first digit within 500 tries");
    record(
        &f.core,
        NAMESPACE,
        "docker.io/library/b:1",
        &m1,
        Labels::new(),
    );
    let e = cri.resolve(&id0[7..8]).unwrap_err();
    assert!(e.message().contains("ambiguous"), "{e}");
    assert_eq!(cri.resolve(&id1).unwrap().map(|i| i.id), Some(id1));
}

#[tokio::test]
async fn sandbox_image_names_are_normalized() {
    let f = fixture();
    let mut cri = cri_images(&f.core);
    cri.set_sandbox_image("registry.k8s.io/pause:3.10").unwrap();
    assert_eq!(
        cri.sandbox_image.as_deref(),
        Some("registry.k8s.io/pause:3.10")
    );
    cri.set_sandbox_image("pause").unwrap();
    assert_eq!(
        cri.sandbox_image.as_deref(),
        Some("docker.io/library/pause:latest")
    );
    assert!(cri.set_sandbox_image("Bad Name").is_err());
}
