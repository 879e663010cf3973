//! Collection over real stores in a temporary directory (no root user
//! needed), the way containerd's `core/metadata/gc_test.go` tests it: a
//! table of objects with labels, and the set expected to survive one run.

use super::Collector;
use super::sweep::doomed_snapshots;
use crate::containers::ContainerRecord;
use crate::content::{Blobs, ContentRecord, ContentStore, IngestRecord};
use crate::events::Exchange;
use crate::images::ImageRecord;
use crate::metadata::leases::{LeaseRecord, Leases, Resource};
use crate::metadata::trigger::GcTrigger;
use crate::metadata::{Db, Read, key, kind, namespaces, prefix};
use crate::snapshots::{Snapshots, bkey};
use crate::types::{Ctx, Descriptor, Labels, now};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const ROOT: &str = "containerd.io/gc.root";
const EXPIRE: &str = "containerd.io/gc.expire";
const FLAT: &str = "containerd.io/gc.flat";
const PAST: &str = "2000-01-01T00:00:00Z";
// Before 2262: later times do not fit in i64 nanoseconds.
const FUTURE: &str = "2200-01-01T00:00:00Z";
const SECOND: i64 = 1_000_000_000;

/// One object of a test table.
enum Obj {
    Content(&'static str, &'static str, Labels),
    Image(&'static str, &'static str, &'static str, Labels),
    Ingest(&'static str, &'static str, i64),
    Lease(&'static str, &'static str, Vec<Resource>, Labels),
    Container(&'static str, &'static str, &'static str, Labels),
    /// Namespace, key, parent, labels, committed.
    Snapshot(&'static str, &'static str, &'static str, Labels, bool),
}

impl Obj {
    /// The same object with labels added.
    fn with(mut self, labels: &[(&str, &str)]) -> Obj {
        let l = match &mut self {
            Obj::Content(_, _, l)
            | Obj::Image(_, _, _, l)
            | Obj::Lease(_, _, _, l)
            | Obj::Container(_, _, _, l)
            | Obj::Snapshot(_, _, _, l, _) => l,
            Obj::Ingest(..) => panic!("uploads have no labels"),
        };
        l.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }
}

fn content(ns: &'static str, id: &'static str) -> Obj {
    Obj::Content(ns, id, Labels::new())
}

/// An image named `name` whose target is the blob `target`.
fn image(ns: &'static str, name: &'static str, target: &'static str) -> Obj {
    Obj::Image(ns, name, target, Labels::new())
}

/// An upload that expires `expires_at` nanoseconds from now (0: leased).
fn ingest(ns: &'static str, reference: &'static str, expires_at: i64) -> Obj {
    Obj::Ingest(ns, reference, expires_at)
}

/// A lease holding `resources`, given as `(type, id)`.
fn lease(ns: &'static str, id: &'static str, resources: &[(&str, &str)]) -> Obj {
    let resources = resources
        .iter()
        .map(|(k, i)| Resource {
            id: i.to_string(),
            kind: k.to_string(),
        })
        .collect();
    Obj::Lease(ns, id, resources, Labels::new())
}

/// A container whose rootfs is native snapshot `snapshot` (none if empty).
fn container(ns: &'static str, id: &'static str, snapshot: &'static str) -> Obj {
    Obj::Container(ns, id, snapshot, Labels::new())
}

/// A committed native snapshot.
fn snapshot(ns: &'static str, name: &'static str, parent: &'static str) -> Obj {
    Obj::Snapshot(ns, name, parent, Labels::new(), true)
}

/// An active native snapshot.
fn active(ns: &'static str, key: &'static str, parent: &'static str) -> Obj {
    Obj::Snapshot(ns, key, parent, Labels::new(), false)
}

/// The stores a collector reads, under a temporary directory.
struct Fixture {
    dir: tempfile::TempDir,
    db: Arc<Db>,
    blobs: Arc<Blobs>,
    snapshots: Arc<Snapshots>,
    collector: Arc<Collector>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = Arc::new(Db::open(&dir.path().join("metadata.redb")).expect("open metadata"));
    let blobs = Arc::new(Blobs::open(&dir.path().join("content")).expect("open blobs"));
    let snapshots = Arc::new(
        Snapshots::open(
            &dir.path().join("snapshots"),
            db.clone(),
            Arc::new(Exchange::new()),
        )
        .expect("open snapshotters"),
    );
    let collector = Arc::new(Collector::new(db.clone(), blobs.clone(), snapshots.clone()));
    Fixture {
        dir,
        db,
        blobs,
        snapshots,
        collector,
    }
}

impl Fixture {
    /// Stores the table's objects (snapshot parents must come first).
    fn put(&self, objects: &[Obj]) {
        let t = now();
        self.db
            .write(|w| {
                for o in objects {
                    match o {
                        Obj::Content(ns, id, labels) => {
                            namespaces::ensure(w, ns)?;
                            let rec = ContentRecord {
                                size: 1,
                                created_at: t,
                                updated_at: t,
                                labels: labels.clone(),
                            };
                            w.put(&key(ns, kind::CONTENT, id), &rec)?;
                        }
                        Obj::Image(ns, name, target, labels) => {
                            namespaces::ensure(w, ns)?;
                            let rec = ImageRecord {
                                target: Descriptor {
                                    media_type: crate::images::oci::media::OCI_MANIFEST.into(),
                                    digest: target.to_string(),
                                    size: 1,
                                    annotations: Default::default(),
                                },
                                labels: labels.clone(),
                                created_at: t,
                                updated_at: t,
                            };
                            w.put(&key(ns, kind::IMAGES, name), &rec)?;
                        }
                        Obj::Ingest(ns, reference, expires_in) => {
                            namespaces::ensure(w, ns)?;
                            let rec = IngestRecord {
                                started_at: t,
                                expires_at: if *expires_in == 0 { 0 } else { t + expires_in },
                                ..Default::default()
                            };
                            w.put(&key(ns, kind::INGESTS, reference), &rec)?;
                        }
                        Obj::Lease(ns, id, resources, labels) => {
                            namespaces::ensure(w, ns)?;
                            let rec = LeaseRecord {
                                created_at: t,
                                labels: labels.clone(),
                                resources: resources.clone(),
                            };
                            w.put(&key(ns, kind::LEASES, id), &rec)?;
                        }
                        Obj::Container(ns, id, snapshot, labels) => {
                            namespaces::ensure(w, ns)?;
                            let rec = ContainerRecord {
                                labels: labels.clone(),
                                runtime: "io.containerd.runc.v2".into(),
                                snapshotter: "native".into(),
                                snapshot_key: snapshot.to_string(),
                                created_at: t,
                                updated_at: t,
                                ..Default::default()
                            };
                            w.put(&key(ns, kind::CONTAINERS, id), &rec)?;
                        }
                        Obj::Snapshot(ns, ..) => namespaces::ensure(w, ns)?,
                    }
                }
                Ok(())
            })
            .expect("store the table");
        let (_, native) = self.snapshots.get("native").expect("native snapshotter");
        for o in objects {
            if let Obj::Snapshot(ns, name, parent, labels, committed) = o {
                let parent = if parent.is_empty() {
                    String::new()
                } else {
                    bkey(ns, parent)
                };
                let name = bkey(ns, name);
                if *committed {
                    let tmp = format!("{name}-active");
                    native
                        .prepare(&tmp, &parent, Labels::new())
                        .expect("prepare");
                    native.commit(&name, &tmp, labels.clone()).expect("commit");
                } else {
                    native
                        .prepare(&name, &parent, labels.clone())
                        .expect("prepare");
                }
            }
        }
    }

    /// Every object left, as `type:namespace/id` (snapshots by backend key).
    fn objects(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.db
            .read(|r| {
                for ns in r.namespaces()? {
                    for (tag, object) in [
                        ("content", kind::CONTENT),
                        ("image", kind::IMAGES),
                        ("ingest", kind::INGESTS),
                        ("lease", kind::LEASES),
                        ("container", kind::CONTAINERS),
                    ] {
                        for (id, _) in r.scan::<serde_json::Value>(&prefix(&ns, object))? {
                            out.insert(format!("{tag}:{ns}/{id}"));
                        }
                    }
                }
                Ok(())
            })
            .expect("read back");
        for (sn, _, infos) in self.snapshots.all() {
            for i in infos {
                out.insert(format!("snapshot:{sn}/{}", i.name));
            }
        }
        out
    }
}

/// Stores `objects`, collects once, and checks exactly `survivors` remain.
fn check(objects: Vec<Obj>, survivors: &[&str]) {
    let f = fixture();
    f.put(&objects);
    let stats = f.collector.collect().expect("collect");
    let want: BTreeSet<String> = survivors.iter().map(|s| s.to_string()).collect();
    let got = f.objects();
    assert_eq!(
        got,
        want,
        "kept but should have gone: {:?}; gone but should have stayed: {:?} ({stats:?})",
        got.difference(&want).collect::<Vec<_>>(),
        want.difference(&got).collect::<Vec<_>>()
    );
    assert_eq!(stats.errors, 0, "{stats:?}");
}

/// One test per table row: `name: [objects] => [survivors];`.
macro_rules! gc_table {
    ($($(#[$doc:meta])* $name:ident: [$($obj:expr),* $(,)?] => [$($keep:literal),* $(,)?];)*) => {$(
        $(#[$doc])*
        #[test]
        fn $name() {
            check(vec![$($obj),*], &[$($keep),*]);
        }
    )*};
}

gc_table! {
    /// Content is a root only with `gc.root` or a `gc.expire` still ahead.
    content_roots_are_gc_root_and_future_expiry: [
        content("a", "loose"),
        content("a", "rooted").with(&[(ROOT, "x")]),
        content("a", "until-later").with(&[(EXPIRE, FUTURE)]),
        content("a", "expired").with(&[(EXPIRE, PAST)]),
    ] => ["content:a/rooted", "content:a/until-later"];

    /// An image holds its target, which holds what its `gc.ref.content*`
    /// labels name.
    an_image_holds_its_target_and_referenced_content: [
        image("a", "img", "manifest"),
        content("a", "manifest").with(&[
            ("containerd.io/gc.ref.content.config", "config"),
            ("containerd.io/gc.ref.content.l.0", "layer"),
        ]),
        content("a", "config"),
        content("a", "layer"),
        content("a", "stray"),
    ] => ["image:a/img", "content:a/manifest", "content:a/config", "content:a/layer"];

    /// References are followed transitively: image → index → manifest → layer.
    references_are_followed_through_an_index: [
        image("a", "img", "index"),
        content("a", "index").with(&[("containerd.io/gc.ref.content.m.0", "manifest")]),
        content("a", "manifest").with(&[("containerd.io/gc.ref.content.l.0", "layer")]),
        content("a", "layer"),
    ] => ["image:a/img", "content:a/index", "content:a/manifest", "content:a/layer"];

    /// An image whose `gc.expire` passed goes, unless `gc.ref.image` holds it.
    expired_images_go_unless_referenced: [
        image("a", "old", "m1").with(&[(EXPIRE, PAST)]),
        image("a", "held", "m2").with(&[(EXPIRE, PAST)]),
        content("a", "m1"),
        content("a", "m2"),
        content("a", "holder").with(&[(ROOT, "x"), ("containerd.io/gc.ref.image", "held")]),
    ] => ["image:a/held", "content:a/m2", "content:a/holder"];

    /// A reference loop neither keeps itself alive nor stalls the walk.
    reference_loops_end: [
        content("a", "x").with(&[("containerd.io/gc.ref.content", "y")]),
        content("a", "y").with(&[("containerd.io/gc.ref.content", "x")]),
        content("a", "p").with(&[(ROOT, "x"), ("containerd.io/gc.ref.content", "q")]),
        content("a", "q").with(&[("containerd.io/gc.ref.content", "p")]),
    ] => ["content:a/p", "content:a/q"];

    /// `gc.bref.content=<parent>` holds a blob while its parent is held.
    back_references_follow_their_parent: [
        content("a", "parent").with(&[(ROOT, "x")]),
        content("a", "child").with(&[("containerd.io/gc.bref.content", "parent")]),
        content("a", "orphan").with(&[("containerd.io/gc.bref.content.sig", "gone")]),
    ] => ["content:a/parent", "content:a/child"];

    /// A container holds its rootfs snapshot and that snapshot's parents.
    a_container_holds_its_snapshot_chain: [
        snapshot("a", "l1", ""),
        snapshot("a", "l2", "l1"),
        active("a", "rootfs", "l2"),
        snapshot("a", "loose", ""),
        container("a", "c", "rootfs"),
    ] => ["container:a/c", "snapshot:native/a/l1", "snapshot:native/a/l2", "snapshot:native/a/rootfs"];

    /// A container's labels hold content and snapshots too.
    container_labels_hold_content_and_snapshots: [
        container("a", "c", "").with(&[
            ("containerd.io/gc.ref.content.spec", "blob"),
            ("containerd.io/gc.ref.snapshot.native", "snap"),
        ]),
        content("a", "blob"),
        content("a", "other"),
        snapshot("a", "snap", ""),
    ] => ["container:a/c", "content:a/blob", "snapshot:native/a/snap"];

    /// Unpack records the top snapshot on the image config with
    /// `gc.ref.snapshot.<snapshotter>`: the chain lives as long as the image.
    an_unpacked_chain_lives_as_long_as_its_image: [
        image("a", "img", "manifest"),
        content("a", "manifest").with(&[("containerd.io/gc.ref.content.config", "config")]),
        content("a", "config").with(&[("containerd.io/gc.ref.snapshot.native", "top")]),
        snapshot("a", "bottom", ""),
        snapshot("a", "top", "bottom"),
        snapshot("a", "u1", ""),
        snapshot("a", "u2", "u1"),
    ] => [
        "image:a/img", "content:a/manifest", "content:a/config",
        "snapshot:native/a/bottom", "snapshot:native/a/top",
    ];

    /// A live lease holds its content (with its references), images and
    /// snapshots — even an image whose `gc.expire` has passed.
    a_lease_holds_its_resources_and_their_references: [
        lease("a", "l", &[
            ("content", "manifest"),
            ("snapshots/native", "snap"),
            ("images", "img"),
        ]),
        content("a", "manifest").with(&[("containerd.io/gc.ref.content.config", "config")]),
        content("a", "config"),
        image("a", "img", "target").with(&[(EXPIRE, PAST)]),
        content("a", "target"),
        snapshot("a", "snap", ""),
        snapshot("a", "free", ""),
    ] => [
        "lease:a/l", "content:a/manifest", "content:a/config", "image:a/img",
        "content:a/target", "snapshot:native/a/snap",
    ];

    /// An expired lease is removed and holds nothing; a live one stays.
    an_expired_lease_goes_with_what_only_it_held: [
        lease("a", "old", &[("content", "c1"), ("snapshots/native", "s1")]).with(&[(EXPIRE, PAST)]),
        lease("a", "live", &[("content", "c2")]).with(&[(EXPIRE, FUTURE)]),
        content("a", "c1"),
        content("a", "c2"),
        snapshot("a", "s1", ""),
    ] => ["lease:a/live", "content:a/c2"];

    /// A `gc.flat` lease holds its resources but not what they reference.
    a_flat_lease_holds_only_its_resources: [
        lease("a", "flat", &[("content", "manifest")]).with(&[(FLAT, "")]),
        content("a", "manifest").with(&[
            ("containerd.io/gc.ref.content.config", "config"),
            ("containerd.io/gc.ref.snapshot.native", "snap"),
        ]),
        content("a", "config"),
        snapshot("a", "snap", ""),
    ] => ["lease:a/flat", "content:a/manifest"];

    /// An object a flat lease holds is still walked when a root reaches it.
    a_flat_lease_does_not_cut_references_from_roots: [
        lease("a", "flat", &[("content", "manifest")]).with(&[(FLAT, "")]),
        image("a", "img", "manifest"),
        content("a", "manifest").with(&[("containerd.io/gc.ref.content.config", "config")]),
        content("a", "config"),
    ] => ["lease:a/flat", "image:a/img", "content:a/manifest", "content:a/config"];

    /// Namespaces are collected independently: same ids, no reference
    /// across, no snapshot of another namespace held.
    namespaces_are_independent: [
        content("a", "shared").with(&[(ROOT, "x")]),
        content("b", "shared"),
        content("a", "r").with(&[(ROOT, "x"), ("containerd.io/gc.ref.content", "only-in-b")]),
        content("b", "only-in-b"),
        container("a", "c", "s"),
        snapshot("b", "s", ""),
    ] => ["content:a/shared", "content:a/r", "container:a/c"];

    /// Uploads stay while unexpired or held by a lease.
    active_ingests_stay_and_stale_ones_go: [
        ingest("a", "live", 3600 * SECOND),
        ingest("a", "stale", -SECOND),
        ingest("a", "leased", 0),
        ingest("a", "orphaned", 0),
        lease("a", "l", &[("ingests", "leased")]),
    ] => ["ingest:a/live", "ingest:a/leased", "lease:a/l"];

    /// Snapshots are roots with `gc.root` or a `gc.expire` still ahead.
    snapshot_roots_are_gc_root_and_future_expiry: [
        snapshot("a", "rooted", "").with(&[(ROOT, "x")]),
        snapshot("a", "until-later", "").with(&[(EXPIRE, FUTURE)]),
        snapshot("a", "expired", "").with(&[(EXPIRE, PAST)]),
        snapshot("a", "plain", ""),
    ] => ["snapshot:native/a/rooted", "snapshot:native/a/until-later"];

    /// A held snapshot keeps its parents, not its siblings; a doomed child
    /// of a held parent goes first.
    a_held_snapshot_keeps_parents_not_siblings: [
        snapshot("a", "base", ""),
        snapshot("a", "mid", "base"),
        snapshot("a", "sibling", "base"),
        active("a", "top", "mid"),
        active("a", "sibling-rw", "sibling"),
        lease("a", "l", &[("snapshots/native", "top")]),
    ] => ["lease:a/l", "snapshot:native/a/base", "snapshot:native/a/mid", "snapshot:native/a/top"];
}

fn info(name: &str, parent: &str) -> berth_snapshotter::Info {
    berth_snapshotter::Info {
        name: name.into(),
        parent: parent.into(),
        kind: berth_snapshotter::Kind::Committed,
        created_at: 0,
        updated_at: 0,
        labels: Labels::new(),
    }
}

#[test]
fn doomed_snapshots_go_children_before_parents() {
    // a ← b ← c and a ← d; x held with its parent y; z on its own.
    let infos = [
        info("c", "b"),
        info("a", ""),
        info("d", "a"),
        info("b", "a"),
        info("x", "y"),
        info("y", ""),
        info("z", ""),
    ];
    let order = doomed_snapshots(&infos, |i| i.name == "x");
    let pos = |n: &str| order.iter().position(|o| *o == n);
    assert_eq!(pos("x"), None, "{order:?}");
    assert_eq!(pos("y"), None, "a held snapshot's parent stays: {order:?}");
    assert_eq!(order.len(), 5, "{order:?}");
    assert!(pos("c") < pos("b") && pos("b") < pos("a"), "{order:?}");
    assert!(pos("d") < pos("a"), "{order:?}");
}

/// A content store writing into the fixture's database and blobs.
fn content_store(f: &Fixture) -> Arc<ContentStore> {
    let (gc, _requests) = GcTrigger::new();
    Arc::new(ContentStore::new(
        f.blobs.clone(),
        f.db.clone(),
        Arc::new(Exchange::new()),
        gc,
    ))
}

#[test]
fn files_go_once_no_namespace_records_them() {
    let f = fixture();
    let store = content_store(&f);
    let root = Labels::from([(ROOT.to_string(), "x".to_string())]);
    let write = |ns: &str, data: &[u8], labels: Labels| {
        store
            .write_blob(&Ctx::new(ns), "w", &mut &data[..], None, labels)
            .expect("write blob")
            .0
    };
    let kept = write("a", b"kept in a", root.clone());
    let shared_a = write("a", b"shared", Labels::new());
    let shared_b = write("b", b"shared", root);
    assert_eq!(shared_a, shared_b);
    let loose = write("a", b"loose", Labels::new());
    // An upload directory whose record is gone (a crash between the two).
    std::fs::create_dir_all(f.dir.path().join("content/ingest/stray")).unwrap();
    let stats = f.collector.collect().expect("collect");
    assert!(f.blobs.blob_path(&kept).exists());
    assert!(
        f.blobs.blob_path(&shared_a).exists(),
        "the file stays while namespace b records it"
    );
    assert!(!f.blobs.blob_path(&loose).exists());
    assert!(!f.dir.path().join("content/ingest/stray").exists());
    assert_eq!(
        (stats.content_records, stats.blobs, stats.ingest_dirs),
        (2, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_sync_lease_delete_collects_what_the_lease_held() {
    let f = fixture();
    let (gc, requests) = GcTrigger::new();
    // An hour's delay: only the explicit collect below runs the collector.
    f.collector
        .clone()
        .start(requests, Duration::from_secs(3600));
    let leases = Leases::new(f.db.clone(), gc.clone());
    let store = Arc::new(ContentStore::new(
        f.blobs.clone(),
        f.db.clone(),
        Arc::new(Exchange::new()),
        gc,
    ));
    leases.create("a", "hold", Labels::new()).unwrap();
    let ctx = Ctx::new("a").with_lease(Some("hold".into()));
    let (d, _) = store
        .write_blob(&ctx, "w", &mut &b"held"[..], None, Labels::new())
        .unwrap();
    assert!(store.info("a", &d).is_ok());
    leases.delete("a", "hold", true).await.unwrap();
    assert!(
        store.info("a", &d).unwrap_err().is_not_found(),
        "the blob outlived its lease"
    );
    assert!(!f.blobs.blob_path(&d).exists());
}
