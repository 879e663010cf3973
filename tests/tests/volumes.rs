//! Named volumes and `run -v` against a real berthd: data outlives
//! containers, in-use volumes are kept, prune takes only unused ones,
//! `:ro` and host bind mounts, the store's privacy, and namespaces. Root only.

use berth_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn daemon() -> Option<Daemon> {
    if !require_root("running containers") {
        return None;
    }
    let d = Daemon::start();
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    Some(d)
}

fn run(d: &Daemon, args: &[&str]) -> std::process::Output {
    let mut v = vec!["run", "--rm"];
    v.extend_from_slice(args);
    d.berthctl("default", &v)
}

fn names(d: &Daemon, ns: &str) -> Vec<String> {
    let mut v: Vec<String> = ok("volume ls -q", d.berthctl(ns, &["volume", "ls", "-q"]))
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn containers(d: &Daemon) -> String {
    ok(
        "containers ls",
        d.berthctl("default", &["containers", "ls", "-q"]),
    )
}

#[test]
fn volumes_keep_data_and_guard_their_users() {
    let Some(d) = daemon() else {
        return;
    };
    // Created on first use; a second container reads what the first wrote.
    ok(
        "write",
        run(
            &d,
            &[
                "-v",
                "data:/data",
                "busybox",
                "sh",
                "-c",
                "echo kept > /data/f",
            ],
        ),
    );
    let out = ok(
        "read",
        run(&d, &["-v", "data:/data", "busybox", "cat", "/data/f"]),
    );
    assert_eq!(out.trim(), "kept");
    assert_eq!(names(&d, "default"), ["data"]);

    // Filled from the image when new: the fixture's /etc/passwd, and
    // /tmp's mode.
    let out = ok(
        "copy-up",
        run(&d, &["-v", "seeded:/etc", "busybox", "cat", "/etc/passwd"]),
    );
    assert!(out.contains("nobody:x:65534"), "{out}");
    let out = ok(
        "copy-up mode",
        run(
            &d,
            &["-v", "tmpv:/tmp", "busybox", "stat", "-c", "%a", "/tmp"],
        ),
    );
    assert_eq!(out.trim(), "1777");

    // inspect shows the mountpoint under the store.
    let js: serde_json::Value = serde_json::from_str(&ok(
        "inspect",
        d.berthctl("default", &["volume", "inspect", "data"]),
    ))
    .unwrap();
    let mp = js[0]["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(
        Path::new(&mp),
        d.root().join("volumes/default/data/_data"),
        "{js}"
    );
    assert_eq!(
        std::fs::read_to_string(Path::new(&mp).join("f")).unwrap(),
        "kept\n"
    );

    // A detached container's volume cannot be removed until it is gone.
    ok(
        "run -d",
        d.berthctl(
            "default",
            &[
                "run", "-d", "--name", "holder", "-v", "used:/u", "busybox", "sleep", "600",
            ],
        ),
    );
    let err = fails("rm used", d.berthctl("default", &["volume", "rm", "used"]));
    assert!(err.contains("in use") && err.contains("holder"), "{err}");
    ok(
        "created idle",
        d.berthctl("default", &["volume", "create", "idle"]),
    );
    ok(
        "create again",
        d.berthctl("default", &["volume", "create", "idle", "--label", "a=b"]),
    );
    // Prune takes the unused ones only.
    let out = ok("prune", d.berthctl("default", &["volume", "prune", "-f"]));
    assert!(
        out.contains("idle") && out.contains("data") && !out.contains("used"),
        "{out}"
    );
    assert_eq!(names(&d, "default"), ["used"]);
    ok(
        "rm holder",
        d.berthctl("default", &["tasks", "rm", "-f", "holder"]),
    );
    ok(
        "containers rm",
        d.berthctl("default", &["containers", "rm", "holder"]),
    );
    ok("rm used", d.berthctl("default", &["volume", "rm", "used"]));
    assert!(names(&d, "default").is_empty());
    fails(
        "rm missing",
        d.berthctl("default", &["volume", "rm", "used"]),
    );
    assert!(!d.root().join("volumes/default/used").exists());
}

#[test]
fn read_only_and_host_binds() {
    let Some(d) = daemon() else {
        return;
    };
    let err = fails(
        "ro write",
        run(&d, &["-v", "rov:/r:ro", "busybox", "touch", "/r/x"]),
    );
    assert!(err.contains("Read-only file system"), "{err}");

    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from host").unwrap();
    let bind = format!("{}:/h", host.path().display());
    let out = ok(
        "bind",
        run(
            &d,
            &[
                "-v",
                &bind,
                "busybox",
                "sh",
                "-c",
                "cat /h/in; echo out > /h/out",
            ],
        ),
    );
    assert_eq!(out.trim(), "from host");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "out\n"
    );
    let ro_bind = format!("{}:/h:ro", host.path().display());
    let err = fails(
        "ro bind",
        run(&d, &["-v", &ro_bind, "busybox", "touch", "/h/y"]),
    );
    assert!(err.contains("Read-only file system"), "{err}");

    // A missing host path is a usage error; nothing is created.
    let before = containers(&d);
    let err = fails(
        "missing",
        run(&d, &["-v", "/no/such/berth/dir:/x", "busybox", "true"]),
    );
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(containers(&d), before);
    assert_eq!(names(&d, "default"), ["rov"]);
}

#[test]
fn store_is_private_and_namespaced() {
    let Some(d) = daemon() else {
        return;
    };
    let Some(runuser) = peer("runuser") else {
        return;
    };
    ok(
        "create a",
        d.berthctl("nsa", &["volume", "create", "secret"]),
    );
    assert_eq!(names(&d, "nsa"), ["secret"]);
    assert!(names(&d, "nsb").is_empty());
    fails(
        "inspect in b",
        d.berthctl("nsb", &["volume", "inspect", "secret"]),
    );
    fails("rm in b", d.berthctl("nsb", &["volume", "rm", "secret"]));
    // A namespace holding volumes is not empty.
    let err = fails("ns rm", d.berthctl("default", &["namespaces", "rm", "nsa"]));
    assert!(err.contains("volumes"), "{err}");

    let vols = d.root().join("volumes");
    let data = vols.join("nsa/secret/_data");
    std::fs::write(data.join("key"), "s3cret").unwrap();
    assert_eq!(
        std::fs::metadata(&vols).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Open the test's own temp dir for traversal, so that only the
    // store's modes stand between nobody and the data.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let as_nobody = |args: &[&str]| {
        std::process::Command::new(&runuser)
            .args(["-u", "nobody", "--"])
            .args(args)
            .output()
            .unwrap()
    };
    // The daemon's root is traversable, so nobody gets as far as volumes/.
    let root_ok = as_nobody(&["test", "-x", d.root().to_str().unwrap()]);
    assert!(
        root_ok.status.success(),
        "root not traversable: test is void"
    );
    let err = fails("ls as nobody", as_nobody(&["ls", vols.to_str().unwrap()]));
    assert!(err.contains("Permission denied"), "{err}");
    let key = data.join("key");
    let err = fails("cat as nobody", as_nobody(&["cat", key.to_str().unwrap()]));
    assert!(err.contains("Permission denied"), "{err}");
}
