//! Test harness: start real daemons on temp directories, build the image
//! fixtures once per run, and find the real peers (`ctr`, …).
//!
//! A peer that is not installed makes its test print `SKIPPED: …` with the
//! reason; with `BERTH_REQUIRE_PEERS=1` (set by CI) it fails instead.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub mod bench;
pub mod conformance;
pub mod containerd;
pub mod dockerd;
pub mod guard;
pub mod registry;
pub mod token;

pub use guard::remove_cgroups;

/// The workspace's target directory for this profile (where `berthd` is).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Tests run from target/<profile>/deps, binaries from target/<profile>.
    let dir = exe.parent().expect("exe has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of one of the workspace's binaries; panics with the fix if absent.
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (tests/run does)",
        p.display()
    );
    p
}

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Directory with the image fixtures, built once per run (shared between
/// test binaries through a lock file).
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = target_dir().join("berth-fixtures");
        let script = repo_root().join("tests/fixtures/make-fixtures.sh");
        let lock = target_dir().join("berth-fixtures.lock");
        let st = Command::new("flock")
            .arg(&lock)
            .arg("bash")
            .arg(&script)
            .arg(&out)
            .status()
            .expect("run flock make-fixtures.sh");
        assert!(st.success(), "make-fixtures.sh failed");
        out
    })
}

/// The interop corpus (`tests/fixtures/make-corpus.sh`): the same changes
/// made on the busybox fixture by umoci, buildah, skopeo and GNU tar, built
/// once per run. `None` (SKIPPED, or a failure under BERTH_REQUIRE_PEERS)
/// when a builder is not installed or we are not root.
pub fn corpus() -> Option<&'static Path> {
    for tool in ["umoci", "buildah", "skopeo", "runc"] {
        peer(tool)?;
    }
    if !require_root("building the corpus (buildah RUN, umoci owners)") {
        return None;
    }
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    Some(DIR.get_or_init(|| {
        let out = target_dir().join("berth-corpus");
        let script = repo_root().join("tests/fixtures/make-corpus.sh");
        let lock = target_dir().join("berth-corpus.lock");
        let st = Command::new("flock")
            .arg(&lock)
            .arg("bash")
            .arg(&script)
            .arg(&out)
            .arg(fixtures())
            .status()
            .expect("run flock make-corpus.sh");
        assert!(st.success(), "make-corpus.sh failed");
        out
    }))
}

/// A digest recorded by the fixture script (`manifest`, `config`, `layer`, `index`).
pub fn fixture_digest(name: &str) -> String {
    let env = std::fs::read_to_string(fixtures().join("digests.env")).expect("digests.env");
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in digests.env"))
        .to_string()
}

/// Finds a peer program, or reports the skip loudly.
pub fn peer(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        missing_peer(name);
    }
    found
}

/// Like [`peer`], for a peer that must be this very file: one of the same
/// name earlier on PATH would be another program (e.g. a newer docker CLI).
pub fn peer_at(path: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    if p.is_file() {
        Some(p)
    } else {
        missing_peer(path);
        None
    }
}

fn missing_peer(name: &str) {
    if std::env::var("BERTH_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("required peer {name:?} is not installed (BERTH_REQUIRE_PEERS=1)");
    }
    eprintln!("SKIPPED: {name} is not installed; install it (see .ci/run) to run this test");
}

