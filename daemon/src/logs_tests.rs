use super::*;
use berth_proto::jsonlog::Writer;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("berthd-logs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entry(t: i64) -> Entry {
    Entry {
        stream: "stdout".into(),
        time: t,
        log: format!("{t}\n").into_bytes(),
    }
}

fn times(v: &[Entry]) -> Vec<i64> {
    v.iter().map(|e| e.time).collect()
}

#[test]
fn tail_and_since_select_the_last_entries_at_or_after_a_time() {
    let all: Vec<Entry> = (1..=10).map(entry).collect();
    assert_eq!(
        times(&select(all.clone(), None, -1)),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(times(&select(all.clone(), None, 3)), vec![8, 9, 10]);
    assert_eq!(times(&select(all.clone(), None, 0)), Vec::<i64>::new());
    assert_eq!(times(&select(all.clone(), None, 50)).len(), 10);
    assert_eq!(times(&select(all.clone(), Some(7), -1)), vec![7, 8, 9, 10]);
    assert_eq!(times(&select(all.clone(), Some(4), 2)), vec![9, 10]);
    assert_eq!(times(&select(all, Some(11), 2)), Vec::<i64>::new());
}

#[test]
fn destinations_are_per_namespace_and_container_and_removed_with_it() {
    let root = tmp("dest");
    let store = LogStore::new(
        &root,
        LogsConfig {
            max_size: 100,
            max_files: 2,
        },
    );
    let (out, err) = store.destinations("ns1", "c1", false).unwrap();
    let d = Destination::parse(&out).unwrap();
    assert_eq!(d.path, root.join("logs/ns1/c1/c1-json.log"));
    assert_eq!(
        (d.stream.as_str(), d.max_size, d.max_files),
        ("stdout", 100, 2)
    );
    assert_eq!(Destination::parse(&err).unwrap().stream, "stderr");
    let mode = std::fs::metadata(root.join("logs/ns1/c1")).unwrap().mode();
    assert_eq!(mode & 0o777, 0o700);
    // A terminal has one stream.
    assert_eq!(store.destinations("ns1", "c1", true).unwrap().1, "");
    std::fs::write(&d.path, b"x").unwrap();
    std::fs::write(jsonlog::rotated(&d.path, 1), b"y").unwrap();
    store.destinations("ns2", "c1", false).unwrap();
    store.remove("ns1", "c1").unwrap();
    assert!(!root.join("logs/ns1/c1").exists());
    assert!(
        root.join("logs/ns2/c1").exists(),
        "other namespaces keep theirs"
    );
    store.remove("ns1", "c1").unwrap();
    assert!(LogStore::wanted(
        &[(LOG_DRIVER.to_string(), JSON_FILE.to_string())].into()
    ));
    assert!(!LogStore::wanted(&Labels::new()));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_follower_reads_every_entry_once_across_rotations() {
    let dir = tmp("follow");
    let path = jsonlog::log_path(&dir, "c1");
    // Not there yet: nothing, and no error.
    let mut f = Follower::new(&path);
    assert!(f.poll().is_empty());
    let mut w = Writer::open(&path, 150, 4).unwrap();
    let mut seen = Vec::new();
    for t in 0..60 {
        w.write("stdout", t, format!("line {t}\n").as_bytes())
            .unwrap();
        // Polled now and then: some rotations happen between polls.
        if t % 3 == 0 {
            seen.extend(times(&f.poll()));
        }
    }
    seen.extend(times(&f.poll()));
    assert_eq!(seen, (0..60).collect::<Vec<_>>());
    assert!(jsonlog::rotated(&path, 3).exists());
    // A new follower: the rotated files, then the current one.
    let mut g = Follower::new(&path);
    let mut all = times(&g.older());
    all.extend(times(&g.poll()));
    assert_eq!(*all.last().unwrap(), 59);
    assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_half_written_line_waits_for_its_end() {
    let dir = tmp("partial");
    let path = jsonlog::log_path(&dir, "c1");
    let line = jsonlog::encode("stderr", 5, b"hello\n");
    std::fs::write(&path, &line[..10]).unwrap();
    let mut f = Follower::new(&path);
    assert!(f.poll().is_empty());
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&line[10..])
        .unwrap();
    let got = f.poll();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].stream.as_str(), got[0].log.as_slice()),
        ("stderr", &b"hello\n"[..])
    );
    // Emptied (one file kept): read again from the start, as the file
    // shrank (a follower that polls only once the file has grown past its
    // old size again misses that much; docker's follower too).
    let mut w = Writer::open(&path, 1, 1).unwrap();
    w.write("stdout", 6, b"a\n").unwrap();
    assert_eq!(times(&f.poll()), vec![6]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cri_stdio_names_the_kubelets_path_in_the_cri_format() {
    let root = tmp("cri");
    let path = root.join("pods/ns_pod_uid/c1/0.log");
    let (out, err) = LogStore::cri_stdio(&path, false, 16384, None).unwrap();
    let d = Destination::parse(&out).unwrap();
    assert_eq!(d, Destination::cri(path.clone(), "stdout", 16384));
    assert_eq!(
        Destination::parse(&err).unwrap(),
        Destination::cri(path.clone(), "stderr", 16384)
    );
    // Its directories are made, as containerd makes them.
    let mode = std::fs::metadata(root.join("pods/ns_pod_uid/c1"))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o777 & !0o022, 0o755 & !0o022, "{mode:o}");
    assert!(!path.exists(), "the shim creates the file");
    // A terminal has one stream; 0 never cuts lines.
    let (out, err) = LogStore::cri_stdio(&path, true, 0, None).unwrap();
    assert_eq!(Destination::parse(&out).unwrap().max_line, 0);
    assert_eq!(err, "");
    for (bad, why) in [
        ("pods/c1/0.log", "is not absolute"),
        ("/var/log/pods/a?b/0.log", "holds a '?'"),
        ("/var/log/pods/c1/", "names no file"),
    ] {
        let e = LogStore::cri_stdio(Path::new(bad), false, 16384, None).expect_err(bad);
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::InvalidArgument);
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}
