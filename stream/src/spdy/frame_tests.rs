use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn roundtrip(frames: &[Frame]) {
    let (mut tx, mut rx) = (Codec::new(), Codec::new());
    let mut wire = Vec::new();
    for f in frames {
        tx.encode(f, &mut wire).unwrap();
    }
    let mut buf = BytesMut::from(&wire[..]);
    for f in frames {
        assert_eq!(rx.decode(&mut buf).unwrap().as_ref(), Some(f));
    }
    assert!(buf.is_empty());
    assert_eq!(rx.decode(&mut buf).unwrap(), None);
}

#[test]
fn dictionary_is_the_spdy3_one() {
    assert_eq!(DICTIONARY.len(), 1423);
    // Adler-32 that a zlib stream primed with this dictionary announces (FDICT id).
    let (mut a, mut b) = (1u32, 0u32);
    for &x in DICTIONARY {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    assert_eq!((b << 16) | a, 0xe3c6_a7c2);
}

#[test]
fn control_frames_known_bytes() {
    let mut c = Codec::new();
    let mut out = Vec::new();
    c.encode(&Frame::Ping { id: 1 }, &mut out).unwrap();
    assert_eq!(out, hex("800300060000000400000001"));
    out.clear();
    c.encode(
        &Frame::RstStream {
            stream_id: 5,
            status: rst::CANCEL,
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(out, hex("80030003000000080000000500000005"));
    out.clear();
    c.encode(
        &Frame::GoAway {
            last_good_stream_id: 7,
            status: 0,
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(out, hex("80030007000000080000000700000000"));
    out.clear();
    c.encode(
        &Frame::WindowUpdate {
            stream_id: 1,
            delta: 65536,
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(out, hex("80030009000000080000000100010000"));
    out.clear();
    let data = Frame::Data {
        stream_id: 3,
        flags: FLAG_FIN,
        data: Bytes::from_static(b"hi"),
    };
    c.encode(&data, &mut out).unwrap();
    assert_eq!(out, hex("00000003010000026869"));
}

#[test]
fn header_block_plain_known_bytes() {
    let block = encode_header_block(&h(&[("streamType", "error")]));
    assert_eq!(
        block,
        hex("000000010000000a73747265616d74797065000000056572726f72")
    );
    assert_eq!(
        decode_header_block(&block).unwrap(),
        h(&[("streamtype", "error")])
    );
    assert!(decode_header_block(&block[..block.len() - 1]).is_err());
}

/// Frames compressed by C zlib (level 9, SPDY dictionary, sync flush, one stream for both blocks),
/// as a Go or C peer sends them: our decoder must read them, in order, from one zlib stream.
#[test]
fn decodes_frames_compressed_by_c_zlib() {
    let wire = [
        "80030001000000280000000100000000000078f9e3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000ffff",
        "800300020100001f0000000302651c0c2960624ec90797d1c022bb084c5b18581800000000ffff",
    ]
    .concat();
    let mut buf = BytesMut::from(&hex(&wire)[..]);
    let mut c = Codec::new();
    assert_eq!(
        c.decode(&mut buf).unwrap(),
        Some(Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 0,
            flags: 0,
            headers: h(&[("streamtype", "error")]),
        })
    );
    assert_eq!(
        c.decode(&mut buf).unwrap(),
        Some(Frame::SynReply {
            stream_id: 3,
            flags: FLAG_FIN,
            headers: h(&[("streamtype", "stdout"), ("port", "8080")]),
        })
    );
    assert!(buf.is_empty());
}

#[test]
fn header_compression_round_trip_is_stateful() {
    let big = "x".repeat(100_000);
    roundtrip(&[
        Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 2,
            flags: FLAG_FIN,
            headers: h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
        },
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: vec![],
        },
        Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from_static(b"abc"),
        },
        Frame::SynStream {
            stream_id: 3,
            associated_id: 1,
            priority: 0,
            flags: FLAG_UNIDIRECTIONAL,
            headers: h(&[("streamtype", "data"), ("big", &big)]),
        },
        Frame::Headers {
            stream_id: 3,
            flags: FLAG_FIN,
            headers: h(&[("a", "b\0c")]),
        },
        Frame::Settings {
            flags: 0,
            entries: vec![(0, 7, 65536), (1, 4, 100)],
        },
        Frame::Ping { id: 2 },
        Frame::WindowUpdate {
            stream_id: 3,
            delta: 1,
        },
        Frame::RstStream {
            stream_id: 3,
            status: rst::REFUSED_STREAM,
        },
        Frame::GoAway {
            last_good_stream_id: 3,
            status: 0,
        },
    ]);
}

#[test]
fn partial_input_waits_and_unknown_control_frames_are_skipped() {
    let mut c = Codec::new();
    // Type 5 (NOOP in SPDY/2, unknown in /3) carrying 2 bytes, then a PING.
    let mut wire = hex("8003000500000002abcd");
    wire.extend(hex("800300060000000400000009"));
    let mut buf = BytesMut::from(&wire[..7]);
    assert_eq!(c.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(&wire[7..]);
    assert_eq!(c.decode(&mut buf).unwrap(), Some(Frame::Ping { id: 9 }));
}

#[test]
fn bad_frames_are_refused() {
    let mut c = Codec::new();
    let mut buf = BytesMut::from(&hex("800200060000000400000001")[..]);
    assert!(matches!(c.decode(&mut buf), Err(FrameError::Version(2))));
    let mut buf = BytesMut::from(&hex("80030003000000020000")[..]);
    assert!(matches!(
        c.decode(&mut buf),
        Err(FrameError::Short { kind: 3, len: 2 })
    ));
    let mut buf = BytesMut::from(&hex("8003000200000008000000010000ffff")[..]);
    assert!(
        c.decode(&mut buf).is_err(),
        "garbage header block must not decode"
    );
}