/// True when running as root; otherwise reports the skip loudly.
pub fn require_root(what: &str) -> bool {
    let root = nix_is_root();
    if !root {
        if std::env::var("BERTH_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{what} needs root (BERTH_REQUIRE_PEERS=1)");
        }
        eprintln!("SKIPPED: {what} needs root");
    }
    root
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A berthd running on its own temp root, state and socket.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    /// Starts a daemon and waits until its socket answers.
    pub fn start() -> Daemon {
        Self::start_with_config("")
    }

    /// Starts a daemon with `toml` as its configuration file.
    pub fn start_with_config(toml: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("tempdir");
        if !toml.is_empty() {
            std::fs::write(dir.path().join("config.toml"), toml).expect("write config");
        }
        let sock = dir.path().join("berth.sock");
        let mut d = Daemon {
            dir,
            sock,
            child: None,
            starts: 0,
        };
        d.spawn();
        d
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `unix://` address of the gRPC socket.
    pub fn address(&self) -> String {
        self.sock.display().to_string()
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.path().join(format!("berthd.{}.log", self.starts)))
                .expect("log file");
        let child = Command::new(bin("berthd"))
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--address")
            .arg(&self.sock)
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        self.child = Some(child);
        let child = self.child.as_mut().expect("just spawned");
        if let Err(e) = wait_listening("berthd", &self.sock, Duration::from_secs(20), child) {
            panic!("{e}:\n{}", self.log());
        }
    }

    /// Everything the daemon has logged, across restarts.
    pub fn log(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.starts {
            if let Ok(mut f) = std::fs::File::open(self.dir.path().join(format!("berthd.{i}.log")))
            {
                let _ = f.read_to_string(&mut s);
            }
        }
        s
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILLs the daemon (a crash) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the daemon and waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        terminate(&mut c, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("berthd ignored SIGTERM for 10s"))
    }

    /// Starts the daemon again on the same directories.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the daemon first");
        self.spawn();
    }

    /// A gRPC channel to the daemon.
    pub async fn channel(&self) -> Channel {
        berth_proto::client::connect(&self.address())
            .await
            .expect("connect to berthd")
    }

    /// Runs the real `ctr` against this daemon.
    pub fn ctr(&self, ctr: &Path, ns: &str, args: &[&str]) -> Output {
        Command::new(ctr)
            .arg("--address")
            .arg(&self.sock)
            .arg("--namespace")
            .arg(ns)
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// Runs `berthctl` against this daemon.
    pub fn berthctl(&self, ns: &str, args: &[&str]) -> Output {
        self.berthctl_command(ns, args)
            .output()
            .expect("run berthctl")
    }

    /// berthctl against this daemon, to spawn and talk to while it runs.
    pub fn berthctl_command(&self, ns: &str, args: &[&str]) -> Command {
        berthctl_at(&self.sock, self.dir.path(), ns, args)
    }

    /// Imports an image archive into namespace `default` (`extra` flags go
    /// before the file); returns berthctl's output.
    pub fn import(&self, archive: &Path, extra: &[&str]) -> String {
        let mut args = vec!["images", "import"];
        args.extend_from_slice(extra);
        let file = archive.to_str().expect("utf-8 path");
        args.push(file);
        ok(&format!("import {file}"), self.berthctl("default", &args))
    }

    /// Runs `berthctl` on a fresh pseudo-terminal of `cols`x`rows` made by
    /// `script(1)` (the `script` peer), as an operator at a terminal would.
    pub fn berthctl_in_terminal(
        &self,
        script: &Path,
        (cols, rows): (u16, u16),
        args: &[&str],
    ) -> Output {
        let quote = |a: &str| format!("'{}'", a.replace('\'', "'\\''"));
        let mut cmd = format!(
            "stty cols {cols} rows {rows}; exec {} --address {} --namespace default",
            quote(bin("berthctl").to_str().unwrap()),
            quote(self.sock.to_str().unwrap()),
        );
        for a in args {
            cmd.push(' ');
            cmd.push_str(&quote(a));
        }
        Command::new(script)
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .env_remove("BERTH_ADDRESS")
            .env_remove("BERTH_NAMESPACE")
            .env("BERTH_FIFO_DIR", self.dir.path().join("fifo"))
            .env("BERTH_LOG_DIR", self.dir.path().join("logs"))
            .output()
            .expect("run script")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // A test that failed midway leaves shims (they outlive berthd by
        // design), their containers and mounts behind.
        guard::after_daemon(&self.sock, self.dir.path());
    }
}

/// `berthctl` against the API socket `sock` in namespace `ns`, blind to the
/// caller's `BERTH_*` settings, its FIFOs and logs under `dir`.
pub fn berthctl_at(sock: &Path, dir: &Path, ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin("berthctl"));
    c.arg("--address")
        .arg(sock)
        .arg("--namespace")
        .arg(ns)
        .args(args)
        .env_remove("BERTH_ADDRESS")
        .env_remove("BERTH_NAMESPACE")
        .env_remove("BERTH_SNAPSHOTTER")
        .env("BERTH_FIFO_DIR", dir.join("fifo"))
        .env("BERTH_LOG_DIR", dir.join("logs"));
    c
}

