use super::*;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-jsonlog-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entries(path: &Path) -> Vec<Entry> {
    let text = std::fs::read(path).unwrap();
    text.split_inclusive(|b| *b == b'\n')
        .map(|l| decode(l).expect("every line is an entry"))
        .collect()
}

#[test]
fn lines_are_dockers_json_file_format() {
    let t = 1_700_000_000_123_456_000;
    let line = encode("stdout", t, b"hello \"x\"\n");
    assert_eq!(
        String::from_utf8(line.clone()).unwrap(),
        "{\"log\":\"hello \\\"x\\\"\\n\",\"stream\":\"stdout\",\"time\":\"2023-11-14T22:13:20.123456Z\"}\n"
    );
    let e = decode(&line).unwrap();
    assert_eq!((e.stream.as_str(), e.time), ("stdout", t));
    assert_eq!(e.log, b"hello \"x\"\n");
    // Docker's own lines (other key order, local offsets) read too.
    let e =
        decode(br#"{"time":"2023-11-14T23:13:20.5+01:00","stream":"stderr","log":"x"}"#).unwrap();
    assert_eq!(
        (e.stream.as_str(), e.time, e.log.as_slice()),
        (
            "stderr",
            1_699_999_999_500_000_000 + 1_000_000_000,
            &b"x"[..]
        )
    );
    // Not UTF-8: replaced, as docker does; junk is no entry.
    assert_eq!(
        decode(&encode("stdout", 0, b"a\xffb")).unwrap().log,
        "a\u{fffd}b".as_bytes()
    );
    assert!(decode(b"{\"log\":\"cut sho").is_none());
}

#[test]
fn times_are_rfc3339_nano_without_trailing_zeros() {
    assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_time(1_500_000_000), "1970-01-01T00:00:01.5Z");
    assert_eq!(format_time(1_000_000_001), "1970-01-01T00:00:01.000000001Z");
    for t in [0, 1, 1_700_000_000_000_000_007, 1_700_000_000_120_000_000] {
        assert_eq!(parse_time(&format_time(t)), Some(t));
    }
    assert_eq!(parse_time("yesterday"), None);
}

#[test]
fn uris_round_trip_and_bad_ones_are_refused() {
    let d = Destination::json(
        "/var/lib/berth/logs/default/c1/c1-json.log".into(),
        "stderr",
        1024,
        3,
    );
    // The json-file URIs of before, unchanged (shims of a previous berthd
    // hold them).
    assert_eq!(
        d.uri(),
        "berth-log:///var/lib/berth/logs/default/c1/c1-json.log?stream=stderr&max-size=1024&max-files=3"
    );
    assert_eq!(Destination::parse(&d.uri()).unwrap(), d);
    let c = Destination::cri("/var/log/pods/p/c/0.log".into(), "stdout", 16384);
    assert_eq!(
        c.uri(),
        "berth-log:///var/log/pods/p/c/0.log?stream=stdout&format=cri&max_line=16384"
    );
    assert_eq!(Destination::parse(&c.uri()).unwrap(), c);
    let j = Destination::parse("berth-log:///x?format=json&stream=stderr").unwrap();
    assert_eq!(j, Destination::json("/x".into(), "stderr", 0, 1));
    // A CRI log berthd owns (no kubelet rotates it) is rotated by size.
    let r = Destination::cri("/r/out.log".into(), "stdout", 0).rotating(10, 2);
    assert_eq!(
        r.uri(),
        "berth-log:///r/out.log?stream=stdout&format=cri&max_line=0&max-size=10&max-files=2"
    );
    assert_eq!(Destination::parse(&r.uri()).unwrap(), r);
    let e = Destination::parse("berth-log:///x?max_line=10").unwrap_err();
    assert!(e.contains("max_line is for format=cri"), "{e}");
    assert!(Destination::parse("berth-log:///x?format=syslog").is_err());
    assert!(Destination::parse("berth-log:///x?format=cri&max_line=-1").is_err());
    assert!(Destination::parse("file:///x").is_err());
    assert!(Destination::parse("berth-log://rel/x").is_err());
    assert!(Destination::parse("berth-log:///x?max-size=big").is_err());
    assert!(Destination::parse("berth-log:///x?colour=red").is_err());
    assert!(Destination::parse("berth-log:///x?stream=stdin").is_err());
}

#[test]
fn rotation_keeps_max_files_and_drops_the_oldest() {
    let dir = tmp("rotate");
    let path = log_path(&dir, "c1");
    let mut w = Writer::open(&path, 200, 3).unwrap();
    for i in 0..40 {
        w.write("stdout", i, format!("line {i:02}\n").as_bytes())
            .unwrap();
    }
    let fs = files(&path);
    assert_eq!(fs, vec![rotated(&path, 2), rotated(&path, 1), path.clone()]);
    assert!(!rotated(&path, 3).exists());
    // Each file stops at the first entry that reaches max_size.
    let line = encode("stdout", 0, b"line 00\n").len() as u64;
    for f in &fs[..2] {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len >= 200 && len < 200 + line, "{len}");
    }
    // Oldest first, no gaps, ending at the last line written.
    let all: Vec<i64> = fs.iter().flat_map(|f| entries(f)).map(|e| e.time).collect();
    assert_eq!(*all.last().unwrap(), 39);
    assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
    assert!(all[0] > 0, "the oldest were dropped");
    // Reopened (a new task of the container): appends, and keeps rotating.
    drop(w);
    let mut w = Writer::open(&path, 200, 3).unwrap();
    for i in 40..80 {
        w.write("stdout", i, format!("line {i:02}\n").as_bytes())
            .unwrap();
    }
    let last = entries(&path).last().unwrap().time;
    assert_eq!(last, 79);
    assert_eq!(files(&path).len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_file_is_emptied_instead_of_rotated() {
    let dir = tmp("one");
    let path = log_path(&dir, "c1");
    let mut w = Writer::open(&path, 100, 1).unwrap();
    for i in 0..20 {
        w.write("stderr", i, b"0123456789\n").unwrap();
    }
    assert_eq!(files(&path), vec![path.clone()]);
    assert!(std::fs::metadata(&path).unwrap().len() < 200);
    assert_eq!(entries(&path).last().unwrap().time, 19);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn output_is_cut_into_lines() {
    let mut s = LineSplitter::default();
    assert_eq!(s.push(b"a\nb"), vec![b"a\n".to_vec()]);
    assert_eq!(s.push(b"c\n\nd"), vec![b"bc\n".to_vec(), b"\n".to_vec()]);
    assert_eq!(s.finish(), Some(b"d".to_vec()));
    assert_eq!(s.finish(), None);
    let long = vec![b'x'; MAX_LINE + 10];
    let lines = s.push(&long);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].len(), MAX_LINE);
    assert_eq!(s.finish().unwrap().len(), 10);
}
