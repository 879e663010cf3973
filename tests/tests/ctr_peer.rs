//! The real `ctr` (Debian's containerd 1.6 package) pointed at berthd.
//! `ctr images import` unpacks client-side through berthd's Snapshots and
//! Diff services.

use berth_proto::services::tasks::v1 as tasks;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use berth_tests::*;

#[test]
fn ctr_against_berthd() {
    let Some(ctr) = peer("ctr") else { return };
    let fx = fixtures();
    let d = Daemon::start();
    let ctr = |ns: &str, args: &[&str]| d.ctr(&ctr, ns, args);

    // version: the server half comes from berthd.
    let v = ok("ctr version", ctr("default", &["version"]));
    assert!(v.contains("Server:") && v.contains("UUID:"), "{v}");
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");

    // namespaces create / ls / label / rm
    ok(
        "ns create",
        ctr("x", &["namespaces", "create", "x", "team=a"]),
    );
    let ls = ok("ns ls", ctr("x", &["namespaces", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.starts_with("x ") && l.contains("team=a")),
        "{ls}"
    );
    ok(
        "ns label",
        ctr("x", &["namespaces", "label", "x", "team=b", "tier=1"]),
    );
    let ls = ok("ns ls", ctr("x", &["namespaces", "ls"]));
    assert!(ls.contains("team=b") && ls.contains("tier=1"), "{ls}");
    let err = fails("ns create dup", ctr("x", &["namespaces", "create", "x"]));
    assert!(err.contains("already exists"), "{err}");
    ok("ns rm", ctr("x", &["namespaces", "rm", "x"]));
    let ls = ok("ns ls", ctr("x", &["namespaces", "ls", "-q"]));
    assert!(!ls.lines().any(|l| l == "x"), "{ls}");

    // images import (docker-archive, then OCI layout with a base name)
    let docker = fx.join("busybox-docker.tar");
    let oci = fx.join("busybox-oci.tar");
    ok(
        "import docker-archive",
        ctr("default", &["images", "import", docker.to_str().unwrap()]),
    );
    ok(
        "import oci",
        ctr(
            "default",
            &[
                "images",
                "import",
                "--base-name",
                "docker.io/local/bb",
                oci.to_str().unwrap(),
            ],
        ),
    );
    let ls = ok("images ls", ctr("default", &["images", "ls"]));
    let bb = ls
        .lines()
        .find(|l| l.starts_with("docker.io/local/bb:latest"))
        .unwrap_or_else(|| panic!("no bb image:\n{ls}"));
    assert!(bb.contains(&fixture_digest("manifest")), "{bb}");
    assert!(bb.contains("KiB") || bb.contains("MiB"), "no size: {bb}");
    assert!(bb.contains("linux/"), "no platform: {bb}");
    let bx = ls
        .lines()
        .find(|l| l.starts_with("docker.io/library/busybox:latest"))
        .unwrap_or_else(|| panic!("no busybox image:\n{ls}"));
    assert!(bx.contains("MiB"), "no size: {bx}");

    // content ls / get: byte-identical to the archive's blob
    let layer = fixture_digest("layer");
    let cls = ok("content ls", ctr("default", &["content", "ls"]));
    assert!(cls.contains(&layer), "{cls}");
    let got = ctr("default", &["content", "get", &layer]);
    assert!(
        got.status.success(),
        "content get: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    let want = tar_member(&oci, &format!("./blobs/sha256/{}", &layer[7..])).expect("layer in tar");
    assert_eq!(got.stdout.len(), want.len());
    assert!(got.stdout == want, "content get is not byte-identical");
    assert_eq!(sha256(&got.stdout), layer);

    // images rm
    ok(
        "images rm",
        ctr("default", &["images", "rm", "docker.io/local/bb:latest"]),
    );
    let ls = ok("images ls -q", ctr("default", &["images", "ls", "-q"]));
    assert!(!ls.contains("docker.io/local/bb:latest"), "{ls}");
    assert!(ls.contains("docker.io/library/busybox:latest"), "{ls}");
    // ctr only warns for a missing image, recognising our NotFound code.
    let out = ctr("default", &["images", "rm", "docker.io/no/such:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("image not found"), "{err}");

    // leases create / ls / rm
    let id = ok("leases create", ctr("default", &["leases", "create"]));
    let id = id.trim();
    assert!(!id.is_empty());
    let named = ok(
        "leases create --id",
        ctr("default", &["leases", "create", "--id", "mine", "k=v"]),
    );
    assert_eq!(named.trim(), "mine");
    let lls = ok("leases ls", ctr("default", &["leases", "ls"]));
    assert!(lls.contains(id) && lls.contains("mine"), "{lls}");
    assert!(
        lls.contains("containerd.io/gc.expire"),
        "default expiry label: {lls}"
    );
    ok("leases rm", ctr("default", &["leases", "rm", id, "mine"]));
    let lls = ok("leases ls -q", ctr("default", &["leases", "ls", "-q"]));
    assert!(lls.trim().is_empty(), "{lls}");

    // plugins ls lists the real services
    let pls = ok("plugins ls", ctr("default", &["plugins", "ls"]));
    for want in [
        "io.containerd.content.v1",
        "io.containerd.grpc.v1",
        "images",
        "leases",
    ] {
        assert!(pls.contains(want), "{want} missing:\n{pls}");
    }
    assert!(
        pls.contains("io.containerd.snapshotter.v1") && pls.contains("overlayfs"),
        "{pls}"
    );
    // The import unpacked: one committed snapshot per layer.
    let sls = ok("snapshots ls", ctr("default", &["snapshots", "ls"]));
    assert!(sls.contains("Committed"), "{sls}");

    // A non-empty namespace cannot be removed; the message says why.
    let err = fails(
        "rm non-empty ns",
        ctr("default", &["namespaces", "rm", "default"]),
    );
    assert!(
        err.contains("must be empty") && err.contains("images"),
        "{err}"
    );
}

#[test]
fn ctr_events_and_unimplemented_services() {
    let Some(ctr_bin) = peer("ctr") else { return };
    let d = Daemon::start();
    let mut events = std::process::Command::new(&ctr_bin)
        .arg("--address")
        .arg(&d.sock)
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ctr events");
    std::thread::sleep(std::time::Duration::from_millis(500));
    ok(
        "ns create",
        d.ctr(&ctr_bin, "ev", &["namespaces", "create", "evns"]),
    );
    ok(
        "ns rm",
        d.ctr(&ctr_bin, "ev", &["namespaces", "rm", "evns"]),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = events.kill();
    let out = events.wait_with_output().expect("events output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/namespaces/create"), "{text}");
    assert!(text.contains("/namespaces/delete"), "{text}");
    assert!(
        text.contains("evns"),
        "event payload decoded by ctr: {text}"
    );

    let ls = ok("tasks ls", d.ctr(&ctr_bin, "default", &["tasks", "ls"]));
    assert_eq!(ls.lines().count(), 1, "only the header: {ls}");

    // What berthd does not serve yet answers Unimplemented, never fake success.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(async {
            TasksClient::new(d.channel().await)
                .checkpoint(berth_proto::client::request(
                    "default",
                    tasks::CheckpointTaskRequest {
                        container_id: "none".into(),
                        ..Default::default()
                    },
                ))
                .await
        })
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err}");
    assert!(err.message().contains("checkpoint"), "{err}");
}

#[test]
fn ctr_snapshots_against_berthd() {
    let Some(ctr) = peer("ctr") else { return };
    if !require_root("ctr snapshots (mounts)") {
        return;
    }
    let fx = fixtures();
    let d = Daemon::start();
    let ctr = |args: &[&str]| d.ctr(&ctr, "default", args);
    let oci = fx.join("busybox-oci.tar");
    ok(
        "import",
        ctr(&[
            "images",
            "import",
            "--base-name",
            "docker.io/local/bb",
            oci.to_str().unwrap(),
        ]),
    );
    // One layer: the chain ID is the layer's diff ID.
    let ls = ok("snapshots ls", ctr(&["snapshots", "ls"]));
    let chain = ls
        .lines()
        .skip(1)
        .find_map(|l| l.split_whitespace().next())
        .expect("a snapshot")
        .to_string();
    assert!(ls.contains("Committed"), "{ls}");
    let tree = ok("snapshots tree", ctr(&["snapshots", "tree"]));
    assert!(tree.contains(&chain), "{tree}");
    let usage = ok("snapshots usage", ctr(&["snapshots", "usage"]));
    assert!(
        usage.contains(&chain) && (usage.contains("MiB") || usage.contains("KiB")),
        "{usage}"
    );
    let info = ok("snapshots info", ctr(&["snapshots", "info", &chain]));
    assert!(info.contains("\"Kind\": \"Committed\""), "{info}");

    ok(
        "snapshots prepare",
        ctr(&["snapshots", "prepare", "work", &chain]),
    );
    let mnt = d.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let cmd = ok(
        "snapshots mounts",
        ctr(&["snapshots", "mounts", mnt.to_str().unwrap(), "work"]),
    );
    assert!(cmd.starts_with("mount -t overlay"), "{cmd}");
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd.trim())
        .status()
        .unwrap();
    assert!(st.success(), "running ctr's mount command");
    let guard = Unmount(mnt.clone());
    assert!(
        mnt.join("bin/busybox").is_file(),
        "busybox visible in the mounted snapshot"
    );
    assert!(
        std::fs::symlink_metadata(mnt.join("bin/sh"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    std::fs::write(mnt.join("hello"), b"from the container").unwrap();
    drop(guard);
    ok(
        "snapshots commit",
        ctr(&["snapshots", "commit", "mine", "work"]),
    );
    let tree = ok("snapshots tree", ctr(&["snapshots", "tree"]));
    assert!(tree.contains("mine"), "{tree}");
    let err = fails("rm parent", ctr(&["snapshots", "rm", &chain]));
    assert!(err.contains("child"), "{err}");
    ok("snapshots rm", ctr(&["snapshots", "rm", "mine"]));
    let ls = ok("snapshots ls", ctr(&["snapshots", "ls"]));
    assert!(!ls.contains("mine"), "{ls}");

    // Removing the image collects its snapshots.
    ok(
        "images rm",
        ctr(&["images", "rm", "--sync", "docker.io/local/bb:latest"]),
    );
    let ls = ok("snapshots ls", ctr(&["snapshots", "ls"]));
    assert!(
        !ls.contains(&chain),
        "snapshot of a removed image collected: {ls}"
    );
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn ctr_containers_against_berthd() {
    let Some(ctr) = peer("ctr") else { return };
    if !require_root("ctr containers (snapshots)") {
        return;
    }
    let fx = fixtures();
    let d = Daemon::start();
    let ctr = |args: &[&str]| d.ctr(&ctr, "default", args);
    let docker = fx.join("busybox-docker.tar");
    ok(
        "import",
        ctr(&["images", "import", docker.to_str().unwrap()]),
    );
    ok(
        "c create",
        ctr(&[
            "containers",
            "create",
            "--label",
            "team=a",
            "docker.io/library/busybox:latest",
            "c1",
        ]),
    );
    let err = fails(
        "c create dup",
        ctr(&[
            "containers",
            "create",
            "docker.io/library/busybox:latest",
            "c1",
        ]),
    );
    assert!(err.contains("already exists"), "{err}");
    let ls = ok("c ls", ctr(&["containers", "ls"]));
    assert!(
        ls.contains("c1") && ls.contains("docker.io/library/busybox:latest"),
        "{ls}"
    );
    let info = ok("c info", ctr(&["containers", "info", "c1"]));
    assert!(
        info.contains("\"SnapshotKey\": \"c1\"") && info.contains("\"args\""),
        "{info}"
    );
    ok("c label", ctr(&["containers", "label", "c1", "tier=2"]));
    let info = ok("c info", ctr(&["containers", "info", "c1"]));
    assert!(info.contains("tier") && info.contains("team"), "{info}");
    let sls = ok("snapshots ls", ctr(&["snapshots", "ls"]));
    assert!(
        sls.lines()
            .any(|l| l.starts_with("c1 ") && l.contains("Active")),
        "{sls}"
    );
    ok("c rm", ctr(&["containers", "rm", "c1"]));
    let ls = ok("c ls", ctr(&["containers", "ls", "-q"]));
    assert!(ls.trim().is_empty(), "{ls}");
    let err = fails("c info missing", ctr(&["containers", "info", "c1"]));
    assert!(err.contains("not found"), "{err}");
}
