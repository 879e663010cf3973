//! Snapshots, unpack and diff through berthd: berthctl's default unpack,
//! garbage collection of snapshots, unpack verification, and the Diff
//! service's round trip. Needs root (mounts).

use berth_proto::client::request;

use berth_proto::services::diff::v1 as dapi;
use berth_proto::services::diff::v1::diff_client::DiffClient;
use berth_proto::services::snapshots::v1 as sapi;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_tests::*;
use std::collections::HashMap;
use tokio_stream::StreamExt;

fn snapshot_names(d: &Daemon, ns: &str, sn: &str) -> Vec<String> {
    let out = ok(
        "snapshots ls",
        d.berthctl(
            ns,
            &["--format", "json", "snapshots", "--snapshotter", sn, "ls"],
        ),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_string())
        .collect()
}

fn write_tmp(d: &Daemon, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = d.dir.path().join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn import_unpacks_and_mounts_and_collects() {
    if !require_root("snapshots") {
        return;
    }
    let fx = fixtures();
    let d = Daemon::start();
    let big = fx.join("busybox-big-oci.tar");
    let out = ok(
        "import",
        d.berthctl(
            "default",
            &[
                "images",
                "import",
                "--base-name",
                "docker.io/local/big",
                big.to_str().unwrap(),
            ],
        ),
    );
    assert!(out.contains("unpacked: docker.io/local/big:big"), "{out}");
    let snaps = snapshot_names(&d, "default", "overlayfs");
    assert_eq!(
        snaps.len(),
        2,
        "one committed snapshot per layer: {snaps:?}"
    );
    let tree = ok("tree", d.berthctl("default", &["snapshots", "tree"]));
    assert!(tree.contains("\\_ "), "a parent/child chain: {tree}");
    let usage = ok("usage", d.berthctl("default", &["snapshots", "usage"]));
    assert!(usage.contains("24.0 MiB"), "{usage}");

    // Mount the image read-only and look inside.
    let mnt = d.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    ok(
        "mount",
        d.berthctl(
            "default",
            &[
                "images",
                "mount",
                "docker.io/local/big:big",
                mnt.to_str().unwrap(),
            ],
        ),
    );
    let seen_busybox = mnt.join("bin/busybox").is_file();
    let seen_data = std::fs::metadata(mnt.join("data/random.bin"))
        .map(|m| m.len())
        .unwrap_or(0);
    let ro = std::fs::write(mnt.join("x"), b"x").is_err();
    ok(
        "unmount",
        d.berthctl("default", &["images", "unmount", mnt.to_str().unwrap()]),
    );
    assert!(seen_busybox, "busybox in the mounted image");
    assert_eq!(seen_data, 24 << 20);
    assert!(ro, "images mount is read-only");
    assert_eq!(
        snapshot_names(&d, "default", "overlayfs").len(),
        2,
        "unmount drops its view"
    );

    // The same image in another snapshotter, by name.
    ok(
        "import native",
        d.berthctl(
            "default",
            &[
                "images",
                "import",
                "--snapshotter",
                "native",
                "--base-name",
                "docker.io/local/big",
                big.to_str().unwrap(),
            ],
        ),
    );
    assert_eq!(snapshot_names(&d, "default", "native").len(), 2);

    // A namespace with snapshots cannot be deleted.
    let err = fails(
        "ns rm",
        d.berthctl("default", &["namespaces", "rm", "default"]),
    );
    assert!(err.contains("snapshots on"), "{err}");

    // Removing the image collects its snapshots in every snapshotter.
    ok(
        "rm",
        d.berthctl(
            "default",
            &["images", "rm", "--sync", "docker.io/local/big:big"],
        ),
    );
    assert!(snapshot_names(&d, "default", "overlayfs").is_empty());
    assert!(snapshot_names(&d, "default", "native").is_empty());
    assert!(blobs_on_disk(&d.root()).is_empty());
    let left = std::fs::read_dir(d.root().join("snapshots/overlayfs/snapshots"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "snapshot directories removed");
}

#[test]
fn unpack_verifies_diff_ids_and_leaves_nothing_on_failure() {
    if !require_root("snapshots") {
        return;
    }
    let d = Daemon::start();
    let layer = layer_tar(&[("etc/motd", b"hello")]);
    let wrong = format!("sha256:{}", "1".repeat(64));
    let bad = write_tmp(
        &d,
        "bad.tar",
        &oci_image(
            std::slice::from_ref(&layer),
            "v1",
            Some(vec![wrong.clone()]),
        ),
    );
    let err = fails(
        "import bad",
        d.berthctl(
            "default",
            &[
                "images",
                "import",
                "--base-name",
                "x/bad",
                bad.to_str().unwrap(),
            ],
        ),
    );
    assert!(err.contains("diff ID") && err.contains(&wrong), "{err}");
    let imgs = ok("ls", d.berthctl("default", &["images", "ls", "-q"]));
    assert!(
        imgs.trim().is_empty(),
        "no image after a failed unpack: {imgs}"
    );
    assert!(
        snapshot_names(&d, "default", "overlayfs").is_empty(),
        "no snapshot left"
    );
    assert!(blobs_on_disk(&d.root()).is_empty(), "no blob left");

    // The same layer with the right diff ID imports; --no-unpack makes no snapshots.
    let good = write_tmp(&d, "good.tar", &oci_image(&[layer], "v1", None));
    ok(
        "no-unpack",
        d.berthctl(
            "default",
            &[
                "images",
                "import",
                "--no-unpack",
                "--base-name",
                "x/good",
                good.to_str().unwrap(),
            ],
        ),
    );
    assert!(snapshot_names(&d, "default", "overlayfs").is_empty());
    let err = fails(
        "mount unpacked",
        d.berthctl(
            "default",
            &[
                "images",
                "mount",
                "x/good:v1",
                d.dir.path().to_str().unwrap(),
            ],
        ),
    );
    assert!(err.contains("not unpacked"), "{err}");
}

#[test]
fn concurrent_imports_share_layers() {
    if !require_root("snapshots") {
        return;
    }
    let d = Daemon::start();
    let base = layer_tar(&[("bin/tool", &[1u8; 300_000])]);
    let mut archives = Vec::new();
    for i in 0..4 {
        let top = layer_tar(&[(&format!("app{i}"), b"app")]);
        archives.push(write_tmp(
            &d,
            &format!("img{i}.tar"),
            &oci_image(&[base.clone(), top], "v", None),
        ));
    }
    let handles: Vec<_> = archives
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let args: Vec<String> = vec![
                "--address".into(),
                d.address(),
                "images".into(),
                "import".into(),
                "--base-name".into(),
                format!("x/img{i}"),
                a.display().to_string(),
            ];
            std::process::Command::new(bin("berthctl"))
                .args(args)
                .output_async()
        })
        .collect();
    for h in handles {
        ok("concurrent import", h.wait_with_output().unwrap());
    }
    let snaps = snapshot_names(&d, "default", "overlayfs");
    assert_eq!(
        snaps.len(),
        5,
        "the shared base layer is unpacked once: {snaps:?}"
    );
}

