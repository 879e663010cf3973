//! Other host users cannot reach what berthd writes (CVE-2021-41103
//! class): not a container's rootfs (a setuid file in it would run as
//! root), not a spec (its `--env` secrets), not the metadata, content,
//! snapshots or state. Root only.

use berth_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn as_root(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run probe")
}

/// A snapshot file of the busybox image, under some snapshotter's `fs`.
fn snapshot_file(root: &Path) -> PathBuf {
    let snaps = root.join("snapshots");
    for sn in std::fs::read_dir(&snaps).expect("snapshotters").flatten() {
        let Ok(ids) = std::fs::read_dir(sn.path().join("snapshots")) else {
            continue;
        };
        for id in ids.flatten() {
            let f = id.path().join("fs/bin/busybox");
            if f.is_file() {
                return f;
            }
        }
    }
    panic!("no snapshot holds bin/busybox under {}", snaps.display());
}

#[test]
fn nobody_cannot_reach_rootfs_specs_metadata_or_stores() {
    if peer("setpriv").is_none() || !require_root("running containers") {
        return;
    }
    // An admin's `mkdir` (umask 022) leaves the root and state 0755; the
    // test directory itself is opened up so that only berthd's own modes
    // stand between `nobody` and its files.
    let d = Daemon::start_prepared("", |dir| {
        for p in [dir.to_path_buf(), dir.join("root"), dir.join("state")] {
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    });
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    ok(
        "run -d",
        d.berthctl(
            "default",
            &["run", "-d", "--name", "perm1", "busybox", "sleep", "600"],
        ),
    );
    let root = d.root();
    let state = d.state();
    let tasks = state.join("io.containerd.runtime.v2.task");
    let bundle = tasks.join("default/perm1");
    // A setuid-root program planted in the container's /tmp.
    let suid = bundle.join("rootfs/tmp/suid-id");
    std::fs::copy("/usr/bin/id", &suid).expect("plant the setuid file");
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();

    let s = |p: &Path| p.display().to_string();
    let probes: Vec<(&str, Vec<String>)> = vec![
        ("run the setuid file", vec![s(&suid), "-u".into()]),
        (
            "read the spec",
            vec!["cat".into(), s(&bundle.join("config.json"))],
        ),
        (
            "read the metadata",
            vec!["cat".into(), s(&root.join("metadata.redb"))],
        ),
        (
            "read a snapshot file",
            vec!["cat".into(), s(&snapshot_file(&root))],
        ),
        ("list the root", vec!["ls".into(), s(&root)]),
        ("list the state", vec!["ls".into(), s(&state)]),
        (
            "list the tasks",
            vec!["ls".into(), s(&tasks.join("default"))],
        ),
        ("list the bundle", vec!["ls".into(), s(&bundle)]),
        (
            "list the blobs",
            vec!["ls".into(), s(&root.join("content/blobs/sha256"))],
        ),
        (
            "list the ingests",
            vec!["ls".into(), s(&root.join("content/ingest"))],
        ),
        (
            "list the shim sockets",
            vec!["ls".into(), s(&d.dir.path().join("s"))],
        ),
        (
            "list the snapshots",
            vec!["ls".into(), s(&root.join("snapshots/overlayfs/snapshots"))],
        ),
        (
            "list the logs",
            vec!["ls".into(), s(&root.join("logs/default"))],
        ),
        (
            "read the container's log",
            vec![
                "cat".into(),
                s(&root.join("logs/default/perm1/perm1-json.log")),
            ],
        ),
    ];
    let mut reached = Vec::new();
    for (what, args) in &probes {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Root can: the probe itself works and the path exists.
        let r = as_root(&args);
        assert!(r.status.success(), "as root, {what}: {r:?}");
        let n = as_nobody(&args);
        let err = String::from_utf8_lossy(&n.stderr);
        if n.status.success() || !err.contains("Permission denied") {
            let out: String = String::from_utf8_lossy(&n.stdout)
                .escape_debug()
                .take(60)
                .collect();
            reached.push(format!("{what} ({}): {out} {}", args.join(" "), err.trim()));
        }
    }
    assert!(
        reached.is_empty(),
        "nobody reached:\n{}",
        reached.join("\n")
    );
}