/// Waits until `child` (a daemon called `what`) accepts connections on
/// `sock`; says why not when it exits first or takes over `limit` (the
/// caller adds its log; the child is left to the caller's Drop).
pub fn wait_listening(
    what: &str,
    sock: &Path,
    limit: Duration,
    child: &mut Child,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("{what} exited during start ({st})"));
        }
        if Instant::now() >= deadline {
            return Err(format!("{what} did not listen within {}s", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Stops `child` with SIGTERM and reaps it; one still running after
/// `grace` is SIGKILLed and reaped, and the answer is None.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    // SAFETY: signalling our own child by pid, not yet reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Runs `cmd` with `input` on its stdin and collects its output, or kills
/// it and answers None when it runs longer than `limit`.
pub fn output_within(mut cmd: Command, input: &[u8], limit: Duration) -> Option<Output> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // Feed and drain on threads: a full pipe must not stall the deadline.
    let feed = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = feed.join();
    Some(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Runs the `openssl` CLI; panics with its output when it fails.
pub fn run_openssl(openssl: &Path, args: &[&str]) {
    let o = Command::new(openssl).args(args).output().expect("openssl");
    assert!(o.status.success(), "openssl {args:?}: {o:?}");
}

/// A self-signed RSA certificate for `cn`, valid for a day (PEM key and
/// certificate, as a test CA or token issuer needs).
pub fn self_signed(openssl: &Path, cn: &str, key: &Path, cert: &Path) {
    run_openssl(
        openssl,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            key.to_str().expect("utf-8 path"),
            "-out",
            cert.to_str().expect("utf-8 path"),
        ],
    );
}

/// Asserts a command succeeded, showing its output otherwise; returns stdout.
pub fn ok(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// Asserts a command failed; returns its stderr.
pub fn fails(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "{what} unexpectedly succeeded:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stderr
}

/// sha256 of bytes, as `sha256:<hex>`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Every committed blob on disk hashes to its name (none is partial).
pub fn assert_blobs_intact(root: &Path) {
    let dir = root.join("content/blobs/sha256");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in rd {
        let e = e.expect("entry");
        let data = std::fs::read(e.path()).expect("read blob");
        let name = e.file_name().to_string_lossy().to_string();
        assert_eq!(
            sha256(&data),
            format!("sha256:{name}"),
            "blob {name} under blobs/ does not match its digest (partial write visible)"
        );
    }
}

/// Names of the blobs on disk.
pub fn blobs_on_disk(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("content/blobs/sha256"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads one file out of a tar archive.
pub fn tar_member(archive: &Path, member: &str) -> Option<Vec<u8>> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// A layer tar built from `(path, contents)` files (directories implied).
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, p, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

/// An OCI image layout tar with the given uncompressed layers (gzipped
/// inside), tagged `tag`. `diff_ids` overrides the config's diff IDs.
pub fn oci_image(layers: &[Vec<u8>], tag: &str, diff_ids: Option<Vec<String>>) -> Vec<u8> {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let manifest = image_manifest(&mut blobs, layers, host_arch(), diff_ids);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest),
            "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))
    .expect("json");
    blobs.push((sha256(&manifest), manifest));
    image_layout(&blobs, &index)
}

/// An OCI image-layout tar holding a multi-platform image tagged `tag`: one
/// manifest per `(architecture, layers)` entry (linux), under an index.
pub fn oci_multi_platform_image(entries: &[(&str, Vec<Vec<u8>>)], tag: &str) -> Vec<u8> {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifests = Vec::new();
    for (arch, layers) in entries {
        let m = image_manifest(&mut blobs, layers, arch, None);
        manifests.push(serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&m), "size": m.len(), "platform": {"os": "linux", "architecture": arch}}));
        blobs.push((sha256(&m), m));
    }
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests,
    }))
    .expect("json");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(&inner),
            "size": inner.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))
    .expect("json");
    blobs.push((sha256(&inner), inner));
    image_layout(&blobs, &index)
}

/// Adds gzipped `layers` and a config for `arch` to `blobs`; returns the
/// manifest (not yet added).
fn image_manifest(
    blobs: &mut Vec<(String, Vec<u8>)>,
    layers: &[Vec<u8>],
    arch: &str,
    diff_ids: Option<Vec<String>>,
) -> Vec<u8> {
    use std::io::Write;
    let mut descs = Vec::new();
    let mut ids = Vec::new();
    for l in layers {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(l).expect("gzip");
        let gz = gz.finish().expect("gzip");
        ids.push(sha256(l));
        descs.push(
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256(&gz), "size": gz.len()}),
        );
        blobs.push((sha256(&gz), gz));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.unwrap_or(ids)},
    }))
    .expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": descs,
    }))
    .expect("json");
    blobs.push((sha256(&config), config));
    manifest
}

fn image_layout(blobs: &[(String, Vec<u8>)], index: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("append");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for (d, data) in blobs {
        add(&format!("blobs/sha256/{}", &d[7..]), data);
    }
    add("index.json", index);
    b.into_inner().expect("tar")
}

/// The host's architecture in OCI terms.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
