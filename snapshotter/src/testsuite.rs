//! The conformance suite every [`Snapshotter`] runs, modelled on
//! containerd's snapshotter test suite. Each case gets a fresh snapshotter
//! rooted in a temp directory. Cases that mount need root; without it they
//! report `SKIPPED` loudly (and fail when `BERTH_REQUIRE_PEERS=1`).
//!
//! Use [`conformance_tests!`](crate::conformance_tests) to get one `#[test]`
//! per case.

use crate::contract::{Kind, Labels, Snapshotter};
use crate::mount::TempMount;
use berth_proto::errdefs::Kind as ErrKind;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Builds a snapshotter rooted at the given directory.
pub type Factory = dyn Fn(&Path) -> Box<dyn Snapshotter>;

type Case = fn(&dyn Snapshotter, &Path);

/// Every case: name, whether it needs root, body.
pub const CASES: &[(&str, bool, Case)] = &[
    ("basic_lifecycle", false, basic_lifecycle),
    ("same_key_twice", false, same_key_twice),
    ("view_cannot_commit", false, view_cannot_commit),
    (
        "remove_with_and_without_children",
        false,
        remove_with_children,
    ),
    ("walk_with_filters", false, walk_with_filters),
    ("update_labels", false, update_labels),
    ("remap_labels_refused", false, remap_labels_refused),
    ("committed_has_no_mounts", false, committed_has_no_mounts),
    ("concurrent_prepare_one_key", false, concurrent_prepare),
    (
        "cleanup_after_interrupted_prepare",
        false,
        cleanup_after_interrupted,
    ),
    ("parent_chain_contents", true, parent_chain_contents),
    ("view_is_readonly", true, view_is_readonly),
    ("usage_excludes_parents", true, usage_excludes_parents),
    ("deleted_files_and_dirs_in_child", true, deleted_in_child),
    (
        "ownership_and_modes_survive_layers",
        true,
        ownership_survives,
    ),
    ("mount_128_layers", true, mount_128_layers),
];

/// Runs one case by name against a fresh snapshotter from `factory`.
pub fn run(case: &str, factory: &Factory) {
    let (_, needs_root, body) = CASES
        .iter()
        .find(|(n, _, _)| *n == case)
        .unwrap_or_else(|| panic!("no conformance case {case}"));
    // SAFETY: geteuid has no preconditions.
    if *needs_root && unsafe { libc::geteuid() } != 0 {
        if std::env::var("BERTH_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("conformance case {case} needs root");
        }
        eprintln!("SKIPPED: conformance case {case} needs root (mounts)");
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("berth-sn-")
        .tempdir()
        .expect("tempdir");
    let root = work.path().join("root");
    let s = factory(&root);
    body(s.as_ref(), work.path());
}

/// One `#[test]` per conformance case for a snapshotter constructor.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr; $($case:ident),* $(,)?) => {$(
        #[test]
        fn $case() {
            let f: Box<$crate::testsuite::Factory> = Box::new($factory);
            $crate::testsuite::run(stringify!($case), f.as_ref());
        }
    )*};
    ($factory:expr) => {
        $crate::conformance_tests!($factory;
            basic_lifecycle, same_key_twice, view_cannot_commit,
            remove_with_and_without_children, walk_with_filters, update_labels,
            remap_labels_refused,
            committed_has_no_mounts, concurrent_prepare_one_key,
            cleanup_after_interrupted_prepare, parent_chain_contents,
            view_is_readonly, usage_excludes_parents, deleted_files_and_dirs_in_child,
            ownership_and_modes_survive_layers, mount_128_layers);
    };
}

fn no_labels() -> Labels {
    Labels::new()
}

#[track_caller]
fn err_kind<T: std::fmt::Debug>(r: crate::error::Result<T>, want: ErrKind) {
    match r {
        Err(e) => assert_eq!(e.kind(), want, "{e}"),
        Ok(v) => panic!("expected {want:?}, got Ok({v:?})"),
    }
}

fn basic_lifecycle(s: &dyn Snapshotter, _: &Path) {
    let active = Labels::from([
        ("active".into(), "1".into()),
        ("empty".into(), String::new()),
    ]);
    s.prepare("a", "", active).unwrap();
    let i = s.stat("a").unwrap();
    assert_eq!((i.kind, i.parent.as_str()), (Kind::Active, ""));
    // As containerd: a label with an empty value is not stored.
    assert_eq!(i.labels, Labels::from([("active".into(), "1".into())]));
    err_kind(s.prepare("b", "a", no_labels()), ErrKind::InvalidArgument);
    err_kind(s.prepare("b", "missing", no_labels()), ErrKind::NotFound);
    err_kind(s.view("b", "missing", no_labels()), ErrKind::NotFound);
    s.commit("A", "a", Labels::from([("l".into(), "1".into())]))
        .unwrap();
    err_kind(s.stat("a"), ErrKind::NotFound);
    let c = s.stat("A").unwrap();
    assert_eq!(c.kind, Kind::Committed);
    assert_eq!(
        c.labels,
        Labels::from([("l".into(), "1".into())]),
        "a commit's labels replace the active snapshot's"
    );
    s.prepare("b", "A", no_labels()).unwrap();
    s.commit("B", "b", no_labels()).unwrap();
    assert_eq!(
        s.stat("B").unwrap().parent,
        "A",
        "commit keeps the active snapshot's parent"
    );
    s.view("v", "B", no_labels()).unwrap();
    let v = s.stat("v").unwrap();
    assert_eq!((v.kind, v.parent.as_str()), (Kind::View, "B"));
    err_kind(s.commit("X", "missing", no_labels()), ErrKind::NotFound);
}

