//! The layer applier's semantics are containerd's and docker's
//! (`archive/tar.go` `applyNaive`, `pkg/archive`): names are cleaned and
//! taken under the root, the root entry is skipped, implied directories
//! inherit from parent layers, and every tar flavour builders write
//! (PAX, GNU long names, gzip, zstd, none) applies the same. Needs root
//! (ownership); says SKIPPED otherwise.

use berth_daemon::snapshots::diff::apply::{Whiteouts, apply, apply_over};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var("BERTH_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("layer semantics tests need root");
        }
        eprintln!("SKIPPED: layer semantics tests need root");
    }
    root
}

/// One tar member: raw name bytes are kept as given (no normalisation).
struct M<'a> {
    name: &'a str,
    kind: tar::EntryType,
    data: &'a [u8],
    link: &'a str,
    mode: u32,
    uid: u64,
    gid: u64,
    /// PAX records written in an extended header before the member.
    pax: Vec<(&'a str, &'a [u8])>,
}

fn m(name: &str) -> M<'_> {
    M {
        name,
        kind: tar::EntryType::Regular,
        data: b"",
        link: "",
        mode: 0o644,
        uid: 0,
        gid: 0,
        pax: Vec::new(),
    }
}
fn dir(name: &str) -> M<'_> {
    M {
        kind: tar::EntryType::Directory,
        mode: 0o755,
        ..m(name)
    }
}
fn file<'a>(name: &'a str, data: &'a [u8]) -> M<'a> {
    M { data, ..m(name) }
}
fn symlink<'a>(name: &'a str, target: &'a str) -> M<'a> {
    M {
        kind: tar::EntryType::Symlink,
        link: target,
        mode: 0o777,
        ..m(name)
    }
}
fn hardlink<'a>(name: &'a str, target: &'a str) -> M<'a> {
    M {
        kind: tar::EntryType::Link,
        link: target,
        ..m(name)
    }
}

fn header(kind: tar::EntryType, size: u64, mode: u32, uid: u64, gid: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(1_000_000);
    h
}

fn push(out: &mut Vec<u8>, mut h: tar::Header, name: &[u8], data: &[u8]) {
    let nb = &mut h.as_old_mut().name;
    nb.fill(0);
    nb[..name.len()].copy_from_slice(name);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
}

