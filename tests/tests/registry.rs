//! Pull and push against a real registry (Debian's docker-registry on
//! 127.0.0.1): berthctl round trip, the real ctr 1.6 pulling through
//! berthd, a pull interrupted by SIGKILL and resumed, and registries that
//! answer badly. Unpacking and running need root.

use berth_proto::services::content::v1 as content;
use berth_proto::services::content::v1::content_client::ContentClient;
use berth_tests::registry::{Proxy, Registry, TokenServer};
use berth_tests::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn import_busybox(d: &Daemon) {
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
}

/// Busybox imported and named `remote` too.
fn busybox_as(d: &Daemon, remote: &str) {
    import_busybox(d);
    ok(
        "tag",
        d.berthctl("default", &["images", "tag", "busybox", remote]),
    );
}

/// The digest an image points at, from `berthctl images ls`.
fn image_digest(d: &Daemon, name: &str) -> Option<String> {
    let out = ok(
        "images ls",
        d.berthctl("default", &["--format", "json", "images", "ls"]),
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v.as_array()?
        .iter()
        .find_map(|i| (i["name"] == name).then(|| i["digest"].as_str().unwrap_or("").to_string()))
}

fn content_digests(d: &Daemon) -> Vec<String> {
    ok(
        "content ls",
        d.berthctl("default", &["content", "ls", "-q"]),
    )
    .lines()
    .map(String::from)
    .collect()
}

fn peers() -> Option<std::path::PathBuf> {
    let reg = peer("docker-registry")?;
    if !require_root("pulling unpacks into overlay snapshots (mounts)") {
        return None;
    }
    Some(reg)
}

#[test]
fn push_pull_round_trip() {
    let Some(reg_bin) = peers() else { return };
    let reg = Registry::start(&reg_bin);
    let d = Daemon::start();
    let remote = format!("{}/bb:1", reg.host());
    busybox_as(&d, &remote);
    let local = image_digest(&d, "docker.io/library/busybox:latest").expect("imported");
    let out = ok("push", d.berthctl("default", &["images", "push", &remote]));
    assert!(out.contains("pushed:"), "{out}");
    // An independent client sees what we pushed.
    if let Some(skopeo) = peer("skopeo") {
        let o = Command::new(skopeo)
            .args([
                "inspect",
                "--tls-verify=false",
                &format!("docker://{remote}"),
            ])
            .output()
            .expect("skopeo");
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("skopeo: {o:?}"));
        assert_eq!(v["Digest"], local.as_str(), "skopeo sees our digest");
    }
    // Pushing again uploads nothing.
    let again = ok(
        "push again",
        d.berthctl("default", &["images", "push", &remote]),
    );
    assert!(
        again.contains("exists: blob-sha256") && !again.contains("complete: blob-"),
        "{again}"
    );
    // Another repository of the same registry mounts the blobs.
    let other = format!("{}/other:2", reg.host());
    ok(
        "tag",
        d.berthctl("default", &["images", "tag", &remote, &other]),
    );
    let m = ok(
        "push other",
        d.berthctl("default", &["images", "push", &other]),
    );
    assert!(
        m.contains("mounted: blob-sha256") || m.contains("exists: blob-sha256"),
        "{m}"
    );

    ok(
        "rm",
        d.berthctl(
            "default",
            &[
                "images",
                "rm",
                "--sync",
                &remote,
                &other,
                "docker.io/library/busybox:latest",
            ],
        ),
    );
    assert!(content_digests(&d).is_empty(), "all content collected");
    let pulled = ok("pull", d.berthctl("default", &["images", "pull", &remote]));
    assert!(
        pulled.contains("unpacked:") && pulled.contains("saved:"),
        "{pulled}"
    );
    assert_eq!(
        image_digest(&d, &remote).as_deref(),
        Some(local.as_str()),
        "same digest"
    );
    let run = ok(
        "run",
        d.berthctl(
            "default",
            &[
                "run",
                "--rm",
                "--name",
                "rt1",
                &remote,
                "echo",
                "hi-from-registry",
            ],
        ),
    );
    assert_eq!(run.trim(), "hi-from-registry");
    assert_blobs_intact(&d.root());
}

