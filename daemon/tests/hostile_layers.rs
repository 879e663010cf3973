//! Hostile layer tars: each is rejected with an error naming the entry, or
//! confined to the target root. Nothing outside the root is ever touched.
//! Needs root (ownership, device nodes); says SKIPPED otherwise.

use berth_daemon::snapshots::diff::apply::{Whiteouts, apply};
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var("BERTH_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("hostile layer tests need root");
        }
        eprintln!("SKIPPED: hostile layer tests need root");
    }
    root
}

enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    /// A header claiming `size` bytes followed by only `data`.
    Lying(&'a str, u64, &'a [u8]),
    Sparse(&'a str),
}

/// Writes a tar by hand (raw headers, so hostile names survive).
fn tar(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        let (name, data): (&str, &[u8]) = match e {
            E::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                (n, b"")
            }
            E::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                (n, d)
            }
            E::Symlink(n, t) | E::Hardlink(n, t) => {
                h.set_entry_type(if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_size(0);
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                (n, b"")
            }
            E::Char(n, maj, min) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_size(0);
                h.set_device_major(*maj).unwrap();
                h.set_device_minor(*min).unwrap();
                (n, b"")
            }
            E::Lying(n, size, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(*size);
                (n, d)
            }
            E::Sparse(n) => {
                // A GNU sparse file claiming 10 GiB of real size, one byte stored.
                h.set_entry_type(tar::EntryType::GNUSparse);
                h.set_size(1);
                let octal = |v: u64| {
                    let s = format!("{v:011o}");
                    let mut b = [0u8; 12];
                    b[..s.len()].copy_from_slice(s.as_bytes());
                    b
                };
                let g = h.as_gnu_mut().unwrap();
                g.realsize = octal(10 << 30);
                g.sparse[0].offset = octal((10 << 30) - 1);
                g.sparse[0].numbytes = octal(1);
                (n, b"x")
            }
        };
        // Raw name bytes: no normalisation of "..", "/" or anything else.
        let nb = &mut h.as_old_mut().name;
        nb.fill(0);
        nb[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        if !matches!(e, E::Lying(..)) {
            out.extend(std::iter::repeat_n(0u8, pad));
        }
    }
    if !entries.iter().any(|e| matches!(e, E::Lying(..))) {
        out.extend(std::iter::repeat_n(0u8, 1024));
    }
    out
}

/// A sandbox: `outer/` holds a sentinel and `root/`, the apply target.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::create_dir(dir.path().join("host")).unwrap();
        fs::write(dir.path().join("host/secret"), b"host data").unwrap();
        Sandbox { dir }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    fn host(&self) -> std::path::PathBuf {
        self.dir.path().join("host")
    }

    fn apply(&self, entries: &[E]) -> Result<(), String> {
        apply(&self.root(), tar(entries).as_slice(), Whiteouts::Delete)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Nothing outside the root changed.
    fn assert_outside_untouched(&self) {
        let mut names: Vec<String> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["host", "root"],
            "something was created next to the root"
        );
        let host: Vec<String> = fs::read_dir(self.host())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(host, ["secret"], "the host directory was written to");
        assert_eq!(fs::read(self.host().join("secret")).unwrap(), b"host data");
        let m = fs::metadata(self.host().join("secret")).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::nlink(&m),
            1,
            "host file was hard-linked"
        );
    }
}

#[test]
fn path_traversal_is_rejected() {
    if !root_or_skip() {
        return;
    }
    let s = Sandbox::new();
    let err = s.apply(&[E::File("../escape", b"x")]).unwrap_err();
    assert!(err.contains("\"../escape\"") && err.contains(".."), "{err}");
    let err = s.apply(&[E::File("a/../../escape", b"x")]).unwrap_err();
    assert!(err.contains("a/../../escape"), "{err}");
    // An absolute name is under the layer root (as in containerd and
    // docker), and so is `/..`: the root's parent is the root.
    s.apply(&[E::File("/abs", b"x"), E::File("/../../abs2", b"y")])
        .unwrap();
    assert_eq!(fs::read(s.root().join("abs")).unwrap(), b"x");
    assert_eq!(fs::read(s.root().join("abs2")).unwrap(), b"y");
    s.assert_outside_untouched();
}