fn tar(members: &[M]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in members {
        if !e.pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &e.pax {
                // "<len> <key>=<value>\n", where len counts itself.
                let rest = k.len() + v.len() + 3;
                let mut len = rest + 1;
                while len != rest + len.to_string().len() {
                    len = rest + len.to_string().len();
                }
                body.extend_from_slice(format!("{len} {k}=").as_bytes());
                body.extend_from_slice(v);
                body.push(b'\n');
            }
            let h = header(tar::EntryType::XHeader, body.len() as u64, 0o644, 0, 0);
            push(&mut out, h, b"././@PaxHeader", &body);
        }
        let mut h = header(e.kind, e.data.len() as u64, e.mode, e.uid, e.gid);
        if !e.link.is_empty() {
            h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        let name = if e.name.len() > 100 {
            &b"long"[..]
        } else {
            e.name.as_bytes()
        };
        push(&mut out, h, name, e.data);
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn apply_delete(root: &Path, members: &[M]) {
    apply(root, tar(members).as_slice(), Whiteouts::Delete).expect("apply");
}

fn mode_of(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn names_are_cleaned_under_the_root_and_the_root_entry_is_skipped() {
    if !root_or_skip() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let mut root_dir = dir("/");
    root_dir.mode = 0o700;
    let mut dot = dir("./");
    dot.mode = 0o700;
    apply_delete(
        &root,
        &[
            root_dir,
            dot,
            dir("."),
            dir("/etc/"),
            file("/etc/abs", b"abs"),
            file("./etc/dot", b"dot"),
            file("etc/./inner", b"inner"),
            file("etc/gone/../up", b"up"),
            file("//etc//double", b"double"),
            file("/../../../etc/clamped", b"clamped"),
            hardlink("/etc/hard", "/etc/abs"),
            hardlink("./etc/hard2", "etc/gone/../dot"),
        ],
    );
    // umoci, GNU tar and buildah root entries do not change the root.
    assert_eq!(mode_of(&root).0, 0o755);
    for (p, want) in [
        ("etc/abs", "abs"),
        ("etc/dot", "dot"),
        ("etc/inner", "inner"),
        ("etc/up", "up"),
        ("etc/double", "double"),
        ("etc/clamped", "clamped"),
        ("etc/hard", "abs"),
        ("etc/hard2", "dot"),
    ] {
        assert_eq!(fs::read_to_string(root.join(p)).unwrap(), want, "{p}");
    }
    assert!(!root.join("etc/gone").exists(), "a/../b made a");
    let ino = |p: &str| fs::metadata(root.join(p)).unwrap().ino();
    assert_eq!(ino("etc/hard"), ino("etc/abs"));
    assert_eq!(ino("etc/hard2"), ino("etc/dot"));
    // Only the target root was written.
    let mut names: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["root"]);
    // Names that still climb out are refused, naming the entry.
    for bad in ["../x", "etc/../../x", "./../x"] {
        // The chain, as a client sees it: the entry's name wraps the cause.
        let err = apply(&root, tar(&[file(bad, b"x")]).as_slice(), Whiteouts::Delete)
            .unwrap_err()
            .chain();
        assert!(err.contains(bad) && err.contains("escape"), "{bad}: {err}");
    }
    let err = apply(
        &root,
        tar(&[hardlink("h", "../etc/abs")]).as_slice(),
        Whiteouts::Delete,
    )
    .unwrap_err()
    .chain();
    assert!(err.contains("hard link") && err.contains("escape"), "{err}");
}

#[test]
fn directories_symlinks_and_replacements_follow_containerd() {
    if !root_or_skip() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    // A merged-/usr style symlink in a lower layer.
    apply_delete(
        root,
        &[
            dir("usr/"),
            dir("usr/lib/"),
            symlink("lib", "usr/lib"),
            symlink("lib64", "/usr/lib"),
            dir("d/"),
            file("d/in", b"1"),
            file("f", b"file"),
        ],
    );
    apply_delete(
        root,
        &[
            // Parents resolve through symlinks inside the root.
            file("lib/via", b"via"),
            file("/lib64/abs", b"abs"),
            // A dir replaced by a file, a file by a dir.
            file("d", b"now a file"),
            dir("f/"),
            file("f/inner", b"inner"),
        ],
    );
    assert_eq!(fs::read(root.join("usr/lib/via")).unwrap(), b"via");
    assert_eq!(fs::read(root.join("usr/lib/abs")).unwrap(), b"abs");
    assert!(fs::symlink_metadata(root.join("lib")).unwrap().is_symlink());
    assert_eq!(fs::read(root.join("d")).unwrap(), b"now a file");
    assert_eq!(fs::read(root.join("f/inner")).unwrap(), b"inner");
    // And back again; a directory entry over a symlink replaces the link.
    apply_delete(root, &[dir("d/"), file("d/again", b"a"), dir("lib/")]);
    assert_eq!(fs::read(root.join("d/again")).unwrap(), b"a");
    let lib = fs::symlink_metadata(root.join("lib")).unwrap();
    assert!(lib.is_dir(), "lib is still a symlink");
    assert!(root.join("usr/lib/via").exists());
}

#[test]
fn modes_owners_long_names_and_xattrs_survive() {
    if !root_or_skip() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let long_name = format!("data/{}/{}", "d".repeat(120), "f".repeat(130));
    let mut suid = file("bin/suid", b"#!/bin/sh\n");
    suid.mode = 0o4755;
    suid.uid = 1000;
    suid.gid = 1000;
    let mut sticky = dir("tmp/");
    sticky.mode = 0o1777;
    let mut sgid = dir("shared/");
    sgid.mode = 0o2770;
    sgid.gid = 50;
    // Children listed before their parent: the parent's entry wins.
    let mut parent = dir("late/");
    parent.mode = 0o700;
    parent.uid = 5;
    parent.gid = 6;
    let mut long = file("ignored", b"long");
    long.pax = vec![("path", long_name.as_bytes())];
    let mut x = file("x", b"x");
    x.pax = vec![
        ("SCHILY.xattr.user.berth", b"yes"),
        ("uid", b"3000000"),
        ("gid", b"3000001"),
        ("mtime", b"1234567890.5"),
    ];
    apply_delete(
        root,
        &[
            suid,
            sticky,
            sgid,
            file("late/child", b"c"),
            parent,
            long,
            x,
        ],
    );
    assert_eq!(mode_of(&root.join("bin/suid")), (0o4755, 1000, 1000));
    assert_eq!(mode_of(&root.join("tmp")).0, 0o1777);
    assert_eq!(mode_of(&root.join("shared")), (0o2770, 0, 50));
    assert_eq!(mode_of(&root.join("late")), (0o700, 5, 6));
    assert_eq!(fs::read(root.join(&long_name)).unwrap(), b"long");
    assert!(!root.join("ignored").exists() && !root.join("long").exists());
    let xm = fs::metadata(root.join("x")).unwrap();
    assert_eq!(
        (xm.uid(), xm.gid(), xm.mtime()),
        (3_000_000, 3_000_001, 1_234_567_890)
    );
    assert_eq!(
        xattr::get(root.join("x"), "user.berth").unwrap().as_deref(),
        Some(&b"yes"[..])
    );
}

#[test]
fn implied_directories_inherit_from_parent_layers_in_overlay_mode() {
    if !root_or_skip() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    let upper = t.path().join("upper");
    fs::create_dir_all(&lower).unwrap();
    fs::create_dir_all(&upper).unwrap();
    let mut home = dir("home/");
    home.mode = 0o711;
    let mut user = dir("home/user/");
    user.mode = 0o700;
    user.uid = 1000;
    user.gid = 1000;
    apply_delete(
        &lower,
        &[home, user, symlink("lib", "usr/lib"), file("f", b"")],
    );
    apply_over(
        &upper,
        &[&lower],
        tar(&[
            file("home/user/.profile", b"p"),
            file("f/x", b""),
            file("new/y", b""),
        ])
        .as_slice(),
        Whiteouts::Overlay,
    )
    .expect("apply over a parent layer");
    assert_eq!(mode_of(&upper.join("home")).0, 0o711);
    assert_eq!(mode_of(&upper.join("home/user")), (0o700, 1000, 1000));
    // Replaced below (a file) or new: a plain 0755 root directory.
    assert_eq!(mode_of(&upper.join("f")), (0o755, 0, 0));
    assert_eq!(mode_of(&upper.join("new")), (0o755, 0, 0));
}

#[test]
fn every_compression_and_empty_layers_apply_alike() {
    if !root_or_skip() {
        return;
    }
    let plain = tar(&[dir("a/"), file("a/b", b"same bytes")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(plain.as_slice(), 3).unwrap();
    let mut ids = Vec::new();
    for (what, bytes) in [("tar", &plain), ("gzip", &gz), ("zstd", &zst)] {
        let t = tempfile::tempdir().unwrap();
        let got = apply(t.path(), bytes.as_slice(), Whiteouts::Delete)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            fs::read(t.path().join("a/b")).unwrap(),
            b"same bytes",
            "{what}"
        );
        ids.push(got.diff_id.as_str().to_string());
    }
    assert!(ids.iter().all(|d| d == &ids[0]), "diff IDs differ: {ids:?}");
    // An empty layer (end-of-archive blocks only) and an empty stream.
    for empty in [vec![0u8; 1024], Vec::new()] {
        let t = tempfile::tempdir().unwrap();
        let got = apply(t.path(), empty.as_slice(), Whiteouts::Delete).unwrap();
        assert_eq!(got.size, empty.len() as u64);
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
    }
}

#[test]
fn whiteouts_under_a_path_this_layer_made_a_file_hide_nothing() {
    if !root_or_skip() {
        return;
    }
    // umoci writes a directory replaced by a file as `d` then `d/.wh.in`.
    for mode in [Whiteouts::Delete, Whiteouts::Overlay] {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        if mode == Whiteouts::Delete {
            apply_delete(root, &[dir("d/"), file("d/in", b"in")]);
        }
        apply(
            root,
            tar(&[
                file("d", b"now a file"),
                file("d/.wh.in", b""),
                file("d/.wh..wh..opq", b""),
            ])
            .as_slice(),
            mode,
        )
        .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(fs::read(root.join("d")).unwrap(), b"now a file", "{mode:?}");
    }
}