fn same_key_twice(s: &dyn Snapshotter, _: &Path) {
    s.prepare("k", "", no_labels()).unwrap();
    err_kind(s.prepare("k", "", no_labels()), ErrKind::AlreadyExists);
    err_kind(s.view("k", "", no_labels()), ErrKind::AlreadyExists);
    s.commit("N", "k", no_labels()).unwrap();
    err_kind(s.prepare("N", "", no_labels()), ErrKind::AlreadyExists);
    s.prepare("k2", "", no_labels()).unwrap();
    err_kind(s.commit("N", "k2", no_labels()), ErrKind::AlreadyExists);
    assert_eq!(
        s.stat("k2").unwrap().kind,
        Kind::Active,
        "failed commit keeps the active snapshot"
    );
    err_kind(s.prepare("", "", no_labels()), ErrKind::InvalidArgument);
}

/// Neither built-in snapshotter shifts ownership: the remapping labels are
/// refused and nothing is created under the key.
fn remap_labels_refused(s: &dyn Snapshotter, _: &Path) {
    s.prepare("base", "", no_labels()).unwrap();
    s.commit("B", "base", no_labels()).unwrap();
    for label in [crate::contract::UID_MAPPING, crate::contract::GID_MAPPING] {
        let labels: Labels = [(label.to_string(), "0:100000:65536".to_string())].into();
        for view in [false, true] {
            let r = if view {
                s.view("k", "B", labels.clone())
            } else {
                s.prepare("k", "B", labels.clone())
            };
            let e = r.expect_err("remapping labels must be refused");
            assert_eq!(e.kind(), ErrKind::Unimplemented, "{e}");
            assert!(e.to_string().contains(label), "{e}");
            err_kind(s.stat("k"), ErrKind::NotFound);
        }
    }
    // Other labels still pass.
    let ok: Labels = [("x".to_string(), "y".to_string())].into();
    s.prepare("k", "B", ok).unwrap();
}

fn view_cannot_commit(s: &dyn Snapshotter, _: &Path) {
    s.prepare("a", "", no_labels()).unwrap();
    s.commit("A", "a", no_labels()).unwrap();
    s.view("v", "A", no_labels()).unwrap();
    err_kind(s.commit("V", "v", no_labels()), ErrKind::FailedPrecondition);
    err_kind(s.prepare("c", "v", no_labels()), ErrKind::InvalidArgument);
    assert!(!s.mounts("v").unwrap().is_empty());
}

fn remove_with_children(s: &dyn Snapshotter, work: &Path) {
    s.prepare("a", "", no_labels()).unwrap();
    s.commit("A", "a", no_labels()).unwrap();
    s.prepare("b", "A", no_labels()).unwrap();
    err_kind(s.remove("A"), ErrKind::FailedPrecondition);
    s.commit("B", "b", no_labels()).unwrap();
    err_kind(s.remove("A"), ErrKind::FailedPrecondition);
    s.remove("B").unwrap();
    s.remove("A").unwrap();
    err_kind(s.remove("A"), ErrKind::NotFound);
    assert!(s.walk(&[]).unwrap().is_empty());
    let left = fs::read_dir(work.join("root/snapshots")).unwrap().count();
    assert_eq!(left, 0, "removed snapshots leave no directories");
}

fn walk_with_filters(s: &dyn Snapshotter, _: &Path) {
    s.prepare("a", "", no_labels()).unwrap();
    s.commit("A", "a", Labels::from([("team".into(), "x".into())]))
        .unwrap();
    s.prepare("b", "A", Labels::from([("team".into(), "y".into())]))
        .unwrap();
    s.view("v", "A", no_labels()).unwrap();
    let names = |f: &[&str]| {
        let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
        let mut v: Vec<String> = s.walk(&f).unwrap().into_iter().map(|i| i.name).collect();
        v.sort();
        v
    };
    assert_eq!(names(&[]), ["A", "b", "v"]);
    assert_eq!(names(&["labels.team==x"]), ["A"]);
    assert_eq!(names(&["labels.team"]), ["A", "b"]);
    assert_eq!(names(&["kind==view", "name==b"]), ["b", "v"]);
    assert_eq!(names(&["parent==A,labels.team==y"]), ["b"]);
    err_kind(s.walk(&["labels.=x".to_string()]), ErrKind::InvalidArgument);
}

