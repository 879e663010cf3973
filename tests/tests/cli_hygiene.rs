//! The operator's daily hygiene against a real berthd: berthd logs without
//! colour codes and tells systemd when it serves, install.sh installs
//! built binaries without cargo, and the error paths say what happened and
//! leave nothing behind (socket permissions vs. no daemon, a missing
//! archive, `-t` without a terminal, failed and interrupted exports), with
//! short image names as `run` takes them. Root only.

use berth_tests::*;
use serde_json::Value;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn daemon() -> Option<Daemon> {
    if !require_root("running berthd") {
        return None;
    }
    Some(Daemon::start())
}

/// `berthctl --format json ARGS` parsed.
fn json(d: &Daemon, args: &[&str]) -> Value {
    let mut v = vec!["--format", "json"];
    v.extend_from_slice(args);
    let out = ok(&args.join(" "), d.berthctl("default", &v));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{out}"))
}

#[test]
fn berthd_logs_carry_no_colour_codes() {
    let Some(d) = daemon() else {
        return;
    };
    // The harness sends berthd's stderr to a file, at debug level.
    ok("images ls", d.berthctl("default", &["images", "ls"]));
    let log = d.log();
    assert!(log.contains("berthd ready"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "ANSI escape codes in a log file:\n{log}"
    );
}

/// A berthd beside `d` (own root, state and socket) to stop and reap.
struct Second(Child);

impl Drop for Second {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn berthd_tells_systemd_when_it_serves() {
    let Some(d) = daemon() else {
        return;
    };
    let dir = d.dir.path().join("second");
    std::fs::create_dir_all(&dir).unwrap();
    let notify = dir.join("notify.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let sock = dir.join("b.sock");
    let log = std::fs::File::create(dir.join("berthd.log")).unwrap();
    let child = d
        .berthd_on(&dir.join("root"), &dir.join("state"), &sock)
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn berthd");
    let mut second = Second(child);
    let mut buf = [0u8; 512];
    let n = rx
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no sd_notify datagram in 30s ({e})"));
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(msg.trim_end(), "READY=1");
    // Ready means serving: the API answers at once.
    let out = ok(
        "version",
        berthctl_at(&sock, &dir, "default", &["version"])
            .output()
            .unwrap(),
    );
    assert!(out.contains("Server"), "{out}");

    let st = terminate(&mut second.0, Duration::from_secs(10)).expect("berthd stops on SIGTERM");
    assert!(st.success(), "{st}");
    let n = rx.recv(&mut buf).expect("STOPPING=1 before exit");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim_end(), "STOPPING=1");
    let unit = std::fs::read_to_string(repo_root().join("deploy/berthd.service")).unwrap();
    assert!(unit.lines().any(|l| l == "Type=notify"), "{unit}");
}

#[test]
fn install_sh_installs_built_binaries_without_cargo() {
    let tmp = tempfile::tempdir().unwrap();
    // A cargo that fails: installing must not build.
    let fake = tmp.path().join("fakebin");
    std::fs::create_dir(&fake).unwrap();
    std::fs::write(
        fake.join("cargo"),
        "#!/bin/sh\necho cargo was run >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        fake.join("cargo"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let stage = tmp.path().join("stage");
    let bins = bin("berthd").parent().unwrap().to_path_buf();
    let out = Command::new("bash")
        .arg(repo_root().join("deploy/install.sh"))
        .arg("--bin-dir")
        .arg(&bins)
        .env("DESTDIR", &stage)
        .env("PATH", format!("{}:/usr/bin:/bin", fake.display()))
        .output()
        .unwrap();
    ok("install.sh --bin-dir", out);
    for f in [
        "usr/local/bin/berthd",
        "usr/local/bin/berthctl",
        "usr/local/bin/containerd-shim-berth-v2",
        "etc/berth/config.toml",
        "etc/systemd/system/berthd.service",
    ] {
        assert!(stage.join(f).is_file(), "{f} not installed");
    }
    assert_eq!(
        std::fs::read(stage.join("usr/local/bin/berthctl")).unwrap(),
        std::fs::read(bins.join("berthctl")).unwrap()
    );
    // Without --bin-dir or --no-build it builds, with the fake cargo: fails.
    let out = Command::new("bash")
        .arg(repo_root().join("deploy/install.sh"))
        .env("DESTDIR", tmp.path().join("stage2"))
        .env("PATH", format!("{}:/usr/bin:/bin", fake.display()))
        .output()
        .unwrap();
    let err = fails("install.sh building", out);
    assert!(err.contains("cargo was run"), "{err}");
}

/// berthctl copied where an unprivileged user can run it (the build tree
/// may sit under a private home).
fn berthctl_for_nobody(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = dir.join("berthctl");
    std::fs::copy(bin("berthctl"), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn errors_say_what_happened_and_what_to_do() {
    let Some(d) = daemon() else {
        return;
    };
    // No daemon vs. not allowed on the socket.
    let missing = d.dir.path().join("nothing-here.sock");
    let err = fails(
        "no daemon",
        berthctl_at(&missing, d.dir.path(), "default", &["images", "ls"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains(&format!(
            "no berthd at {}: is it running?",
            missing.display()
        )),
        "{err}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let ctl = berthctl_for_nobody(tmp.path());
    let err = fails(
        "as nobody",
        Command::new(&ctl)
            .arg("--address")
            .arg(&d.sock)
            .args(["images", "ls"])
            .env_remove("BERTH_ADDRESS")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap(),
    );
    assert!(
        err.contains(&format!(
            "permission denied on {}: run as root",
            d.sock.display()
        )),
        "{err}"
    );

    // import says why it cannot open the file.
    let err = fails(
        "import missing",
        d.berthctl_command("default", &["images", "import", "missing.tar"])
            .current_dir(d.dir.path())
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("open missing.tar: No such file or directory") && !err.contains("os error"),
        "{err}"
    );

    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    // -t with a pipe on stdin: a usage error at once, not a hang.
    let out = output_within(
        d.berthctl_command("default", &["run", "--rm", "-it", "busybox", "sh"]),
        b"echo x\n",
        Duration::from_secs(20),
    )
    .expect("run -it with a pipe for stdin hung");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the input device is not a TTY"), "{err}");
    assert!(
        ok(
            "containers ls",
            d.berthctl("default", &["containers", "ls", "-q"])
        )
        .trim()
        .is_empty(),
        "nothing made"
    );

    // Short names, as run and tag take them.
    let out = json(&d, &["images", "inspect", "busybox"]);
    assert_eq!(out["name"], "docker.io/library/busybox:latest");
    let tar = d.dir.path().join("bb.tar");
    ok(
        "export busybox",
        d.berthctl(
            "default",
            &["images", "export", tar.to_str().unwrap(), "busybox"],
        ),
    );
    assert!(std::fs::metadata(&tar).unwrap().len() > 1 << 20);
    let mnt = d.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    ok(
        "mount busybox",
        d.berthctl("default", &["images", "mount", "busybox", m]),
    );
    let mounted = mnt.join("bin/busybox").exists();
    ok("unmount", d.berthctl("default", &["images", "unmount", m]));
    assert!(mounted, "the image's files at the mount point");

    // A failed export leaves no file: a missing image, a missing blob, and
    // an export interrupted half-way.
    let out_tar = d.dir.path().join("out.tar");
    let o = out_tar.to_str().unwrap();
    let err = fails(
        "export missing",
        d.berthctl("default", &["images", "export", o, "nosuch"]),
    );
    assert!(err.contains("nosuch"), "{err}");
    assert!(!out_tar.exists(), "export of a missing image left {o}");
    interrupted_export_leaves_nothing(&d);
    let inspect = json(&d, &["images", "inspect", "busybox"]);
    let layer = inspect["manifest"]["layers"][0]["digest"].as_str().unwrap();
    ok(
        "content rm",
        d.berthctl("default", &["content", "rm", layer]),
    );
    let err = fails(
        "export without a layer",
        d.berthctl("default", &["images", "export", o, "busybox"]),
    );
    assert!(err.contains(layer), "{err}");
    assert!(!out_tar.exists(), "a failed export left {o}");

    ok(
        "rm busybox",
        d.berthctl("default", &["images", "rm", "busybox"]),
    );
    assert!(
        ok("images ls", d.berthctl("default", &["images", "ls", "-q"]))
            .trim()
            .is_empty()
    );
}

/// Exports into a FIFO nobody reads (berthctl blocks once the pipe is
/// full), interrupts it, and checks the output is gone.
fn interrupted_export_leaves_nothing(d: &Daemon) {
    let fifo = d.dir.path().join("slow.tar");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Held open for reading, never read: the writer stalls, not fails.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let mut child = d
        .berthctl_command(
            "default",
            &["images", "export", fifo.to_str().unwrap(), "busybox"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Until the pipe is full (64 KiB): the export is under way.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&reader),
                libc::FIONREAD,
                &mut n,
            )
        };
        if n >= 60_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the export never filled the pipe ({n} bytes)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child by pid, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("an interrupted export did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    assert_eq!(st.code(), Some(130), "{st} {err}");
    assert!(
        !fifo.exists(),
        "the interrupted export left its output: {err}"
    );
    drop(reader);
}
