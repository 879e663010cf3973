use super::*;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-crilog-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn piece(partial: bool, content: &str) -> Piece {
    Piece {
        partial,
        content: content.as_bytes().to_vec(),
    }
}

fn line(time: i64, stream: Stream, partial: bool, content: &str) -> Line {
    Line {
        time,
        stream,
        partial,
        content: content.as_bytes().to_vec(),
    }
}

#[test]
fn lines_are_the_cri_format() {
    let t = 1_700_000_000_123_456_000;
    assert_eq!(
        encode(Stream::Stdout, t, false, b"hello world"),
        b"2023-11-14T22:13:20.123456Z stdout F hello world\n"
    );
    assert_eq!(
        encode(Stream::Stderr, 1_000_000_000, true, b""),
        b"1970-01-01T00:00:01Z stderr P \n"
    );
}

#[test]
fn lines_parse_as_the_kubelet_parses_them() {
    let t = 1_700_000_000_123_456_789;
    // Full: the content keeps its newline; partial: it does not.
    assert_eq!(
        parse_line(&encode(Stream::Stdout, t, false, b"a b  c")),
        Some(line(t, Stream::Stdout, false, "a b  c\n"))
    );
    assert_eq!(
        parse_line(&encode(Stream::Stderr, t, true, b"piece")),
        Some(line(t, Stream::Stderr, true, "piece"))
    );
    assert_eq!(
        parse_line(&encode(Stream::Stdout, t, false, b"")),
        Some(line(t, Stream::Stdout, false, "\n"))
    );
    // Other offsets, other fractions, further tags, no final newline.
    assert_eq!(
        parse_line(b"2023-11-14T23:13:20.5+01:00 stderr P:x y"),
        Some(line(1_700_000_000_500_000_000, Stream::Stderr, true, "y"))
    );
    assert_eq!(
        parse_line(b"2023-11-14T22:13:20Z stdout F last"),
        Some(line(
            1_700_000_000_000_000_000,
            Stream::Stdout,
            false,
            "last"
        ))
    );
    for junk in [
        &b""[..],
        b"\n",
        b"2023-11-14T22:13:20Z",
        b"2023-11-14T22:13:20Z stdout",
        b"2023-11-14T22:13:20Z stdout F",
        b"2023-11-14T22:13:20Z stdin F x\n",
        b"yesterday stdout F x\n",
        b"{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"2023-11-14T22:13:20Z\"}\n",
    ] {
        assert_eq!(
            parse_line(junk),
            None,
            "{:?}",
            String::from_utf8_lossy(junk)
        );
    }
}

#[test]
fn output_is_cut_as_containerd_cuts_it() {
    let mut s = Splitter::new(0);
    // Newlines end full pieces, without the newline; a \r\n whole; an
    // empty line is an empty full piece; a lone \r is content.
    assert_eq!(s.push(b"a\nb"), vec![piece(false, "a")]);
    assert_eq!(
        s.push(b"c\r\n\nd\re\r"),
        vec![piece(false, "bc"), piece(false, "")]
    );
    assert_eq!(s.push(b"\n"), vec![piece(false, "d\re")]);
    // Output that ends without a newline ends in a partial piece.
    assert_eq!(s.push(b"tail"), vec![]);
    assert_eq!(s.finish(), vec![piece(true, "tail")]);
    assert_eq!(s.finish(), vec![]);
    // No maximum: a long line stays whole.
    let long = "x".repeat(100_000);
    assert_eq!(
        s.push(format!("{long}\n").as_bytes()),
        vec![piece(false, &long)]
    );
}

#[test]
fn long_lines_are_cut_into_partial_pieces_of_the_maximum() {
    let mut s = Splitter::new(4);
    assert_eq!(s.push(b"abcd\n"), vec![piece(false, "abcd")]);
    assert_eq!(
        s.push(b"abcdefghij\n"),
        vec![piece(true, "abcd"), piece(true, "efgh"), piece(false, "ij")]
    );
    // An exact multiple ends in a full piece of the maximum, never in an
    // empty one.
    assert_eq!(
        s.push(b"abcdefgh\n"),
        vec![piece(true, "abcd"), piece(false, "efgh")]
    );
    // A \r\n after the maximum is the line's end, not content.
    assert_eq!(s.push(b"abcd\r"), vec![]);
    assert_eq!(s.push(b"\n"), vec![piece(false, "abcd")]);
    // A \r followed by more is content.
    assert_eq!(
        s.push(b"abcd\rx\n"),
        vec![piece(true, "abcd"), piece(false, "\rx")]
    );
    // Byte by byte, the same pieces.
    let mut pieces = Vec::new();
    for b in b"abcdefghij\n" {
        pieces.extend(s.push(&[*b]));
    }
    assert_eq!(
        pieces,
        vec![piece(true, "abcd"), piece(true, "efgh"), piece(false, "ij")]
    );
    // The unfinished end: partial pieces of the maximum, the \r counted.
    assert_eq!(s.push(b"abcd\r"), vec![]);
    assert_eq!(s.finish(), vec![piece(true, "abcd"), piece(true, "\r")]);
    assert_eq!(s.push(b"abcdefgh"), vec![piece(true, "abcd")]);
    assert_eq!(s.finish(), vec![piece(true, "efgh")]);
}

#[test]
fn pieces_parse_back_to_the_output() {
    let out = b"one\n\ntwo is longer than eight\nthree\r\nfour";
    let mut s = Splitter::new(8);
    let mut pieces = s.push(out);
    pieces.extend(s.finish());
    let mut text = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let stream = if i % 2 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        let l = parse_line(&encode(stream, i as i64, p.partial, &p.content)).unwrap();
        assert_eq!((l.time, l.stream, l.partial), (i as i64, stream, p.partial));
        text.extend(l.content);
    }
    assert_eq!(text, b"one\n\ntwo is longer than eight\nthree\nfour");
}