#[test]
fn absolute_symlink_then_write_through_it_is_confined() {
    if !root_or_skip() {
        return;
    }
    let s = Sandbox::new();
    let host = s.host().display().to_string();
    // The symlink itself is fine (images have absolute symlinks); writing
    // through it must not reach the host directory.
    let r = s.apply(&[E::Symlink("evil", &host), E::File("evil/pwned", b"x")]);
    if let Err(e) = &r {
        assert!(e.contains("evil/pwned"), "{e}");
    }
    s.assert_outside_untouched();
    // A chain of relative links climbing out resolves inside the root.
    let s = Sandbox::new();
    s.apply(&[
        E::Dir("etc"),
        E::Symlink("up", "../../../../../../.."),
        E::Symlink("up2", "up/up/etc"),
        E::File("up2/passwd", b"inside"),
    ])
    .unwrap();
    assert_eq!(fs::read(s.root().join("etc/passwd")).unwrap(), b"inside");
    s.assert_outside_untouched();
    // A directory replaced by a symlink to / and then written through.
    let s = Sandbox::new();
    s.apply(&[E::Dir("d"), E::Symlink("d", "/"), E::File("d/x", b"1")])
        .unwrap();
    assert_eq!(fs::read(s.root().join("x")).unwrap(), b"1");
    assert!(
        fs::symlink_metadata(s.root().join("d"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    s.assert_outside_untouched();
}

#[test]
fn hardlinks_to_host_files_are_rejected() {
    if !root_or_skip() {
        return;
    }
    let s = Sandbox::new();
    let secret = s.host().join("secret").display().to_string();
    // An absolute target names a path under the layer root, where no such
    // file is.
    let err = s.apply(&[E::Hardlink("hl", &secret)]).unwrap_err();
    assert!(
        err.contains("hl") && err.contains("not in the layer"),
        "{err}"
    );
    let err = s.apply(&[E::Hardlink("hl", "../host/secret")]).unwrap_err();
    assert!(err.contains("hl"), "{err}");
    // Through a symlink pointing out: resolved inside the root, where no such file is.
    let host = s.host().display().to_string();
    let err = s
        .apply(&[E::Symlink("h", &host), E::Hardlink("hl", "h/secret")])
        .unwrap_err();
    assert!(
        err.contains("hl") && err.contains("not in the layer"),
        "{err}"
    );
    // A legitimate hard link inside the layer works.
    s.apply(&[E::File("a", b"A"), E::Hardlink("b", "a")])
        .unwrap();
    assert_eq!(fs::read(s.root().join("b")).unwrap(), b"A");
    s.assert_outside_untouched();
}

#[test]
fn whiteouts_cannot_reach_out() {
    if !root_or_skip() {
        return;
    }
    let s = Sandbox::new();
    let err = s.apply(&[E::File("../.wh.host", b"")]).unwrap_err();
    assert!(err.contains("..") && err.contains(".wh.host"), "{err}");
    let err = s.apply(&[E::File(".wh...", b"")]).unwrap_err();
    assert!(err.contains("whiteout"), "{err}");
    // A whiteout under a symlink pointing at the host deletes nothing there.
    let host = s.host().display().to_string();
    let _ = s.apply(&[E::Symlink("h", &host), E::File("h/.wh.secret", b"")]);
    s.assert_outside_untouched();
    // In overlay mode a whiteout is a 0:0 character device.
    let root = s.root();
    apply(
        &root,
        tar(&[E::File(".wh.gone", b"")]).as_slice(),
        Whiteouts::Overlay,
    )
    .unwrap();
    let m = fs::symlink_metadata(root.join("gone")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(std::os::unix::fs::MetadataExt::rdev(&m), 0);
}

#[test]
fn device_nodes_stay_inside() {
    if !root_or_skip() {
        return;
    }
    let s = Sandbox::new();
    s.apply(&[E::Dir("dev"), E::Char("dev/mem", 1, 1)]).unwrap();
    let m = fs::symlink_metadata(s.root().join("dev/mem")).unwrap();
    assert!(m.file_type().is_char_device());
    s.assert_outside_untouched();
    let host = s.host().display().to_string();
    let _ = s.apply(&[E::Symlink("out", &host), E::Char("out/null", 1, 3)]);
    s.assert_outside_untouched();
}

#[test]
fn huge_size_claims_fail_without_filling_the_disk() {
    if !root_or_skip() {
        return;
    }
    let s = Sandbox::new();
    let ten_gb = 10u64 << 30;
    let err = s
        .apply(&[E::Lying("big", ten_gb, &[7u8; 4096])])
        .unwrap_err();
    assert!(
        err.contains("big") && (err.contains("cut short") || err.contains("truncated")),
        "{err}"
    );
    let used: u64 = fs::metadata(s.root().join("big"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(used < 1 << 20, "wrote {used} bytes for a lying header");
    let err = s.apply(&[E::Sparse("sparse")]).unwrap_err();
    assert!(err.contains("sparse"), "{err}");
    s.assert_outside_untouched();
}

#[test]
fn symlink_loops_are_errors() {
    if !root_or_skip() {
        return;
    }
    let s = Sandbox::new();
    let err = s
        .apply(&[
            E::Symlink("l1", "l2"),
            E::Symlink("l2", "l1"),
            E::File("l1/x", b""),
        ])
        .unwrap_err();
    assert!(err.contains("l1/x"), "{err}");
    s.assert_outside_untouched();
}

#[test]
fn opaque_directories_and_whiteouts_in_delete_mode() {
    if !root_or_skip() {
        return;
    }
    let s = Sandbox::new();
    s.apply(&[E::Dir("d"), E::File("d/old", b"o"), E::File("f", b"f")])
        .unwrap();
    let applied = apply(
        &s.root(),
        tar(&[
            E::Dir("d"),
            E::File("d/.wh..wh..opq", b""),
            E::File("d/new", b"n"),
            E::File(".wh.f", b""),
        ])
        .as_slice(),
        Whiteouts::Delete,
    )
    .unwrap();
    assert!(applied.diff_id.as_str().starts_with("sha256:"));
    assert!(!s.root().join("d/old").exists());
    assert_eq!(fs::read(s.root().join("d/new")).unwrap(), b"n");
    assert!(!s.root().join("f").exists());
    assert!(Path::new(&s.root()).exists());
    s.assert_outside_untouched();
}
