//! Content store over gRPC: the Write protocol, crash safety (SIGKILL in the
//! middle of a large upload), and the precise errors for bad input.

use berth_proto::client::request;
use berth_proto::services::content::v1::content_client::ContentClient;
use berth_proto::services::content::v1::*;
use berth_tests::*;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

const MIB: usize = 1 << 20;

fn data(len: usize, seed: u64) -> Vec<u8> {
    // A cheap deterministic generator: incompressible enough for hashing.
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

struct Upload {
    tx: mpsc::Sender<WriteContentRequest>,
    rx: tonic::Streaming<WriteContentResponse>,
}

impl Upload {
    async fn open(
        ch: &Channel,
        ns: &str,
        reference: &str,
        total: i64,
        expected: &str,
    ) -> Result<(Upload, WriteContentResponse), tonic::Status> {
        let (tx, rx) = mpsc::channel(4);
        tx.send(WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.into(),
            total,
            expected: expected.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut rx = ContentClient::new(ch.clone())
            .write(request(ns, ReceiverStream::new(rx)))
            .await?
            .into_inner();
        let stat = rx.next().await.expect("stat reply")?;
        Ok((Upload { tx, rx }, stat))
    }

    async fn send(
        &mut self,
        action: WriteAction,
        offset: i64,
        data: &[u8],
        total: i64,
        expected: &str,
    ) -> Result<WriteContentResponse, tonic::Status> {
        self.tx
            .send(WriteContentRequest {
                action: action as i32,
                offset,
                data: data.to_vec(),
                total,
                expected: expected.into(),
                ..Default::default()
            })
            .await
            .map_err(|_| tonic::Status::unavailable("stream closed"))?;
        match self.rx.next().await {
            Some(r) => r,
            None => Err(tonic::Status::unavailable("no reply")),
        }
    }
}

/// Uploads `data` in 1 MiB messages and commits.
async fn put(
    ch: &Channel,
    ns: &str,
    reference: &str,
    data: &[u8],
    expected: &str,
) -> Result<String, tonic::Status> {
    let (mut up, stat) = Upload::open(ch, ns, reference, data.len() as i64, expected).await?;
    let mut off = usize::try_from(stat.offset).unwrap();
    loop {
        let end = (off + MIB).min(data.len());
        let last = end == data.len();
        let act = if last {
            WriteAction::Commit
        } else {
            WriteAction::Write
        };
        let r = up
            .send(
                act,
                off as i64,
                &data[off..end],
                data.len() as i64,
                if last { expected } else { "" },
            )
            .await?;
        off = end;
        if last {
            return Ok(r.digest);
        }
    }
}

async fn info(ch: &Channel, ns: &str, d: &str) -> Result<Info, tonic::Status> {
    ContentClient::new(ch.clone())
        .info(request(ns, InfoRequest { digest: d.into() }))
        .await
        .map(|r| r.into_inner().info.unwrap())
}

async fn read_all(
    ch: &Channel,
    ns: &str,
    d: &str,
    offset: i64,
    size: i64,
) -> Result<Vec<u8>, tonic::Status> {
    let mut s = ContentClient::new(ch.clone())
        .read(request(
            ns,
            ReadContentRequest {
                digest: d.into(),
                offset,
                size,
            },
        ))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        let c = c?;
        assert_eq!(
            usize::try_from(c.offset).unwrap(),
            usize::try_from(offset).unwrap() + out.len(),
            "offsets are contiguous"
        );
        out.extend_from_slice(&c.data);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_write_then_resume() {
    let mut d = Daemon::start();
    let ch = d.channel().await;
    let blob = data(48 * MIB, 7);
    let digest = sha256(&blob);
    let (mut up, stat) = Upload::open(&ch, "default", "crash-ref", blob.len() as i64, &digest)
        .await
        .unwrap();
    assert_eq!(stat.offset, 0);
    let mut acked = 0usize;
    while acked < 20 * MIB {
        let r = up
            .send(
                WriteAction::Write,
                acked as i64,
                &blob[acked..acked + MIB],
                blob.len() as i64,
                "",
            )
            .await
            .unwrap();
        acked += MIB;
        assert_eq!(usize::try_from(r.offset).unwrap(), acked);
    }
    // Crash in the middle of the stream, with more data in flight.
    let _ = up.tx.try_send(WriteContentRequest {
        action: WriteAction::Write as i32,
        offset: acked as i64,
        data: blob[acked..acked + MIB].to_vec(),
        ..Default::default()
    });
    d.kill9();
    drop(up);

    // Never a partial blob under blobs/.
    assert!(
        !blobs_on_disk(&d.root()).contains(&digest),
        "uncommitted blob visible after crash"
    );
    assert_blobs_intact(&d.root());

    d.restart();
    let ch = d.channel().await;
    assert_eq!(
        info(&ch, "default", &digest).await.unwrap_err().code(),
        Code::NotFound
    );
    // The upload is still known, at the offset reached.
    let st = ContentClient::new(ch.clone())
        .status(request(
            "default",
            StatusRequest {
                r#ref: "crash-ref".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert!(
        usize::try_from(st.offset).unwrap() >= acked
            && usize::try_from(st.offset).unwrap() <= blob.len(),
        "offset {} acked {acked}",
        st.offset
    );
    assert_eq!(st.expected, digest);
    let listed = ContentClient::new(ch.clone())
        .list_statuses(request(
            "default",
            ListStatusesRequest {
                filters: vec!["ref==crash-ref".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .statuses;
    assert_eq!(listed.len(), 1);

    // Resume under the same ref from the stored offset.
    let (mut up, stat) = Upload::open(&ch, "default", "crash-ref", blob.len() as i64, &digest)
        .await
        .unwrap();
    assert_eq!(stat.offset, st.offset, "resume offset");
    let mut off = usize::try_from(stat.offset).unwrap();
    // A write at the wrong offset is refused without harm.
    let err = up
        .send(WriteAction::Write, off as i64 + 5, b"x", 0, "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    let (mut up, _) = Upload::open(&ch, "default", "crash-ref", blob.len() as i64, &digest)
        .await
        .unwrap();
    loop {
        let end = (off + MIB).min(blob.len());
        let last = end == blob.len();
        let act = if last {
            WriteAction::Commit
        } else {
            WriteAction::Write
        };
        let r = up
            .send(
                act,
                off as i64,
                &blob[off..end],
                blob.len() as i64,
                if last { &digest } else { "" },
            )
            .await
            .unwrap();
        off = end;
        if last {
            assert_eq!(r.digest, digest);
            break;
        }
    }
    let i = info(&ch, "default", &digest).await.unwrap();
    assert_eq!(usize::try_from(i.size).unwrap(), blob.len());
    assert_blobs_intact(&d.root());
    assert!(read_all(&ch, "default", &digest, 0, 0).await.unwrap() == blob);
    // The upload is gone once committed.
    let err = ContentClient::new(ch.clone())
        .status(request(
            "default",
            StatusRequest {
                r#ref: "crash-ref".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_crashes_never_expose_partial_blobs() {
    let mut d = Daemon::start();
    let blob = data(24 * MIB, 11);
    let digest = sha256(&blob);
    for round in 0..3 {
        let ch = d.channel().await;
        let up = put(&ch, "default", "again", &blob, &digest);
        // Kill at a different moment each round.
        let killer = async {
            tokio::time::sleep(std::time::Duration::from_millis(40 + 60 * round)).await;
        };
        tokio::select! {
            r = up => { r.unwrap(); break; }
            _ = killer => {}
        }
        d.kill9();
        assert_blobs_intact(&d.root());
        d.restart();
    }
    let ch = d.channel().await;
    // Whatever happened, finishing the upload yields exactly the blob.
    match put(&ch, "default", "again", &blob, &digest).await {
        Ok(dg) => assert_eq!(dg, digest),
        Err(e) => assert_eq!(e.code(), Code::AlreadyExists, "{e:?}"),
    }
    assert!(read_all(&ch, "default", &digest, 0, 0).await.unwrap() == blob);
    assert_blobs_intact(&d.root());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_and_wrong_size_commit_nothing() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let blob = data(3 * MIB + 17, 3);
    let actual = sha256(&blob);
    let claimed = sha256(b"something else");

    let err = put(&ch, "default", "bad-digest", &blob, &claimed)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&actual) && err.message().contains(&claimed),
        "both digests named: {}",
        err.message()
    );
    for dg in [&actual, &claimed] {
        assert_eq!(
            info(&ch, "default", dg).await.unwrap_err().code(),
            Code::NotFound
        );
        assert!(!blobs_on_disk(&d.root()).contains(dg));
    }
    // The upload stays for the client to abort (or resume).
    ContentClient::new(ch.clone())
        .abort(request(
            "default",
            AbortRequest {
                r#ref: "bad-digest".into(),
            },
        ))
        .await
        .unwrap();
    let err = ContentClient::new(ch.clone())
        .abort(request(
            "default",
            AbortRequest {
                r#ref: "bad-digest".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Declared total bigger than what was sent.
    let (mut up, _) = Upload::open(&ch, "default", "bad-size", 0, "")
        .await
        .unwrap();
    let err = up
        .send(WriteAction::Commit, 0, &blob[..1000], 5000, "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("size validation"),
        "{}",
        err.message()
    );
    assert_eq!(
        info(&ch, "default", &sha256(&blob[..1000]))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert!(blobs_on_disk(&d.root()).is_empty());

    // An existing blob: Write with its digest says AlreadyExists at once.
    let dg = put(&ch, "default", "good", &blob, &actual).await.unwrap();
    assert_eq!(dg, actual);
    let err = Upload::open(&ch, "default", "good-again", blob.len() as i64, &actual)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::AlreadyExists);
    // ...and another namespace still has to prove it has the bytes.
    assert_eq!(
        info(&ch, "other", &actual).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        put(&ch, "other", "good", &blob, &actual).await.unwrap(),
        actual
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_labels_listing_and_errors() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let blob = data(2 * MIB + 5, 5);
    let dg = put(&ch, "default", "r", &blob, "").await.unwrap();
    assert_eq!(dg, sha256(&blob));

    // Ranged reads, and reading past the end.
    assert!(read_all(&ch, "default", &dg, 10, 100).await.unwrap() == blob[10..110]);
    assert!(read_all(&ch, "default", &dg, MIB as i64, 0).await.unwrap() == blob[MIB..]);
    let err = read_all(&ch, "default", &dg, blob.len() as i64 + 1, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);

    // Unknown and malformed digests.
    let unknown = format!("sha256:{}", "0".repeat(64));
    assert_eq!(
        info(&ch, "default", &unknown).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        read_all(&ch, "default", &unknown, 0, 0)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let err = info(&ch, "default", "sha256:nothex").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = ContentClient::new(ch.clone())
        .delete(request(
            "default",
            DeleteContentRequest {
                digest: unknown.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Missing namespace header.
    let err = ContentClient::new(ch.clone())
        .info(InfoRequest { digest: dg.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("containerd-namespace"),
        "{}",
        err.message()
    );

    // Labels with field masks; oversized labels refused.
    let mut cl = ContentClient::new(ch.clone());
    let upd = |labels: Vec<(&str, &str)>, paths: Vec<&str>| UpdateRequest {
        info: Some(Info {
            digest: dg.clone(),
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.into_iter().map(String::from).collect(),
        }),
    };
    cl.update(request(
        "default",
        upd(vec![("a", "1"), ("b", "2")], vec!["labels.a", "labels.b"]),
    ))
    .await
    .unwrap();
    let i = cl
        .update(request("default", upd(vec![], vec!["labels.a"])))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(i.labels.len(), 1);
    assert_eq!(i.labels["b"], "2");
    let big = "v".repeat(5000);
    let err = cl
        .update(request("default", upd(vec![("k", &big)], vec!["labels.k"])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = cl
        .update(request("default", upd(vec![], vec!["size"])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // List with filters.
    let list = |f: Vec<&'static str>| {
        let mut cl = cl.clone();
        let filters: Vec<String> = f.into_iter().map(String::from).collect();
        async move {
            let mut s = cl
                .list(request("default", ListContentRequest { filters }))
                .await?
                .into_inner();
            let mut out = Vec::new();
            while let Some(b) = s.next().await {
                out.extend(b?.info);
            }
            Ok::<_, tonic::Status>(out)
        }
    };
    assert_eq!(list(vec!["labels.b==2"]).await.unwrap().len(), 1);
    assert_eq!(list(vec!["labels.b==3"]).await.unwrap().len(), 0);
    assert_eq!(list(vec![]).await.unwrap().len(), 1);
    assert_eq!(
        list(vec!["labels.=="]).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Two writers on one ref: the second is told to retry.
    let (_first, _) = Upload::open(&ch, "default", "busy", 0, "").await.unwrap();
    let err = Upload::open(&ch, "default", "busy", 0, "")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("locked"), "{}", err.message());

    // Delete: gone from the namespace, then from disk once collected.
    cl.delete(request(
        "default",
        DeleteContentRequest { digest: dg.clone() },
    ))
    .await
    .unwrap();
    assert_eq!(
        info(&ch, "default", &dg).await.unwrap_err().code(),
        Code::NotFound
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while blobs_on_disk(&d.root()).contains(&dg) {
        assert!(
            std::time::Instant::now() < deadline,
            "blob not collected after delete"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
