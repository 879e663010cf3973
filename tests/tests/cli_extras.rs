//! berthctl's docker extras against a real berthd: `cp` in and out of
//! running and stopped containers (a symlink inside never reaches the
//! host), `commit` then `run` of the committed image, `system df`,
//! `system prune`, `image prune`, `container prune` and `completion`.
//! Root only.

use berth_tests::*;
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn daemon() -> Option<Daemon> {
    if !require_root("running containers") {
        return None;
    }
    let d = Daemon::start();
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    Some(d)
}

fn ctl(d: &Daemon, args: &[&str]) -> Output {
    d.berthctl("default", args)
}

fn json(d: &Daemon, args: &[&str]) -> Value {
    let mut v = vec!["--format", "json"];
    v.extend_from_slice(args);
    let out = ok(&args.join(" "), ctl(d, &v));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Runs berthctl with `answer` on stdin (for the prune questions).
fn answering(d: &Daemon, answer: &str, args: &[&str]) -> Output {
    let mut child = d
        .berthctl_command("default", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berthctl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    child.wait_with_output().expect("wait berthctl")
}

fn names(d: &Daemon, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ok(&args.join(" "), ctl(d, args))
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn images(d: &Daemon) -> Vec<String> {
    names(d, &["images", "ls", "-q"])
}

fn no_cp_mounts_left() {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains("berthctl-cp-"), "{mi}");
}

#[test]
fn cp_in_and_out_of_running_and_stopped_containers() {
    let Some(d) = daemon() else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    let setup = "echo inside > /f; mkdir -p /d/sub; echo deep > /d/sub/x; chmod 751 /d/sub/x; \
                 ln -s / /escape; ln -s /etc/passwd /plink; touch /ready; exec sleep 300";
    ok(
        "run -d",
        ctl(
            &d,
            &["run", "-d", "--name", "c", "busybox", "sh", "-c", setup],
        ),
    );
    let t0 = Instant::now();
    while !ctl(&d, &["cp", "c:/ready", h.join("ready").to_str().unwrap()])
        .status
        .success()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "setup never finished"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let hs = |p: &str| h.join(p).to_str().unwrap().to_string();

    // Out of a running container: a file, a tree with its modes.
    ok("cp file out", ctl(&d, &["cp", "c:/f", &hs("f")]));
    assert_eq!(std::fs::read_to_string(h.join("f")).unwrap(), "inside\n");
    ok("cp dir out", ctl(&d, &["cp", "c:/d", &hs("d")]));
    assert_eq!(
        std::fs::read_to_string(h.join("d/sub/x")).unwrap(),
        "deep\n"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&h.join("d/sub/x")), 0o751);
    // Into an existing directory: under the source's name.
    std::fs::create_dir(h.join("into")).unwrap();
    ok("cp into dir", ctl(&d, &["cp", "c:/f", &hs("into")]));
    assert!(h.join("into/f").is_file());

    // The escape attempt: `/escape` is `/` inside the container, so this
    // is the container's shadow (or nothing), never the host's.
    let host_shadow = std::fs::read("/etc/shadow").unwrap();
    let out = ctl(&d, &["cp", "c:/escape/etc/shadow", &hs("shadow")]);
    if out.status.success() {
        assert_ne!(std::fs::read(h.join("shadow")).unwrap(), host_shadow);
    }
    ok(
        "cp through a link",
        ctl(&d, &["cp", "c:/escape/etc/passwd", &hs("passwd")]),
    );
    let passwd = std::fs::read_to_string(h.join("passwd")).unwrap();
    assert!(passwd.contains("nobody:x:65534"), "{passwd}");
    assert_ne!(passwd, std::fs::read_to_string("/etc/passwd").unwrap());
    // A link is copied as a link.
    ok("cp link", ctl(&d, &["cp", "c:/plink", &hs("plink")]));
    assert_eq!(
        std::fs::read_link(h.join("plink")).unwrap(),
        std::path::Path::new("/etc/passwd")
    );

    // In, with the mode; through the container's own link too, which
    // must land inside the container and not on the host.
    std::fs::write(h.join("in"), "to the container\n").unwrap();
    std::fs::set_permissions(h.join("in"), std::fs::Permissions::from_mode(0o640)).unwrap();
    ok("cp in", ctl(&d, &["cp", &hs("in"), "c:/tmp/in"]));
    let stat = ok(
        "stat",
        ctl(&d, &["exec", "c", "stat", "-c", "%a %s", "/tmp/in"]),
    );
    assert_eq!(stat.trim(), "640 17");
    let marker = format!("berth-cp-escape-{}", std::process::id());
    ok(
        "cp in via link",
        ctl(&d, &["cp", &hs("in"), &format!("c:/escape/tmp/{marker}")]),
    );
    assert!(!std::path::Path::new("/tmp").join(&marker).exists());
    ok(
        "inside",
        ctl(&d, &["exec", "c", "test", "-f", &format!("/tmp/{marker}")]),
    );
    ok("cp dir in", ctl(&d, &["cp", &hs("d"), "c:/tmp"]));
    let x = ok("cat", ctl(&d, &["exec", "c", "cat", "/tmp/d/sub/x"]));
    assert_eq!(x, "deep\n");

    // Stopped: through its snapshot, mounted only for the copy.
    ok("stop", ctl(&d, &["stop", "-t", "1", "c"]));
    ok(
        "cp out stopped",
        ctl(&d, &["cp", "c:/tmp/in", &hs("again")]),
    );
    assert_eq!(
        std::fs::read_to_string(h.join("again")).unwrap(),
        "to the container\n"
    );
    ok("cp in stopped", ctl(&d, &["cp", &hs("f"), "c:/added"]));
    let out = ctl(&d, &["cp", "c:/escape/etc/shadow", &hs("shadow2")]);
    if out.status.success() {
        assert_ne!(std::fs::read(h.join("shadow2")).unwrap(), host_shadow);
    }
    no_cp_mounts_left();
    ok("start", ctl(&d, &["start", "c"]));
    let added = ok("cat added", ctl(&d, &["exec", "c", "cat", "/added"]));
    assert_eq!(added, "inside\n");

    // Bad input: clear messages, no internal errors.
    for (args, want) in [
        (vec!["cp", "nosuch:/f", "."], "no such container"),
        (vec!["cp", "c:/nonexistent", "."], "no such file"),
        (vec!["cp", "a", "b"], "CONTAINER:PATH"),
        (vec!["cp", "c:/f", "c:/g"], "between containers"),
        (vec!["cp", "c:/d", &hs("f")], "cannot copy directory"),
    ] {
        let err = fails(&args.join(" "), ctl(&d, &args));
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("internal error"), "{args:?}: {err}");
    }
    ok("rm", ctl(&d, &["rm", "-f", "c"]));
    no_cp_mounts_left();
}

