//! The content store over a temporary root (no root user needed).

use super::{Blobs, ContentStore};
use crate::events::Exchange;
use crate::metadata::Db;
use crate::metadata::trigger::GcTrigger;
use crate::types::{Ctx, Digest, Labels};
use std::sync::Arc;

/// A content store under `dir`, with nothing else of a daemon.
struct Fixture {
    content: Arc<ContentStore>,
}

/// Opens a content store under `dir`; collection requests go nowhere.
fn stores(dir: &tempfile::TempDir) -> Fixture {
    let db = Arc::new(Db::open(&dir.path().join("metadata.redb")).expect("open metadata"));
    let blobs = Arc::new(Blobs::open(&dir.path().join("content")).expect("open blobs"));
    let (gc, _requests) = GcTrigger::new();
    Fixture {
        content: Arc::new(ContentStore::new(blobs, db, Arc::new(Exchange::new()), gc)),
    }
}

const NS: &str = "content-test";

fn digest_of(data: &[u8]) -> Digest {
    use sha2::Digest as _;
    Digest::from_hash(&sha2::Sha256::digest(data))
}

#[tokio::test]
async fn a_wrong_digest_or_size_commits_nothing_and_the_upload_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let c = stores(&dir);
    let ctx = Ctx::new(NS);
    let data = b"some blob bytes";
    let mut w = c.content.writer(&ctx, "up", 0, None).unwrap();
    w.write(&data[..4]).unwrap();
    drop(w); // the client goes away mid-upload
    assert_eq!(c.content.status(NS, "up").unwrap().offset, 4);
    let mut w = c.content.writer(&ctx, "up", 0, None).unwrap();
    assert_eq!(w.status().offset, 4, "a writer resumes where it stopped");
    w.write(&data[4..]).unwrap();
    let err = w
        .commit(0, Some(&digest_of(b"other bytes")), Labels::new())
        .unwrap_err();
    assert!(err.to_string().contains("do not match"), "{err}");
    assert!(
        c.content
            .info(NS, &digest_of(data))
            .unwrap_err()
            .is_not_found()
    );
    let w = c.content.writer(&ctx, "up", 0, None).unwrap();
    let err = w.commit(99, None, Labels::new()).unwrap_err();
    assert!(err.to_string().contains("size validation"), "{err}");
    let w = c.content.writer(&ctx, "up", 0, None).unwrap();
    let (d, created) = w
        .commit(data.len() as i64, Some(&digest_of(data)), Labels::new())
        .unwrap();
    assert!(created);
    assert_eq!(c.content.read_all(NS, &d).unwrap(), data);
    assert!(c.content.status(NS, "up").unwrap_err().is_not_found());
}

#[tokio::test]
async fn one_writer_per_ref_and_abort_removes_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let c = stores(&dir);
    let ctx = Ctx::new(NS);
    let mut w = c.content.writer(&ctx, "busy", 0, None).unwrap();
    w.write(b"partial").unwrap();
    let err = c.content.writer(&ctx, "busy", 0, None).err().unwrap();
    assert!(err.to_string().contains("busy"), "{err}");
    drop(w);
    c.content.abort(NS, "busy").unwrap();
    assert!(c.content.status(NS, "busy").unwrap_err().is_not_found());
    assert!(c.content.abort(NS, "busy").unwrap_err().is_not_found());
    assert!(c.content.writer(&ctx, "", 0, None).is_err(), "an empty ref");
}

#[tokio::test]
async fn blobs_are_per_namespace_and_immutable_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let c = stores(&dir);
    let data = b"shared bytes";
    let (d, _) = c
        .content
        .write_blob(&Ctx::new(NS), "a", &mut &data[..], None, Labels::new())
        .unwrap();
    assert!(c.content.info("other-ns", &d).unwrap_err().is_not_found());
    let mode = std::fs::metadata(c.content.blobs.blob_path(&d))
        .unwrap()
        .permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o222, 0);
    // The same bytes in another namespace share the file.
    let (d2, _) = c
        .content
        .write_blob(
            &Ctx::new("other-ns"),
            "b",
            &mut &data[..],
            None,
            Labels::new(),
        )
        .unwrap();
    assert_eq!(d, d2);
    c.content.delete(NS, &d).unwrap();
    assert_eq!(c.content.read_all("other-ns", &d2).unwrap(), data);
}