#[test]
fn the_writer_makes_0640_files_and_reopens_its_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp("writer");
    let path = dir.join("0.log");
    let mut w = Writer::open(&path).unwrap();
    w.write(Stream::Stdout, 1, false, b"before").unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    // Under the usual umask (022) the mode is containerd's.
    assert_eq!(mode & !0o022, 0o640 & !0o022, "{mode:o}");
    let old = dir.join("0.log.20261202-040000");
    std::fs::rename(&path, &old).unwrap();
    w.write(Stream::Stderr, 2, false, b"renamed").unwrap();
    w.reopen().unwrap();
    w.write(Stream::Stdout, 3, true, b"after").unwrap();
    assert_eq!(
        read_file(&old).unwrap(),
        vec![
            line(1, Stream::Stdout, false, "before\n"),
            line(2, Stream::Stderr, false, "renamed\n")
        ]
    );
    assert_eq!(
        read_file(&path).unwrap(),
        vec![line(3, Stream::Stdout, true, "after")]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_follower_reads_from_an_offset_and_across_a_reopen() {
    use std::io::Write as _;
    let dir = tmp("follow");
    let path = dir.join("0.log");
    // Not there yet: read from the start once it is.
    let mut early = Follower::new(&path, 1000);
    assert_eq!(early.poll(), vec![]);
    let mut w = Writer::open(&path).unwrap();
    w.write(Stream::Stdout, 1, false, b"one").unwrap();
    let offset = std::fs::metadata(&path).unwrap().len();
    w.write(Stream::Stdout, 2, false, b"two").unwrap();
    assert_eq!(
        early.poll(),
        vec![
            line(1, Stream::Stdout, false, "one\n"),
            line(2, Stream::Stdout, false, "two\n")
        ]
    );
    let mut f = Follower::new(&path, offset);
    let mut tail = Follower::from_end(&path);
    assert_eq!(f.poll(), vec![line(2, Stream::Stdout, false, "two\n")]);
    assert_eq!(f.poll(), vec![]);
    // Half a line is not read until it is whole.
    let mut raw = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let whole = encode(Stream::Stderr, 3, true, b"three");
    raw.write_all(&whole[..10]).unwrap();
    assert_eq!(f.poll(), vec![]);
    raw.write_all(&whole[10..]).unwrap();
    assert_eq!(f.poll(), vec![line(3, Stream::Stderr, true, "three")]);
    // The kubelet renames the file; the writer writes on to it until the
    // reopen, then to a new file at the path.
    let old = dir.join("0.log.1");
    std::fs::rename(&path, &old).unwrap();
    w.write(Stream::Stdout, 4, false, b"four").unwrap();
    assert_eq!(f.poll(), vec![line(4, Stream::Stdout, false, "four\n")]);
    w.write(Stream::Stdout, 5, false, b"five").unwrap();
    w.reopen().unwrap();
    w.write(Stream::Stderr, 6, false, b"six").unwrap();
    assert_eq!(
        f.poll(),
        vec![
            line(5, Stream::Stdout, false, "five\n"),
            line(6, Stream::Stderr, false, "six\n")
        ]
    );
    assert_eq!(f.offset(), std::fs::metadata(&path).unwrap().len());
    // One that started at the end saw everything after, old file and new.
    let times: Vec<i64> = tail.poll().iter().map(|l| l.time).collect();
    assert_eq!(times, vec![3, 4, 5, 6]);
    // The old file is intact.
    let old_times: Vec<i64> = read_file(&old).unwrap().iter().map(|l| l.time).collect();
    assert_eq!(old_times, vec![1, 2, 3, 4, 5]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_rotating_writer_keeps_its_files_and_the_follower_reads_across() {
    let dir = tmp("rotate");
    let path = dir.join("out.log");
    let mut tail = Follower::from_end(&path);
    let mut w = Writer::open_rotating(&path, 100, 2).unwrap();
    let mut seen = Vec::new();
    for t in 0..30 {
        w.write(Stream::Stdout, t, false, b"0123456789").unwrap();
        // A follower that keeps up (as an attach does) misses nothing.
        seen.extend(tail.poll().iter().map(|l| l.time));
    }
    assert_eq!(seen, (0..30).collect::<Vec<i64>>());
    // Lines are whole and no file grew past one line over the limit; one
    // old file is kept, the older ones are gone.
    let cur = read_file(&path).unwrap();
    let old = read_file(&dir.join("out.log.1")).unwrap();
    assert!(!dir.join("out.log.2").exists());
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let one = encode(Stream::Stdout, 29, false, b"0123456789").len() as u64;
    assert!(size(&path) < 100 + one && size(&dir.join("out.log.1")) < 100 + one);
    let times: Vec<i64> = old.iter().chain(cur.iter()).map(|l| l.time).collect();
    assert_eq!(*times.last().unwrap(), 29);
    assert!(times.windows(2).all(|p| p[1] == p[0] + 1), "{times:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn next_waits_for_lines() {
    let dir = tmp("next");
    let path = dir.join("0.log");
    let mut f = Follower::new(&path, 0);
    let p = path.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Writer::open(&p)
            .unwrap()
            .write(Stream::Stdout, 7, false, b"late")
            .unwrap();
    });
    let lines = tokio::time::timeout(Duration::from_secs(5), f.next(Duration::from_millis(10)))
        .await
        .expect("the line arrives");
    assert_eq!(lines, vec![line(7, Stream::Stdout, false, "late\n")]);
    writer.await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