#[test]
fn ctr_pulls_through_berthd() {
    let Some(reg_bin) = peers() else { return };
    let Some(ctr) = peer("ctr") else { return };
    let reg = Registry::start(&reg_bin);
    let pusher = Daemon::start();
    let remote = format!("{}/bb:ctr", reg.host());
    busybox_as(&pusher, &remote);
    ok(
        "push",
        pusher.berthctl("default", &["images", "push", &remote]),
    );
    drop(pusher);

    let d = Daemon::start();
    ok(
        "ctr pull",
        d.ctr(
            &ctr,
            "default",
            &["images", "pull", "--plain-http", &remote],
        ),
    );
    let out = ok(
        "ctr run",
        d.ctr(
            &ctr,
            "default",
            &["run", "--rm", &remote, "cr1", "echo", "hi-from-ctr-pull"],
        ),
    );
    assert_eq!(out.trim(), "hi-from-ctr-pull");
}

/// Pushes a one-layer image with `size` bytes of noise; returns its name.
fn push_big(d: &Daemon, reg: &Registry, repo: &str, size: usize) -> String {
    let layer = layer_tar(&[("big.bin", &berth_tests::bench::random(size, 7))]);
    let tar = oci_image(&[layer], "1", None);
    let path = d.dir.path().join("big.tar");
    std::fs::write(&path, tar).expect("write image");
    let base = format!("{}/{repo}", reg.host());
    d.import(&path, &["--no-unpack", "--base-name", &base]);
    let name = format!("{base}:1");
    ok(
        "push big",
        d.berthctl("default", &["images", "push", &name]),
    );
    name
}