#[test]
fn commit_then_run_the_committed_image() {
    let Some(d) = daemon() else {
        return;
    };
    ok(
        "run base",
        ctl(
            &d,
            &[
                "run",
                "--name",
                "base",
                "busybox",
                "sh",
                "-c",
                "echo committed > /marker",
            ],
        ),
    );
    let digest = ok(
        "commit",
        ctl(
            &d,
            &["commit", "-m", "a marker", "-a", "me", "base", "my/img:1"],
        ),
    );
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    let out = ok(
        "run committed",
        ctl(&d, &["run", "--rm", "my/img:1", "cat", "/marker"]),
    );
    assert_eq!(out, "committed\n");
    // The config's history got the entry (and the base's command stayed).
    let info = ok(
        "inspect",
        ctl(&d, &["images", "inspect", "docker.io/my/img:1"]),
    );
    assert!(
        info.contains("a marker") && info.contains("berthctl commit"),
        "{info}"
    );

    // A running container: paused for the diff, running after.
    ok(
        "run -d",
        ctl(
            &d,
            &[
                "run",
                "-d",
                "--name",
                "live",
                "busybox",
                "sh",
                "-c",
                "echo live > /l; exec sleep 300",
            ],
        ),
    );
    let t0 = Instant::now();
    while !ctl(&d, &["exec", "live", "test", "-f", "/l"])
        .status
        .success()
    {
        assert!(t0.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    ok("commit live", ctl(&d, &["commit", "live", "my/img:2"]));
    let ps = json(&d, &["ps"]);
    assert!(ps.to_string().contains("running"), "{ps}");
    let out = ok(
        "run committed 2",
        ctl(&d, &["run", "--rm", "my/img:2", "cat", "/l"]),
    );
    assert_eq!(out, "live\n");

    // Committing over a name leaves the old image dangling, as docker.
    ok("commit again", ctl(&d, &["commit", "live", "my/img:2"]));
    assert!(
        images(&d)
            .iter()
            .any(|n| n.starts_with("berth-dangling@sha256:"))
    );
    // Without a name: a dangling image, runnable by its digest name.
    let dg = ok("commit unnamed", ctl(&d, &["commit", "base"]));
    let dangling = format!("berth-dangling@{}", dg.trim());
    assert!(images(&d).contains(&dangling), "{:?}", images(&d));

    for (args, want) in [
        (vec!["commit", "nosuch", "x:1"], "no such container"),
        (vec!["commit", "base", "UPPER:case"], "invalid image name"),
    ] {
        let err = fails(&args.join(" "), ctl(&d, &args));
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("internal error"), "{args:?}: {err}");
    }
    ok("rm", ctl(&d, &["rm", "-f", "live", "base"]));
}

#[test]
fn system_df_and_the_prunes() {
    let Some(d) = daemon() else {
        return;
    };
    ok(
        "run stopped",
        ctl(
            &d,
            &[
                "run",
                "--name",
                "stopped1",
                "busybox",
                "sh",
                "-c",
                "echo x > /x",
            ],
        ),
    );
    ok(
        "run -d alive",
        ctl(
            &d,
            &["run", "-d", "--name", "alive", "busybox", "sleep", "300"],
        ),
    );
    let dg = ok("commit unnamed", ctl(&d, &["commit", "stopped1"]));
    let dangling = format!("berth-dangling@{}", dg.trim());

    // df: typed numbers, one row per kind.
    let df = json(&d, &["system", "df"]);
    let rows = df.as_array().unwrap();
    let row = |k: &str| rows.iter().find(|r| r["type"] == k).cloned().expect(k);
    assert_eq!(row("Images")["total"], 2, "{df}");
    assert_eq!(row("Images")["active"], 1, "{df}");
    assert!(row("Images")["size"].as_i64().unwrap() > 0, "{df}");
    assert!(row("Images")["reclaimable"].as_i64().unwrap() > 0, "{df}");
    assert_eq!(row("Containers")["total"], 2, "{df}");
    assert_eq!(row("Containers")["active"], 1, "{df}");
    assert!(row("Containers")["size"].as_i64().is_some(), "{df}");
    assert!(row("Local Volumes")["total"].as_u64().is_some(), "{df}");
    assert_eq!(row("Build Cache")["size"], 0);
    let table = ok("df", ctl(&d, &["system", "df"]));
    assert!(
        table.lines().next().unwrap().contains("RECLAIMABLE"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("Images") && l.contains('%')),
        "{table}"
    );

    // Declining the question removes nothing.
    let out = answering(&d, "n\n", &["system", "prune"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Are you sure"));
    assert_eq!(names(&d, &["ps", "-a", "-q"]), ["alive", "stopped1"]);

    // system prune -f: the stopped container and the dangling image go;
    // the running container and its image stay.
    let out = ok("system prune", ctl(&d, &["system", "prune", "-f"]));
    assert!(
        out.contains("stopped1") && out.contains("Total reclaimed space"),
        "{out}"
    );
    assert_eq!(names(&d, &["ps", "-a", "-q"]), ["alive"]);
    let imgs = images(&d);
    assert!(!imgs.contains(&dangling), "{imgs:?}");
    assert!(imgs.iter().any(|n| n.contains("busybox")), "{imgs:?}");
    assert_eq!(
        json(&d, &["ps"])[0]["state"],
        "running",
        "the running container survived"
    );

    // Volumes only with --volumes; JSON mode prints one typed object.
    ok("volume create", ctl(&d, &["volume", "create", "unused"]));
    std::fs::write(
        std::path::Path::new(
            json(&d, &["volume", "inspect", "unused"])[0]["Mountpoint"]
                .as_str()
                .unwrap(),
        )
        .join("data"),
        vec![0u8; 4096],
    )
    .unwrap();
    let df = json(&d, &["system", "df"]);
    let vols = df
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Local Volumes")
        .cloned()
        .unwrap();
    assert_eq!(vols["total"], 1, "{df}");
    assert!(vols["size"].as_i64().unwrap() >= 4096, "{df}");
    ok("prune keeps volumes", ctl(&d, &["system", "prune", "-f"]));
    assert_eq!(names(&d, &["volume", "ls", "-q"]), ["unused"]);
    let p = json(&d, &["system", "prune", "-f", "--volumes"]);
    assert_eq!(p["volumes"], serde_json::json!(["unused"]), "{p}");
    assert!(p["reclaimed_bytes"].as_i64().unwrap() >= 4096, "{p}");
    assert!(names(&d, &["volume", "ls", "-q"]).is_empty());

    // image prune: dangling only; -a also named images no container uses.
    ok(
        "run s2",
        ctl(&d, &["run", "--name", "s2", "busybox", "true"]),
    );
    let dg = ok("commit", ctl(&d, &["commit", "s2"]));
    ok("tag", ctl(&d, &["images", "tag", "busybox", "spare:1"]));
    let out = ok("image prune", answering(&d, "y\n", &["image", "prune"]));
    assert!(out.contains(dg.trim()), "{out}");
    let imgs = images(&d);
    assert!(imgs.iter().any(|n| n.contains("spare")), "{imgs:?}");
    ok("image prune -a", ctl(&d, &["image", "prune", "-a", "-f"]));
    let imgs = images(&d);
    assert!(!imgs.iter().any(|n| n.contains("spare")), "{imgs:?}");
    assert!(imgs.iter().any(|n| n.contains("busybox")), "{imgs:?}");

    // container prune: stopped ones only.
    let out = ok("container prune", ctl(&d, &["container", "prune", "-f"]));
    assert!(out.contains("s2"), "{out}");
    assert_eq!(names(&d, &["ps", "-a", "-q"]), ["alive"]);
    ok("rm", ctl(&d, &["rm", "-f", "alive"]));
}

#[test]
fn completion_scripts_for_each_shell() {
    // Needs no daemon: the address is never dialled.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    for sh in ["bash", "zsh", "fish"] {
        let out = ok(
            sh,
            berthctl_at(&sock, dir.path(), "default", &["completion", sh])
                .output()
                .unwrap(),
        );
        assert!(out.len() > 1000 && out.contains("berthctl"), "{sh}: {out}");
        assert!(out.contains("commit") && out.contains("prune"), "{sh}");
    }
    let err = fails(
        "bad shell",
        berthctl_at(&sock, dir.path(), "default", &["completion", "tcsh"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("possible values"), "{err}");
}
