//! Real containerd 1.6 using berth's standalone snapshotter as a
//! `proxy_plugins` snapshotter: it imports and unpacks busybox into it.

use berth_tests::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(sock: &std::path::Path, what: &str, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what} did not listen on {}:\n{}",
        sock.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn containerd_uses_berth_snapshotter_as_proxy_plugin() {
    let Some(containerd) = peer("containerd") else {
        return;
    };
    let Some(ctr) = peer("ctr") else { return };
    if !require_root("containerd with a proxy snapshotter") {
        return;
    }
    let fx = fixtures();
    let dir = tempfile::Builder::new()
        .prefix("berth-proxy-")
        .tempdir()
        .unwrap();
    let p = |s: &str| dir.path().join(s);

    let sn_sock = p("berth-sn.sock");
    let sn_log = p("snapshotter.log");
    let _sn = Killed(
        Command::new(bin("berth-snapshotter"))
            .arg("--address")
            .arg(&sn_sock)
            .arg("--root")
            .arg(p("snroot"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&sn_log).unwrap())
            .spawn()
            .expect("start berth-snapshotter"),
    );
    wait_for(&sn_sock, "berth-snapshotter", &sn_log);

    let sock = p("containerd.sock");
    let config = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[proxy_plugins]
  [proxy_plugins.berth]
    type = "snapshot"
    address = "{sn}"
"#,
        root = p("croot").display(),
        state = p("cstate").display(),
        sock = sock.display(),
        sn = sn_sock.display(),
    );
    std::fs::write(p("config.toml"), config).unwrap();
    let c_log = p("containerd.log");
    let _containerd = Killed(
        Command::new(&containerd)
            .arg("--config")
            .arg(p("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&c_log).unwrap())
            .spawn()
            .expect("start containerd"),
    );
    wait_for(&sock, "containerd", &c_log);

    let ctr = |args: &[&str]| {
        Command::new(&ctr)
            .arg("--address")
            .arg(&sock)
            .args(args)
            .output()
            .expect("run ctr")
    };
    let plugins = ok("plugins", ctr(&["plugins", "ls"]));
    assert!(
        plugins
            .lines()
            .any(|l| l.contains("io.containerd.snapshotter.v1")
                && l.contains("berth")
                && l.contains("ok")),
        "{plugins}"
    );
    let oci = fx.join("busybox-oci.tar");
    ok(
        "import via proxy snapshotter",
        ctr(&[
            "images",
            "import",
            "--snapshotter",
            "berth",
            "--base-name",
            "docker.io/local/bb",
            oci.to_str().unwrap(),
        ]),
    );
    let ls = ok(
        "snapshots ls",
        ctr(&["snapshots", "--snapshotter", "berth", "ls"]),
    );
    // The committed layer snapshot is named by its chain ID (the diff ID of a
    // single-layer image), which containerd namespaces itself.
    assert!(ls.contains("Committed"), "{ls}");
    let cfg: serde_json::Value = serde_json::from_slice(
        &tar_member(
            &oci,
            &format!("./blobs/sha256/{}", &fixture_digest("config")[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    let diff_id = cfg["rootfs"]["diff_ids"][0].as_str().unwrap();
    assert!(ls.contains(diff_id), "chain {diff_id} in:\n{ls}");
    // The files really are in berth's snapshot directory.
    let found = walk_for(&p("snroot/snapshots"), "busybox");
    assert!(found, "bin/busybox under berth's snapshot root");
    ok(
        "images rm",
        ctr(&["images", "rm", "--sync", "docker.io/local/bb:latest"]),
    );
}

fn walk_for(dir: &std::path::Path, name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name() == name {
            return true;
        }
        if p.is_dir() && !p.is_symlink() && walk_for(&p, name) {
            return true;
        }
    }
    false
}
