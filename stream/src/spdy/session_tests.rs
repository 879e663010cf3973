use std::time::Instant;

use super::*;

fn hdr() -> Headers {
    vec![("streamtype".into(), "stdout".into())]
}

async fn pair() -> (Session, Session, Stream, Stream) {
    let (a, b) = tokio::io::duplex(1024);
    let server = Session::new(a, Role::Server);
    let client = Session::new(b, Role::Client);
    let accept = async {
        let s = server.accept().await.unwrap();
        s.reply().await.unwrap();
        s
    };
    let (c, s) = tokio::join!(client.open(hdr(), false), accept);
    (server, client, s, c.unwrap())
}

/// Regression: a Shutdown queued behind other frames was swallowed by the writer's batching, so
/// the connection stayed open (here: until the test's timeout) instead of closing at once.
#[tokio::test]
async fn shutdown_behind_queued_frames_closes_the_connection() {
    let (server, _client, mut s, mut c) = pair().await;
    // More than the duplex buffer: the writer blocks until the client reads.
    s.write_all(&[7u8; 200_000]).await.unwrap();
    let t0 = Instant::now();
    let drain = async {
        let mut v = Vec::new();
        c.read_to_end(&mut v).await.unwrap();
        v.len()
    };
    let both = async { tokio::join!(server.shutdown(Duration::from_secs(30)), drain) };
    let (_, n) = tokio::time::timeout(Duration::from_secs(5), both)
        .await
        .expect("connection not closed");
    assert_eq!(n, 200_000);
    assert!(t0.elapsed() < Duration::from_secs(5));
    drop(s);
}

#[tokio::test]
async fn pings_are_answered_and_resets_end_streams() {
    let (server, client, s, mut c) = pair().await;
    // A client ping (odd id) comes back from the server unchanged.
    let (mut raw_a, raw_b) = tokio::io::duplex(4096);
    let srv = Session::new(raw_b, Role::Server);
    let mut codec = Codec::new();
    let mut wire = Vec::new();
    codec.encode(&Frame::Ping { id: 5 }, &mut wire).unwrap();
    raw_a.write_all(&wire).await.unwrap();
    let mut buf = BytesMut::new();
    let frame = loop {
        raw_a.read_buf(&mut buf).await.unwrap();
        if let Some(f) = codec.decode(&mut buf).unwrap() {
            break f;
        }
    };
    assert_eq!(frame, Frame::Ping { id: 5 });
    drop(srv);
    // RST from the server: the client's reads fail and its writes are refused.
    s.reset(rst::CANCEL).await;
    let mut v = Vec::new();
    let err = c.read_to_end(&mut v).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(c.write_all(b"x").await.is_err());
    // Opening a stream the server refuses is an error for the opener.
    let refused = tokio::join!(client.open(hdr(), false), async {
        server
            .accept()
            .await
            .unwrap()
            .reset(rst::REFUSED_STREAM)
            .await
    });
    assert!(matches!(
        refused.0,
        Err(SessionError::Reset(_, rst::REFUSED_STREAM))
    ));
}