async fn ingest_offset(d: &Daemon) -> i64 {
    let Ok(ch) = berth_proto::client::connect(&d.address()).await else {
        return 0;
    };
    ContentClient::new(ch)
        .list_statuses(berth_proto::client::request(
            "default",
            content::ListStatusesRequest { filters: vec![] },
        ))
        .await
        .map(|r| {
            r.into_inner()
                .statuses
                .iter()
                .filter(|s| s.r#ref.starts_with("layer-"))
                .map(|s| s.offset)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn interrupted_pull_resumes_after_sigkill() {
    let Some(reg_bin) = peers() else { return };
    let reg = Registry::start(&reg_bin);
    let pusher = Daemon::start();
    let pushed = push_big(&pusher, &reg, "big", 40 << 20);
    let want = image_digest(&pusher, &pushed).expect("pushed image");
    drop(pusher);

    // Pull through a slow link, and kill berthd once part of the layer is in.
    let proxy = Proxy::start(reg.port);
    proxy.throttle(8 << 20);
    let via = pushed.replace(&reg.host(), &proxy.host());
    let mut d = Daemon::start();
    let mut puller = Command::new(bin("berthctl"))
        .args(["--address", &d.address(), "images", "pull", &via])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berthctl pull");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let off = rt.block_on(ingest_offset(&d));
        if off >= 8 << 20 {
            break off;
        }
        assert!(Instant::now() < deadline, "the download never got going");
        assert!(
            puller.try_wait().unwrap().is_none(),
            "pull ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    d.kill9();
    let _ = puller.wait();
    assert!(
        image_digest_after_restart(&mut d, &via).is_none(),
        "no image from a cut pull"
    );
    let kept = rt.block_on(ingest_offset(&d));
    assert!(
        kept >= seen,
        "the partial layer survived the crash: {kept} < {seen}"
    );

    proxy.throttle(0);
    let out = ok(
        "pull again",
        d.berthctl("default", &["images", "pull", &via]),
    );
    let resumed: i64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("resuming: ")
                .and_then(|r| r.split(" at byte ").nth(1))
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume reported:\n{out}\n{}", d.log()));
    assert!(resumed >= seen, "resumed at {resumed}, had {seen}");
    assert!(
        reg.log().contains("206") || resumed > 0,
        "the registry served a range"
    );
    assert_eq!(image_digest(&d, &via).as_deref(), Some(want.as_str()));
    assert_blobs_intact(&d.root());
}

/// Restarts a killed daemon and reports the image, if any.
fn image_digest_after_restart(d: &mut Daemon, name: &str) -> Option<String> {
    d.restart();
    image_digest(d, name)
}

/// berthd that gives up on a silent registry quickly.
const IMPATIENT: &str =
    "[registry]\nread_timeout_secs = 2\nconnect_timeout_secs = 2\nretries = 1\n";

/// A failed pull leaves no image and nothing under the bad digest.
fn assert_nothing_left(d: &Daemon, name: &str, bad: Option<&str>) {
    assert!(
        image_digest(d, name).is_none(),
        "no image {name} after a failed pull"
    );
    if let Some(b) = bad {
        assert!(
            !content_digests(d).iter().any(|c| c == b),
            "{b} must not be committed"
        );
    }
    assert_blobs_intact(&d.root());
}

#[test]
fn bad_registry_answers() {
    let Some(reg_bin) = peers() else { return };
    let reg = Registry::start(&reg_bin);
    let pusher = Daemon::start();
    // The OCI fixture: its layer digest is known (digests.env).
    pusher.import(
        &fixtures().join("busybox-oci.tar"),
        &["--no-unpack", "--base-name", "docker.io/local/bb"],
    );
    let layer = fixture_digest("layer");
    for tag in ["corrupt", "missing"] {
        let r = format!("{}/{tag}:1", reg.host());
        ok(
            "tag",
            pusher.berthctl(
                "default",
                &["images", "tag", "docker.io/local/bb:latest", &r],
            ),
        );
        ok("push", pusher.berthctl("default", &["images", "push", &r]));
    }
    drop(pusher);
    let d = Daemon::start_with_config(IMPATIENT);

    // A layer whose bytes do not match its digest.
    let data = reg.blob_data(&layer);
    let mut bytes = std::fs::read(&data).expect("registry blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).expect("corrupt the blob");
    let r = format!("{}/corrupt:1", reg.host());
    let err = fails(
        "pull corrupt",
        d.berthctl("default", &["images", "pull", &r]),
    );
    assert!(err.contains("corrupt") && err.contains(&layer), "{err}");
    assert_nothing_left(&d, &r, Some(&layer));

    // A layer the registry no longer has.
    std::fs::remove_file(&data).expect("remove the blob");
    let r = format!("{}/missing:1", reg.host());
    let err = fails(
        "pull missing",
        d.berthctl("default", &["images", "pull", &r]),
    );
    assert!(
        err.to_lowercase().contains("unknown") || err.contains("404") || err.contains("not found"),
        "{err}"
    );
    assert_nothing_left(&d, &r, Some(&layer));

    // A reference the registry never had.
    let err = fails(
        "pull absent",
        d.berthctl(
            "default",
            &["images", "pull", &format!("{}/nope:1", reg.host())],
        ),
    );
    assert!(
        err.contains("not found")
            || err.contains("MANIFEST_UNKNOWN")
            || err.contains("ManifestUnknown"),
        "{err}"
    );

    // A registry that stops answering.
    reg.freeze(true);
    let started = Instant::now();
    let err = fails(
        "pull frozen",
        d.berthctl("default", &["images", "pull", &r]),
    );
    reg.freeze(false);
    assert!(err.contains("stopped answering"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up in time"
    );
    assert_nothing_left(&d, &r, None);

    // No registry at all.
    let err = fails(
        "pull refused",
        d.berthctl("default", &["images", "pull", "127.0.0.1:9/bb:1"]),
    );
    assert!(
        err.contains("cannot connect to registry 127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn transient_failures_are_retried() {
    let Some(reg_bin) = peers() else { return };
    let reg = Registry::start(&reg_bin);
    let pusher = Daemon::start();
    let remote = format!("{}/flaky/bb:1", reg.host());
    busybox_as(&pusher, &remote);
    ok(
        "push",
        pusher.berthctl("default", &["images", "push", &remote]),
    );
    let want = image_digest(&pusher, &remote).expect("pushed image");
    drop(pusher);

    // A registry that is down for two requests: retried, then it works.
    let proxy = Proxy::start(reg.port);
    let via = remote.replace(&reg.host(), &proxy.host());
    let d = Daemon::start();
    proxy.fail_next(2);
    ok(
        "pull through a registry that is briefly down",
        d.berthctl("default", &["images", "pull", &via]),
    );
    assert_eq!(image_digest(&d, &via), Some(want));
    let log = d.log();
    assert!(
        log.contains("retry 1/3") && log.contains("503"),
        "the retries are logged with their cause:\n{log}"
    );

    // Down for good: the retries run out, with a clear error.
    ok(
        "rm",
        d.berthctl("default", &["images", "rm", "--sync", &via]),
    );
    proxy.fail_next(u64::MAX);
    let started = Instant::now();
    let err = fails(
        "pull from a registry that stays down",
        d.berthctl("default", &["images", "pull", &via]),
    );
    assert!(
        err.contains("503") && err.contains("after 3 retries") && err.contains("unavailable"),
        "{err}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200 + 400 + 800),
        "backed off between attempts"
    );
    assert_nothing_left(&d, &via, None);
}

#[test]
fn registry_with_basic_auth() {
    let Some(reg_bin) = peers() else { return };
    let reg = Registry::start_with_auth(&reg_bin, "berth", "s3cret-pw");
    let d = Daemon::start();
    let remote = format!("{}/private:1", reg.host());
    busybox_as(&d, &remote);
    let err = fails(
        "push anonymous",
        d.berthctl("default", &["images", "push", &remote]),
    );
    assert!(err.contains("401") && err.contains("--user"), "{err}");
    ok(
        "push with credentials",
        d.berthctl(
            "default",
            &["images", "push", "--user", "berth:s3cret-pw", &remote],
        ),
    );
    ok(
        "rm",
        d.berthctl("default", &["images", "rm", "--sync", &remote]),
    );

    let err = fails(
        "pull with a wrong password",
        d.berthctl(
            "default",
            &["images", "pull", "--user", "berth:wrong", &remote],
        ),
    );
    assert!(
        err.contains("401") && err.contains("check the user name and password"),
        "{err}"
    );
    assert!(
        !err.contains("wrong") && !d.log().contains("s3cret-pw"),
        "secrets never shown or logged"
    );
    assert_nothing_left(&d, &remote, None);

    // Credentials from docker's config.json.
    let cfg = d.dir.path().join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YmVydGg6czNjcmV0LXB3"}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let out = Command::new(bin("berthctl"))
        .args(["--address", &d.address(), "images", "pull", &remote])
        .env("DOCKER_CONFIG", &cfg)
        .env_remove("BERTH_REGISTRY_USER")
        .output()
        .expect("berthctl");
    ok("pull with config.json", out);
    assert!(image_digest(&d, &remote).is_some());

    // A credential helper named by credsStore, speaking docker's helper
    // protocol; it knows only this registry.
    ok(
        "rm",
        d.berthctl("default", &["images", "rm", "--sync", &remote]),
    );
    let helpers = d.dir.path().join("helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    let helper = helpers.join("docker-credential-berthtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\necho \"$server\" >> {log}\nif [ \"$server\" = {host} ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"berth\",\"Secret\":\"s3cret-pw\"}}' \"$server\"\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
            log = helpers.join("asked").display(),
            host = reg.host()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let with_helper = |config: &str, what: &str| {
        std::fs::write(cfg.join("config.json"), config).unwrap();
        Command::new(bin("berthctl"))
            .args(["--address", &d.address(), "images", "pull", &remote])
            .env("DOCKER_CONFIG", &cfg)
            .env("PATH", &path)
            .output()
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    ok(
        "pull with credsStore",
        with_helper(r#"{"credsStore":"berthtest","auths":{}}"#, "credsStore"),
    );
    assert!(image_digest(&d, &remote).is_some());
    let asked = std::fs::read_to_string(helpers.join("asked")).unwrap();
    assert!(asked.lines().any(|l| l == reg.host()), "{asked}");
    // A per-registry helper that is not installed: a clear error.
    ok(
        "rm",
        d.berthctl("default", &["images", "rm", "--sync", &remote]),
    );
    let err = fails(
        "pull with a missing helper",
        with_helper(
            &format!(
                r#"{{"credsStore":"berthtest","credHelpers":{{"{}":"absent"}}}}"#,
                reg.host()
            ),
            "credHelpers",
        ),
    );
    assert!(
        err.contains("docker-credential-absent cannot run") && err.contains("401"),
        "{err}"
    );
}

/// A layer holding the host's static busybox as /bin/busybox.
fn busybox_layer() -> Vec<u8> {
    let data = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o755);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append_data(&mut h, "bin/busybox", &data[..])
        .expect("append");
    b.into_inner().expect("tar")
}

#[test]
fn multi_platform_push_and_pull() {
    let Some(reg_bin) = peers() else { return };
    let reg = Registry::start(&reg_bin);
    let other = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let foreign = layer_tar(&[("etc/arch", other.as_bytes())]);
    let tar = oci_multi_platform_image(
        &[
            (host_arch(), vec![busybox_layer()]),
            (other, vec![foreign.clone()]),
        ],
        "1",
    );
    let d = Daemon::start();
    let path = d.dir.path().join("multi.tar");
    std::fs::write(&path, tar).unwrap();
    let base = format!("{}/multi", reg.host());
    let name = format!("{base}:1");
    d.import(&path, &["--base-name", &base]);
    let pushed = ok(
        "push index",
        d.berthctl("default", &["images", "push", &name]),
    );
    let index = image_digest(&d, &name).expect("imported");
    assert!(pushed.contains(&index), "{pushed}");
    drop(d);

    // The host's platform by default: its layer only.
    let foreign_gz = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&foreign).unwrap();
        sha256(&gz.finish().unwrap())
    };
    let d = Daemon::start();
    ok("pull", d.berthctl("default", &["images", "pull", &name]));
    assert_eq!(
        image_digest(&d, &name).as_deref(),
        Some(index.as_str()),
        "the index kept whole"
    );
    assert!(
        !content_digests(&d).contains(&foreign_gz),
        "no foreign layer fetched"
    );
    let out = ok(
        "run",
        d.berthctl(
            "default",
            &[
                "run",
                "--rm",
                "--name",
                "mp1",
                &name,
                "/bin/busybox",
                "echo",
                "multi-ok",
            ],
        ),
    );
    assert_eq!(out.trim(), "multi-ok");
    // Another platform on request.
    let platform = format!("linux/{other}");
    ok(
        "pull --platform",
        d.berthctl(
            "default",
            &[
                "images",
                "pull",
                "--no-unpack",
                "--platform",
                &platform,
                &name,
            ],
        ),
    );
    assert!(
        content_digests(&d).contains(&foreign_gz),
        "foreign layer fetched on request"
    );
    let err = fails(
        "pull an absent platform",
        d.berthctl(
            "default",
            &["images", "pull", "--platform", "linux/s390x", &name],
        ),
    );
    assert!(err.contains("no image for platform linux/s390x"), "{err}");
    drop(d);

    // Everything.
    let d = Daemon::start();
    ok(
        "pull --all-platforms",
        d.berthctl(
            "default",
            &["images", "pull", "--all-platforms", "--no-unpack", &name],
        ),
    );
    assert!(content_digests(&d).contains(&foreign_gz));
}

#[test]
fn registry_with_token_auth() {
    let Some(reg_bin) = peers() else { return };
    let Some(openssl) = peer("openssl") else {
        return;
    };
    let tokens = TokenServer::start(&openssl, "berth", "t0ken-pw");
    let reg = Registry::start_with_token(&reg_bin, &tokens);
    let d = Daemon::start();
    let remote = format!("{}/team/bb:1", reg.host());
    busybox_as(&d, &remote);

    // Anonymous tokens only carry pull: the registry refuses the push.
    let err = fails(
        "push anonymous",
        d.berthctl("default", &["images", "push", &remote]),
    );
    assert!(
        err.contains("401 (UNAUTHORIZED: authentication required)") && err.contains("--user"),
        "{err}"
    );
    let err = fails(
        "push with a wrong password",
        d.berthctl(
            "default",
            &["images", "push", "--user", "berth:wrong", &remote],
        ),
    );
    assert!(err.contains("check the user name and password"), "{err}");
    ok(
        "push with credentials",
        d.berthctl(
            "default",
            &["images", "push", "--user", "berth:t0ken-pw", &remote],
        ),
    );
    let grants = tokens.grants();
    assert!(
        grants.iter().any(|g| g.account.is_empty()
            && g.scopes.iter().any(|s| s == "repository:team/bb:pull,push")),
        "an anonymous token was asked for with the push scope: {grants:?}"
    );
    assert!(
        grants.iter().any(|g| g.refused && g.account == "berth"),
        "the wrong password reached the token server and was refused: {grants:?}"
    );
    assert!(
        grants.iter().any(|g| g.account == "berth"
            && !g.refused
            && g.granted
                .iter()
                .any(|s| s == "repository:team/bb:pull,push")),
        "the push ran on a token granting push: {grants:?}"
    );
    let pushed = image_digest(&d, &remote).expect("pushed image");

    // A public pull needs no credentials: the anonymous token suffices.
    ok(
        "rm",
        d.berthctl("default", &["images", "rm", "--sync", &remote]),
    );
    ok(
        "pull anonymous",
        d.berthctl("default", &["images", "pull", &remote]),
    );
    assert_eq!(image_digest(&d, &remote).as_deref(), Some(pushed.as_str()));
    assert!(
        !d.log().contains("t0ken-pw") && !d.log().contains("eyJ"),
        "neither the password nor a token is logged"
    );
    // The registry really checked tokens: a request without one is refused.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", reg.port)).expect("connect");
    write!(
        c,
        "GET /v2/team/bb/manifests/1 HTTP/1.0\r\nHost: {}\r\n\r\n",
        reg.host()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.0 401"), "{answer}");
    assert!(
        answer.contains(&tokens.realm()),
        "the challenge names the realm: {answer}"
    );
}

#[test]
fn registry_over_tls_with_a_private_ca() {
    let Some(reg_bin) = peers() else { return };
    let Some(openssl) = peer("openssl") else {
        return;
    };
    // A private CA and a server certificate for 127.0.0.1 signed by it.
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    self_signed(
        &openssl,
        "berth-test-ca",
        std::path::Path::new(&p("ca.key")),
        std::path::Path::new(&ca),
    );
    for args in [
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &key,
            "-out",
            &p("server.csr"),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &ca,
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &cert,
        ],
    ] {
        run_openssl(&openssl, &args);
    }
    let (cert, key) = (
        std::path::PathBuf::from(&cert),
        std::path::PathBuf::from(&key),
    );
    let reg = Registry::start_with_tls(&reg_bin, &cert, &key);
    let d = Daemon::start_with_config(IMPATIENT);
    let remote = format!("{}/tls:1", reg.host());
    busybox_as(&d, &remote);
    // Plain HTTP (the localhost default) cannot talk to it.
    let err = fails(
        "push without the CA",
        d.berthctl("default", &["images", "push", &remote]),
    );
    assert!(err.contains("--ca-file"), "{err}");
    let ca = ca.as_str();
    ok(
        "push with --ca-file",
        d.berthctl("default", &["images", "push", "--ca-file", ca, &remote]),
    );
    ok(
        "rm",
        d.berthctl("default", &["images", "rm", "--sync", &remote]),
    );
    ok(
        "pull with --ca-file",
        d.berthctl("default", &["images", "pull", "--ca-file", ca, &remote]),
    );
    assert!(image_digest(&d, &remote).is_some());
}