fn update_labels(s: &dyn Snapshotter, _: &Path) {
    s.prepare(
        "a",
        "",
        Labels::from([("x".into(), "1".into()), ("y".into(), "2".into())]),
    )
    .unwrap();
    let mut i = s.stat("a").unwrap();
    let created = i.created_at;
    i.labels = Labels::from([("x".into(), "9".into())]);
    let u = s
        .update(i.clone(), &["labels.x".into(), "labels.y".into()])
        .unwrap();
    assert_eq!(u.labels, Labels::from([("x".into(), "9".into())]));
    assert_eq!(u.created_at, created);
    assert!(u.updated_at >= created);
    i.labels = Labels::from([("z".into(), "3".into())]);
    let u = s.update(i.clone(), &[]).unwrap();
    assert_eq!(
        u.labels,
        Labels::from([("z".into(), "3".into())]),
        "no paths replaces all"
    );
    err_kind(
        s.update(i.clone(), &["parent".into()]),
        ErrKind::InvalidArgument,
    );
    i.labels = Labels::from([("k".into(), "v".repeat(5000))]);
    err_kind(
        s.update(i.clone(), &["labels.k".into()]),
        ErrKind::InvalidArgument,
    );
    i.name = "missing".into();
    err_kind(s.update(i, &[]), ErrKind::NotFound);
}

fn committed_has_no_mounts(s: &dyn Snapshotter, _: &Path) {
    let m = s.prepare("a", "", no_labels()).unwrap();
    assert_eq!(s.mounts("a").unwrap(), m, "mounts are recoverable");
    s.commit("A", "a", no_labels()).unwrap();
    err_kind(s.mounts("A"), ErrKind::FailedPrecondition);
    err_kind(s.mounts("missing"), ErrKind::NotFound);
}

fn concurrent_prepare(s: &dyn Snapshotter, work: &Path) {
    let results: Vec<crate::error::Result<Vec<crate::mount::Mount>>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| sc.spawn(|| s.prepare("same", "", no_labels())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "exactly one prepare of a key wins");
    for r in results.into_iter().filter(|r| r.is_err()) {
        err_kind(r, ErrKind::AlreadyExists);
    }
    let dirs = fs::read_dir(work.join("root/snapshots")).unwrap().count();
    assert_eq!(dirs, 1, "losers leave no directories behind");
}

fn cleanup_after_interrupted(s: &dyn Snapshotter, work: &Path) {
    s.prepare("a", "", no_labels()).unwrap();
    s.commit("A", "a", no_labels()).unwrap();
    let snaps = work.join("root/snapshots");
    // What a crash can leave: a half-made directory, one renamed into place
    // whose transaction never committed, one being removed.
    for d in ["new-abc/fs", "4242/fs", "rm-7/fs/etc"] {
        fs::create_dir_all(snaps.join(d)).unwrap();
    }
    s.cleanup().unwrap();
    let mut left: Vec<String> = fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    assert_eq!(
        left.len(),
        1,
        "only the committed snapshot's directory stays: {left:?}"
    );
    assert_eq!(s.stat("A").unwrap().kind, Kind::Committed);
    s.prepare("b", "A", no_labels()).unwrap();
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap();
}

/// Prepares `key` on `parent`, lets `f` change it, commits it as `name`.
fn layer(s: &dyn Snapshotter, name: &str, parent: &str, f: impl FnOnce(&Path)) {
    let key = format!("{name}-active");
    let m = s.prepare(&key, parent, no_labels()).unwrap();
    {
        let mnt = TempMount::new(&m, None).unwrap();
        f(mnt.path());
    }
    s.commit(name, &key, no_labels()).unwrap();
}

fn parent_chain_contents(s: &dyn Snapshotter, _: &Path) {
    layer(s, "L1", "", |p| {
        write(p, "etc/hostname", b"one");
        write(p, "keep", b"k");
    });
    layer(s, "L2", "L1", |p| {
        assert_eq!(fs::read(p.join("etc/hostname")).unwrap(), b"one");
        write(p, "etc/hostname", b"two");
        write(p, "new", b"n");
    });
    let m = s.view("see", "L2", no_labels()).unwrap();
    let mnt = TempMount::new(&m, None).unwrap();
    assert_eq!(fs::read(mnt.path().join("etc/hostname")).unwrap(), b"two");
    assert_eq!(fs::read(mnt.path().join("keep")).unwrap(), b"k");
    assert_eq!(fs::read(mnt.path().join("new")).unwrap(), b"n");
    drop(mnt);
    let m = s.view("see1", "L1", no_labels()).unwrap();
    let mnt = TempMount::new(&m, None).unwrap();
    assert_eq!(
        fs::read(mnt.path().join("etc/hostname")).unwrap(),
        b"one",
        "parents are untouched"
    );
    assert!(!mnt.path().join("new").exists());
}