trait OutputAsync {
    fn output_async(&mut self) -> std::process::Child;
}

impl OutputAsync for std::process::Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_service_round_trip() {
    if !require_root("snapshots") {
        return;
    }
    let d = Daemon::start();
    let ch = d.channel().await;
    let layer = layer_tar(&[
        ("keep", b"k"),
        ("gone", b"g"),
        ("dir/inner", b"i"),
        ("change", b"old"),
    ]);
    let img = write_tmp(
        &d,
        "img.tar",
        &oci_image(std::slice::from_ref(&layer), "v", None),
    );
    ok(
        "import",
        d.berthctl(
            "default",
            &[
                "images",
                "import",
                "--base-name",
                "x/img",
                img.to_str().unwrap(),
            ],
        ),
    );
    let chain = sha256(&layer);
    let mut sn = SnapshotsClient::new(ch.clone());
    // Snapshots made by hand must be held by something, or the collector
    // takes them (as in containerd): a gc.root label does it here.
    let root = || HashMap::from([("containerd.io/gc.root".to_string(), "test".to_string())]);
    let mounts = sn
        .prepare(request(
            "default",
            sapi::PrepareSnapshotRequest {
                snapshotter: String::new(),
                key: "work".into(),
                parent: chain.clone(),
                labels: root(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    // Change the snapshot through a real mount.
    let mnt = d.dir.path().join("m");
    std::fs::create_dir(&mnt).unwrap();
    let m = &mounts[0];
    let st = std::process::Command::new("mount")
        .args(["-t", &m.r#type, "-o", &m.options.join(","), &m.source])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(mnt.join("gone")).unwrap();
    std::fs::remove_dir_all(mnt.join("dir")).unwrap();
    std::fs::write(mnt.join("change"), b"new").unwrap();
    std::fs::write(mnt.join("added"), b"a").unwrap();
    let _ = std::process::Command::new("umount").arg(&mnt).status();

    let lower = sn
        .view(request(
            "default",
            sapi::ViewSnapshotRequest {
                snapshotter: String::new(),
                key: "base-view".into(),
                parent: chain.clone(),
                labels: root(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    berth_proto::services::leases::v1::leases_client::LeasesClient::new(ch.clone())
        .create(request(
            "default",
            berth_proto::services::leases::v1::CreateRequest {
                id: "t".into(),
                labels: HashMap::new(),
            },
        ))
        .await
        .unwrap();
    let diff = DiffClient::new(ch.clone())
        .diff(berth_proto::client::with_lease(
            request(
                "default",
                dapi::DiffRequest {
                    left: lower,
                    right: mounts,
                    media_type: String::new(),
                    r#ref: "d1".into(),
                    labels: HashMap::new(),
                    source_date_epoch: None,
                },
            ),
            "t",
        ))
        .await
        .unwrap()
        .into_inner()
        .diff
        .unwrap();
    assert_eq!(
        diff.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // Apply the computed layer onto a fresh child of the base: same result.
    let fresh = sn
        .prepare(request(
            "default",
            sapi::PrepareSnapshotRequest {
                snapshotter: String::new(),
                key: "fresh".into(),
                parent: chain.clone(),
                labels: root(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let applied = DiffClient::new(ch.clone())
        .apply(request(
            "default",
            dapi::ApplyRequest {
                diff: Some(diff.clone()),
                mounts: fresh.clone(),
                payloads: HashMap::new(),
                sync_fs: false,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .applied
        .unwrap();
    assert_eq!(applied.media_type, "application/vnd.oci.image.layer.v1.tar");
    let info = berth_proto::services::content::v1::content_client::ContentClient::new(ch.clone())
        .info(request(
            "default",
            berth_proto::services::content::v1::InfoRequest {
                digest: diff.digest.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(
        info.labels.get("containerd.io/uncompressed"),
        Some(&applied.digest),
        "diff ID label"
    );
    sn.commit(request(
        "default",
        sapi::CommitSnapshotRequest {
            snapshotter: String::new(),
            name: "result".into(),
            key: "fresh".into(),
            labels: root(),
            parent: String::new(),
        },
    ))
    .await
    .unwrap();
    let view = sn
        .view(request(
            "default",
            sapi::ViewSnapshotRequest {
                snapshotter: String::new(),
                key: "check".into(),
                parent: "result".into(),
                labels: root(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let m = &view[0];
    let st = std::process::Command::new("mount")
        .args(["-t", &m.r#type, "-o", &m.options.join(","), &m.source])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let read = |p: &str| std::fs::read(mnt.join(p)).ok();
    let results = (
        read("keep"),
        read("gone"),
        mnt.join("dir").exists(),
        read("change"),
        read("added"),
    );
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert_eq!(results.0.as_deref(), Some(&b"k"[..]));
    assert_eq!(results.1, None, "deletion carried by a whiteout");
    assert!(!results.2, "deleted directory carried by a whiteout");
    assert_eq!(results.3.as_deref(), Some(&b"new"[..]));
    assert_eq!(results.4.as_deref(), Some(&b"a"[..]));

    // Snapshot listing is namespaced.
    let mut s = sn
        .list(request(
            "other",
            sapi::ListSnapshotsRequest {
                snapshotter: String::new(),
                filters: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(b) = s.next().await {
        n += b.unwrap().info.len();
    }
    assert_eq!(n, 0, "another namespace sees none");
    let err = sn
        .stat(request(
            "default",
            sapi::StatSnapshotRequest {
                snapshotter: "bogus".into(),
                key: "x".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("overlayfs"), "{}", err.message());
}
