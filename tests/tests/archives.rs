//! Import and export through berthctl (daemon-side, over the Transfer API):
//! round trips, platform selection, and bad archives that must leave
//! nothing behind.

use berth_tests::*;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Rewrites a tar, dropping members for which `keep` is false and
/// replacing contents through `edit`.
fn rewrite(
    src: &Path,
    dst: &Path,
    keep: impl Fn(&str) -> bool,
    edit: impl Fn(&str, Vec<u8>) -> Vec<u8>,
) {
    let mut a = tar::Archive::new(std::fs::File::open(src).unwrap());
    let mut b = tar::Builder::new(std::fs::File::create(dst).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().to_string();
        if !keep(&path) {
            continue;
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        let data = edit(&path, data);
        let mut h = e.header().clone();
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

fn tmpfile(d: &Daemon, name: &str) -> PathBuf {
    d.dir.path().join(name)
}

/// Nothing from a failed import may stay visible: no images, no blobs (after
/// collection), no leases, no uploads.
fn assert_nothing_left(d: &Daemon, ns: &str) {
    let imgs = ok("images ls", d.berthctl(ns, &["images", "ls", "-q"]));
    assert!(imgs.trim().is_empty(), "images left: {imgs}");
    let leases = ok("leases ls", d.berthctl(ns, &["leases", "ls", "-q"]));
    assert!(leases.trim().is_empty(), "leases left: {leases}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let blobs = ok("content ls", d.berthctl(ns, &["content", "ls", "-q"]));
        let on_disk = blobs_on_disk(&d.root());
        if blobs.trim().is_empty() && on_disk.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "content left after failed import: listed {blobs:?}, on disk {on_disk:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let uploads = std::fs::read_dir(d.root().join("content/ingest"))
        .unwrap()
        .count();
    assert_eq!(uploads, 0, "upload directories left");
}

#[test]
fn import_export_round_trip() {
    let fx = fixtures();
    let d = Daemon::start();
    let oci = fx.join("busybox-oci.tar");
    let docker = fx.join("busybox-docker.tar");
    let out = ok(
        "import oci",
        d.berthctl(
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
    assert!(out.contains("docker.io/local/bb:latest"), "{out}");
    ok(
        "import docker",
        d.berthctl("default", &["images", "import", docker.to_str().unwrap()]),
    );
    let json = ok(
        "images ls json",
        d.berthctl("default", &["--format", "json", "images", "ls"]),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"docker.io/local/bb:latest")
            && names.contains(&"docker.io/library/busybox:latest"),
        "{names:?}"
    );
    let bb = v
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "docker.io/local/bb:latest")
        .unwrap();
    assert_eq!(bb["digest"], fixture_digest("manifest"));

    // Export both, import into another namespace: same digests.
    let exported = tmpfile(&d, "export.tar");
    ok(
        "export",
        d.berthctl(
            "default",
            &[
                "images",
                "export",
                exported.to_str().unwrap(),
                "docker.io/local/bb:latest",
                "docker.io/library/busybox:latest",
            ],
        ),
    );
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&exported)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for m in ["oci-layout", "index.json", "manifest.json"] {
        assert!(listing.lines().any(|l| l == m), "{m} missing: {listing}");
    }
    ok(
        "import exported",
        d.berthctl("copy", &["images", "import", exported.to_str().unwrap()]),
    );
    let a = ok(
        "ls",
        d.berthctl("default", &["--format", "json", "images", "ls"]),
    );
    let b = ok(
        "ls",
        d.berthctl("copy", &["--format", "json", "images", "ls"]),
    );
    let digests = |s: &str| {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        let mut d: Vec<(String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_string(),
                    i["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        d.sort();
        d
    };
    assert_eq!(digests(&a), digests(&b));

    // The real ctr accepts our export too (when installed).
    if let Some(ctr) = peer("ctr") {
        ok(
            "ctr import",
            d.ctr(
                &ctr,
                "viactr",
                &[
                    "images",
                    "import",
                    "--no-unpack",
                    exported.to_str().unwrap(),
                ],
            ),
        );
        let ls = ok("ctr ls", d.ctr(&ctr, "viactr", &["images", "ls", "-q"]));
        assert!(ls.contains("docker.io/local/bb:latest"), "{ls}");
    }

    // Removing an image with --sync collects what only it held.
    ok(
        "rm",
        d.berthctl(
            "copy",
            &[
                "images",
                "rm",
                "--sync",
                "docker.io/local/bb:latest",
                "docker.io/library/busybox:latest",
            ],
        ),
    );
    let left = ok("content ls", d.berthctl("copy", &["content", "ls", "-q"]));
    assert!(left.trim().is_empty(), "{left}");
    // The same blobs are still held by the default namespace.
    let mine = ok(
        "content ls",
        d.berthctl("default", &["content", "ls", "-q"]),
    );
    assert!(mine.contains(&fixture_digest("layer")), "{mine}");
    assert_blobs_intact(&d.root());
}

#[test]
fn multi_platform_index_kept_whole() {
    let fx = fixtures();
    let d = Daemon::start();
    let multi = fx.join("busybox-multiarch-oci.tar");
    ok(
        "import",
        d.berthctl(
            "default",
            &[
                "images",
                "import",
                "--base-name",
                "docker.io/local/multi",
                multi.to_str().unwrap(),
            ],
        ),
    );
    let json = ok(
        "ls",
        d.berthctl("default", &["--format", "json", "images", "ls"]),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let img = &v[0];
    assert_eq!(
        img["digest"],
        fixture_digest("index"),
        "the index itself is the target"
    );
    assert!(img["media_type"].as_str().unwrap().contains("index"));
    assert!(
        img["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "linux/s390x"),
        "{img}"
    );

    // Asking for the platform whose blobs are absent fails, precisely, and leaves nothing.
    let d2 = Daemon::start();
    let err = fails(
        "import s390x",
        d2.berthctl(
            "default",
            &[
                "images",
                "import",
                "--platform",
                "linux/s390x",
                "--base-name",
                "x/y",
                multi.to_str().unwrap(),
            ],
        ),
    );
    assert!(
        err.contains("missing blob") && err.contains("invalid argument"),
        "{err}"
    );
    assert_nothing_left(&d2, "default");
    let err = fails(
        "import all",
        d2.berthctl(
            "default",
            &[
                "images",
                "import",
                "--all-platforms",
                "--base-name",
                "x/y",
                multi.to_str().unwrap(),
            ],
        ),
    );
    assert!(err.contains("missing blob"), "{err}");
    let err = fails(
        "import arm",
        d2.berthctl(
            "default",
            &[
                "images",
                "import",
                "--platform",
                "linux/arm",
                "--base-name",
                "x/y",
                multi.to_str().unwrap(),
            ],
        ),
    );
    assert!(err.contains("no manifest for platform linux/arm"), "{err}");
    assert_nothing_left(&d2, "default");
}

#[test]
fn bad_archives_leave_nothing() {
    let fx = fixtures();
    let d = Daemon::start();
    let oci = fx.join("busybox-oci.tar");
    let docker = fx.join("busybox-docker.tar");
    let layer = fixture_digest("layer");
    let config = fixture_digest("config");

    // Not a tar at all.
    let junk = tmpfile(&d, "junk.tar");
    std::fs::write(
        &junk,
        b"this is not a tar archive, just some bytes that go on and on",
    )
    .unwrap();
    let err = fails(
        "junk",
        d.berthctl("default", &["images", "import", junk.to_str().unwrap()]),
    );
    assert!(err.contains("invalid argument"), "{err}");
    assert_nothing_left(&d, "default");

    // Truncated in the middle of the layer.
    let bytes = std::fs::read(&oci).unwrap();
    let cut = tmpfile(&d, "cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(
        "truncated",
        d.berthctl(
            "default",
            &[
                "images",
                "import",
                "--base-name",
                "a/b",
                cut.to_str().unwrap(),
            ],
        ),
    );
    assert!(
        err.contains("truncated") && err.contains("invalid argument"),
        "{err}"
    );
    assert_nothing_left(&d, "default");

    // docker-archive whose layer is missing.
    let nolayer = tmpfile(&d, "nolayer.tar");
    rewrite(&docker, &nolayer, |p| !p.ends_with("layer.tar"), |_, b| b);
    let err = fails(
        "missing layer",
        d.berthctl("default", &["images", "import", nolayer.to_str().unwrap()]),
    );
    assert!(
        err.contains("layer")
            && err.contains("not in the archive")
            && err.contains("invalid argument"),
        "{err}"
    );
    assert_nothing_left(&d, "default");

    // OCI layout whose config blob is missing.
    let nocfg = tmpfile(&d, "nocfg.tar");
    rewrite(&oci, &nocfg, |p| !p.ends_with(&config[7..]), |_, b| b);
    let err = fails(
        "missing config",
        d.berthctl(
            "default",
            &[
                "images",
                "import",
                "--base-name",
                "a/b",
                nocfg.to_str().unwrap(),
            ],
        ),
    );
    assert!(err.contains(&config) && err.contains("config"), "{err}");
    assert_nothing_left(&d, "default");

    // A blob whose bytes do not match its name.
    let corrupt = tmpfile(&d, "corrupt.tar");
    rewrite(
        &oci,
        &corrupt,
        |_| true,
        |p, mut b| {
            if p.ends_with(&layer[7..]) {
                let n = b.len() / 2;
                b[n] ^= 0xff;
            }
            b
        },
    );
    let err = fails(
        "corrupt",
        d.berthctl(
            "default",
            &[
                "images",
                "import",
                "--base-name",
                "a/b",
                corrupt.to_str().unwrap(),
            ],
        ),
    );
    assert!(
        err.contains("does not match its digest") && err.contains(&layer),
        "{err}"
    );
    assert_nothing_left(&d, "default");

    // Neither layout nor docker-archive.
    let plain = tmpfile(&d, "plain.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&plain).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
        b.finish().unwrap();
    }
    let err = fails(
        "plain",
        d.berthctl("default", &["images", "import", plain.to_str().unwrap()]),
    );
    assert!(
        err.contains("neither index.json nor manifest.json"),
        "{err}"
    );
    assert_nothing_left(&d, "default");

    // An OCI tag without a base name is named import-<date>:<tag>, as ctr does.
    let out = ok(
        "unnamed",
        d.berthctl("default", &["images", "import", oci.to_str().unwrap()]),
    );
    assert!(out.contains("import-") && out.contains(":latest"), "{out}");
}

#[test]
fn berthctl_errors_are_one_clear_line() {
    let d = Daemon::start();
    let err = fails(
        "inspect missing",
        d.berthctl("default", &["images", "inspect", "docker.io/no/such:1"]),
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("berthctl: ") && err.contains("not found"),
        "{err}"
    );
    let err = fails(
        "rm ns",
        d.berthctl("default", &["namespaces", "rm", "nope"]),
    );
    assert!(err.contains("not found"), "{err}");
    let out = std::process::Command::new(bin("berthctl"))
        .args(["--address", "/nonexistent/berth.sock", "version"])
        .output()
        .unwrap();
    let err = fails("no daemon", out);
    assert!(
        err.contains("no berthd at /nonexistent/berth.sock: is it running?"),
        "{err}"
    );

    // Labels and namespaces through the CLI.
    ok(
        "ns create",
        d.berthctl("default", &["namespaces", "create", "team", "a=1"]),
    );
    ok(
        "ns label",
        d.berthctl("default", &["namespaces", "label", "team", "b=2", "a="]),
    );
    let ls = ok("ns ls", d.berthctl("default", &["namespaces", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.starts_with("team") && l.contains("b=2") && !l.contains("a=1")),
        "{ls}"
    );
    let id = ok(
        "lease",
        d.berthctl(
            "default",
            &["leases", "create", "--id", "l1", "--expires", "1h"],
        ),
    );
    assert_eq!(id.trim(), "l1");
    let ls = ok("leases", d.berthctl("default", &["leases", "ls"]));
    assert!(ls.contains("l1") && ls.contains("gc.expire"), "{ls}");
    ok("lease rm", d.berthctl("default", &["leases", "rm", "l1"]));

    // Content ingest through the CLI, then get it back.
    let file = d.dir.path().join("blob.bin");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(b"hello berth")
        .unwrap();
    let dg = ok(
        "ingest",
        d.berthctl(
            "default",
            &[
                "content",
                "ingest",
                "--ref",
                "r1",
                "--file",
                file.to_str().unwrap(),
                // Labelled at commit: the GC that `lease rm` scheduled
                // would otherwise collect the unreferenced blob.
                "--label",
                "containerd.io/gc.root=test",
            ],
        ),
    );
    assert_eq!(dg.trim(), sha256(b"hello berth"));
    let got = ok("get", d.berthctl("default", &["content", "get", dg.trim()]));
    assert_eq!(got, "hello berth");
    let ls = ok("content ls", d.berthctl("default", &["content", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.starts_with(dg.trim()) && l.contains("containerd.io/gc.root=test")),
        "{ls}"
    );
    let err = fails(
        "ingest wrong digest",
        d.berthctl(
            "default",
            &[
                "content",
                "ingest",
                "--ref",
                "r2",
                "--expected-digest",
                &sha256(b"x"),
                "--file",
                file.to_str().unwrap(),
            ],
        ),
    );
    assert!(err.contains("unexpected commit digest"), "{err}");
    let plugins = ok("plugins", d.berthctl("default", &["plugins", "ls"]));
    assert!(plugins.contains("io.containerd.content.v1"), "{plugins}");
}