fn view_is_readonly(s: &dyn Snapshotter, _: &Path) {
    layer(s, "L1", "", |p| write(p, "f", b"x"));
    layer(s, "L2", "L1", |p| write(p, "g", b"y"));
    for parent in ["L1", "L2"] {
        let key = format!("v-{parent}");
        let m = s.view(&key, parent, no_labels()).unwrap();
        let mnt = TempMount::new(&m, None).unwrap();
        let e = fs::write(mnt.path().join("f"), b"z").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        let e = fs::write(mnt.path().join("new"), b"z").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    }
}

fn usage_excludes_parents(s: &dyn Snapshotter, _: &Path) {
    layer(s, "big", "", |p| write(p, "big.bin", &vec![7u8; 1 << 20]));
    let u = s.usage("big").unwrap();
    assert!(u.size >= 1 << 20 && u.inodes >= 2, "{u:?}");
    let m = s.prepare("child", "big", no_labels()).unwrap();
    let mnt = TempMount::new(&m, None).unwrap();
    write(mnt.path(), "small.bin", &vec![1u8; 64 << 10]);
    drop(mnt);
    let u = s.usage("child").unwrap();
    assert!(
        u.size >= 64 << 10 && u.size < 512 << 10,
        "child usage excludes the parent's 1 MiB: {u:?}"
    );
    s.commit("childc", "child", no_labels()).unwrap();
    assert_eq!(s.usage("childc").unwrap(), u, "usage is recorded at commit");
}

fn deleted_in_child(s: &dyn Snapshotter, _: &Path) {
    layer(s, "L1", "", |p| {
        write(p, "dir/a", b"a");
        write(p, "dir/sub/b", b"b");
        write(p, "file", b"f");
    });
    layer(s, "L2", "L1", |p| {
        fs::remove_dir_all(p.join("dir")).unwrap();
        fs::remove_file(p.join("file")).unwrap();
        write(p, "dir2/c", b"c");
    });
    layer(s, "L3", "L2", |p| {
        // A directory recreated over a deleted one starts empty.
        fs::create_dir(p.join("dir")).unwrap();
        write(p, "dir/new", b"n");
        fs::rename(p.join("dir2/c"), p.join("moved")).unwrap();
    });
    let m = s.view("v", "L3", no_labels()).unwrap();
    let mnt = TempMount::new(&m, None).unwrap();
    let names: Vec<String> = fs::read_dir(mnt.path().join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["new"]);
    assert!(!mnt.path().join("file").exists());
    assert_eq!(fs::read(mnt.path().join("moved")).unwrap(), b"c");
    assert!(!mnt.path().join("dir2/c").exists());
}

fn ownership_survives(s: &dyn Snapshotter, _: &Path) {
    use std::os::unix::fs::PermissionsExt;
    layer(s, "L1", "", |p| {
        write(p, "owned", b"o");
        std::os::unix::fs::chown(p.join("owned"), Some(1234), Some(5678)).unwrap();
        fs::set_permissions(p.join("owned"), fs::Permissions::from_mode(0o4750)).unwrap();
        fs::create_dir(p.join("d")).unwrap();
        fs::set_permissions(p.join("d"), fs::Permissions::from_mode(0o1777)).unwrap();
    });
    layer(s, "L2", "L1", |p| write(p, "other", b"x"));
    let m = s.view("v", "L2", no_labels()).unwrap();
    let mnt = TempMount::new(&m, None).unwrap();
    let md = fs::metadata(mnt.path().join("owned")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o4750)
    );
    assert_eq!(
        fs::metadata(mnt.path().join("d")).unwrap().mode() & 0o7777,
        0o1777
    );
}

fn mount_128_layers(s: &dyn Snapshotter, _: &Path) {
    let mut parent = String::new();
    for i in 0..128 {
        let name = format!("layer-{i:03}");
        layer(s, &name, &parent, |p| {
            write(p, &format!("f{i}"), format!("{i}").as_bytes())
        });
        parent = name;
    }
    let m = s.prepare("top", &parent, no_labels()).unwrap();
    let mnt = TempMount::new(&m, None).unwrap();
    for i in [0, 1, 63, 127] {
        assert_eq!(
            fs::read(mnt.path().join(format!("f{i}"))).unwrap(),
            format!("{i}").as_bytes()
        );
    }
    let n = fs::read_dir(mnt.path()).unwrap().count();
    assert_eq!(n, 128);
    write(mnt.path(), "top-file", b"t");
}
