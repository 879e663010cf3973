//! `berthctl run` and the client side of task I/O: the OCI spec built from
//! the image and flags, FIFOs the shim connects the process to, signal
//! forwarding, terminals, and clean-up with `--rm`.

use crate::CtlError;
use crate::cli::RunArgs;
use crate::commands::Ctx;
use crate::image::{Lease, ensure_unpacked, resolve};
use anyhow::{Context as _, Result, bail};
use berth_proto::client::with_lease;
use berth_proto::services::containers::v1 as capi;
use berth_proto::services::containers::v1::containers_client::ContainersClient;
use berth_proto::services::snapshots::v1 as sapi;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::services::tasks::v1 as tapi;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

/// The capabilities containers get by default (as containerd gives).
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Raised to end the process with a container's exit code.
#[derive(Debug)]
pub struct ExitCode(pub i32);

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitCode {}

/// `--user`: `uid[:gid]` (numbers; names are looked up in the image's files
/// only by runtimes that mount it, so they are refused here).
fn parse_user(u: &str) -> Result<(u32, u32)> {
    let (a, b) = u.split_once(':').unwrap_or((u, ""));
    let uid: u32 = a
        .parse()
        .map_err(|_| CtlError(format!("--user {u:?}: give numeric uid[:gid]")))?;
    let gid: u32 = if b.is_empty() {
        0
    } else {
        b.parse()
            .map_err(|_| CtlError(format!("--user {u:?}: give numeric uid[:gid]")))?
    };
    Ok((uid, gid))
}

/// `--mount type=bind,src=/a,dst=/b,options=rbind:ro`.
fn parse_mount(m: &str) -> Result<Value> {
    let mut kv: HashMap<&str, &str> = HashMap::new();
    for part in m.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| CtlError(format!("--mount {m:?}: expected key=value pairs")))?;
        kv.insert(k, v);
    }
    let typ = kv.get("type").copied().unwrap_or("bind");
    let src = kv
        .get("src")
        .or(kv.get("source"))
        .copied()
        .unwrap_or_default();
    let dst = kv
        .get("dst")
        .or(kv.get("destination"))
        .or(kv.get("target"))
        .copied()
        .ok_or_else(|| CtlError(format!("--mount {m:?}: dst= is required")))?;
    let mut opts: Vec<String> = kv
        .get("options")
        .map(|o| o.split(':').map(String::from).collect())
        .unwrap_or_default();
    if typ == "bind" && !opts.iter().any(|o| o == "bind" || o == "rbind") {
        opts.push("rbind".into());
    }
    Ok(json!({"destination": dst, "type": typ, "source": src, "options": opts}))
}

/// The OCI spec for `args` of the run: containerd's defaults, the image's
/// configuration, then the flags.
pub fn build_spec(ns: &str, a: &RunArgs, image_cfg: &Value) -> Result<Value> {
    let icfg = &image_cfg["config"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    let mut args: Vec<String> = strings(&icfg["Entrypoint"]);
    if a.command.is_empty() {
        args.extend(strings(&icfg["Cmd"]));
    } else {
        args.extend(a.command.iter().cloned());
    }
    if args.is_empty() {
        bail!(CtlError(
            "the image has no command; give one after the container id".into()
        ));
    }
    let mut env: Vec<String> = strings(&icfg["Env"]);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    for e in &a.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if a.tty {
        env.push("TERM=xterm".into());
    }
    let cwd = a
        .cwd
        .clone()
        .or_else(|| {
            icfg["WorkingDir"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| "/".into());
    let (uid, gid) = match a
        .user
        .as_deref()
        .or_else(|| icfg["User"].as_str().filter(|s| !s.is_empty()))
    {
        Some(u) => parse_user(u)?,
        None => (0, 0),
    };
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
    ];
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if a.net_host {
        for f in ["/etc/hosts", "/etc/resolv.conf"] {
            if Path::new(f).exists() {
                mounts.push(json!({"destination": f, "type": "bind", "source": f, "options": ["rbind", "ro"]}));
            }
        }
    } else {
        namespaces.push(json!({"type": "network"}));
    }
    for m in &a.mounts {
        mounts.push(parse_mount(m)?);
    }
    let dev = |major: i64, minor: i64| json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"});
    let mut resources = json!({
        "devices": [
            {"allow": false, "access": "rwm"},
            dev(1, 3), dev(1, 8), dev(1, 7), dev(5, 0), dev(1, 5), dev(1, 9), dev(5, 1), dev(136, -1), dev(5, 2), dev(10, 200),
        ],
    });
    if let Some(m) = a.memory_limit {
        resources["memory"] = json!({"limit": m});
    }
    if let Some(c) = a.cpus {
        let period: u64 = 100_000;
        let quota = (c * period as f64).round();
        // Bounds checked so the cast below neither saturates nor wraps.
        if !(quota >= 1.0 && quota < i64::MAX as f64) {
            bail!("--cpus {c} is out of range");
        }
        // In 1..i64::MAX and integral: checked above.
        #[allow(clippy::cast_possible_truncation)]
        let quota = quota as i64;
        resources["cpu"] = json!({"quota": quota, "period": period});
    }
    if let Some(p) = a.pids_limit {
        resources["pids"] = json!({"limit": p});
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": a.tty,
            "user": {"uid": uid, "gid": gid, "additionalGids": [gid]},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs"},
        "hostname": a.hostname.clone().unwrap_or_else(|| a.id.chars().take(63).collect()),
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": format!("/{ns}/{}", a.id),
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    });
    if a.net_host {
        spec["hostname"] = Value::Null;
    }
    if a.tty
        && let Some((w, h)) = terminal_size()
    {
        spec["process"]["consoleSize"] = json!({"height": h, "width": w});
    }
    Ok(spec)
}

/// The FIFOs a process's I/O goes through.
pub struct Fifos {
    dir: PathBuf,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

impl Fifos {
    /// Makes FIFOs for `id` under the state directory.
    pub fn create(id: &str, stdin: bool, terminal: bool) -> Result<Fifos> {
        let base = std::env::var("BERTH_FIFO_DIR").unwrap_or_else(|_| "/run/berth/fifo".into());
        std::fs::create_dir_all(&base).with_context(|| format!("create {base}"))?;
        let dir = PathBuf::from(base).join(format!("{id}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mk = |name: &str| -> Result<String> {
            let p = dir.join(name);
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| CtlError(format!("mkfifo {}: {e}", p.display())))?;
            Ok(p.display().to_string())
        };
        Ok(Fifos {
            stdin: if stdin { mk("stdin")? } else { String::new() },
            stdout: mk("stdout")?,
            stderr: if terminal {
                String::new()
            } else {
                mk("stderr")?
            },
            dir,
        })
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies the process's output to ours (and our stdin to it).
pub struct Attached {
    outputs: Vec<tokio::task::JoinHandle<()>>,
}

impl Attached {
    /// Opens the FIFOs (readers never block; the writer keeps a read end so
    /// opening never waits) and starts copying.
    pub fn start(f: &Fifos, forward_stdin: bool) -> Result<Attached> {
        let mut outputs = Vec::new();
        for (path, err) in [(&f.stdout, false), (&f.stderr, true)] {
            if path.is_empty() {
                continue;
            }
            let mut rx = pipe::OpenOptions::new()
                .open_receiver(path)
                .with_context(|| format!("open {path}"))?;
            outputs.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 << 10];
                loop {
                    match rx.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let r = if err {
                                tokio::io::stderr().write_all(&buf[..n]).await
                            } else {
                                let mut o = tokio::io::stdout();
                                let r = o.write_all(&buf[..n]).await;
                                let _ = o.flush().await;
                                r
                            };
                            if r.is_err() {
                                return;
                            }
                        }
                    }
                }
            }));
        }
        let _ = forward_stdin;
        Ok(Attached { outputs })
    }

    /// Forwards our stdin once the shim has opened its end (after the task
    /// or exec was created): data written to a FIFO nobody reads is lost.
    /// At its end the process is told EOF through `CloseIO`: containerd's
    /// runc shim holds a write end of the FIFO itself, so closing ours is
    /// not enough there.
    pub fn forward_stdin(f: &Fifos, ctx: &Ctx, id: &str, exec_id: &str) -> Result<()> {
        if f.stdin.is_empty() {
            return Ok(());
        }
        // Read-write, so opening never fails for want of a reader: runc's
        // shim opens an exec's FIFOs only at Start, and a process may be
        // gone before we open.
        let mut tx = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&f.stdin)
            .with_context(|| format!("open {}", f.stdin))?;
        let mut tasks = TasksClient::new(ctx.ch.clone());
        let close = berth_proto::client::request(
            &ctx.ns,
            tapi::CloseIoRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: true,
            },
        );
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            // Let the shim read what is still in the FIFO first: a shim may
            // drop what it has not read when told to close.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while unread(&tx) > 0 && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            drop(tx);
            let _ = tasks.close_io(close).await;
        });
        Ok(())
    }

    /// Waits until the process's output is drained.
    pub async fn drain(self) {
        for o in self.outputs {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), o).await;
        }
    }
}

/// Bytes written to a FIFO that its reader has not taken yet.
fn unread(tx: &pipe::Sender) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD stores an int through the pointer we pass; the
    // descriptor is open for as long as `tx` lives.
    let r = unsafe { libc::ioctl(tx.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r == 0 { n } else { 0 }
}

/// Puts the local terminal in raw mode until dropped.
pub struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    pub fn enable() -> RawTerminal {
        let stdin = std::io::stdin();
        let Ok(orig) = nix::sys::termios::tcgetattr(&stdin) else {
            return RawTerminal(None);
        };
        let mut raw = orig.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
        RawTerminal(Some(orig))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(o) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                o,
            );
        }
    }
}

/// Our terminal's size, if stdin is one.
pub fn terminal_size() -> Option<(u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the struct we pass.
    let r = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some((u32::from(ws.ws_col), u32::from(ws.ws_row)))
}

/// Signals berthctl forwards, caught from before the process starts: one
/// that arrives while it is being created or started is held and passed on
/// once it runs, instead of killing berthctl half-way (which would leave
/// a `--rm` container behind).
pub struct CaughtSignals(Vec<(tokio::signal::unix::Signal, i32)>);

impl CaughtSignals {
    /// Starts catching; needs the tokio runtime.
    pub fn catch() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [
            (SignalKind::interrupt(), libc::SIGINT),
            (SignalKind::terminate(), libc::SIGTERM),
            (SignalKind::hangup(), libc::SIGHUP),
            (SignalKind::quit(), libc::SIGQUIT),
            (SignalKind::user_defined1(), libc::SIGUSR1),
            (SignalKind::user_defined2(), libc::SIGUSR2),
            (SignalKind::window_change(), libc::SIGWINCH),
        ];
        Self(
            kinds
                .iter()
                .filter_map(|(k, n)| signal(*k).ok().map(|s| (s, *n)))
                .collect(),
        )
    }

    /// The next signal caught.
    async fn any(&mut self) -> i32 {
        let futs = self.0.iter_mut().map(|(s, n)| {
            let n = *n;
            Box::pin(async move {
                s.recv().await;
                n
            })
        });
        futures::future::select_all(futs).await.0
    }

    /// The next signal other than a window change.
    pub async fn next(&mut self) -> i32 {
        loop {
            let sig = self.any().await;
            if sig != libc::SIGWINCH {
                return sig;
            }
        }
    }

    /// Forwards the signals (those held first) to the process until the
    /// returned task is aborted; on a terminal, keeps its size in step
    /// with ours.
    pub fn forward(
        self,
        ctx: &Ctx,
        id: &str,
        exec_id: &str,
        tty: bool,
    ) -> tokio::task::JoinHandle<()> {
        let ch = ctx.ch.clone();
        let ns = ctx.ns.clone();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        let mut caught = self;
        tokio::spawn(async move {
            let mut tasks = TasksClient::new(ch);
            loop {
                let sig = caught.any().await;
                if sig == libc::SIGWINCH {
                    if tty && let Some((w, h)) = terminal_size() {
                        let _ = tasks
                            .resize_pty(berth_proto::client::request(
                                &ns,
                                tapi::ResizePtyRequest {
                                    container_id: id.clone(),
                                    exec_id: exec_id.clone(),
                                    width: w,
                                    height: h,
                                },
                            ))
                            .await;
                    }
                    continue;
                }
                let _ = tasks
                    .kill(berth_proto::client::request(
                        &ns,
                        tapi::KillRequest {
                            container_id: id.clone(),
                            exec_id: exec_id.clone(),
                            signal: sig as u32,
                            all: false,
                        },
                    ))
                    .await;
            }
        })
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tonic::Status>()
        .is_some_and(|s| s.code() == tonic::Code::NotFound)
}

/// `berthctl run`.
pub async fn run(ctx: &Ctx, a: RunArgs) -> Result<()> {
    if a.rm && a.detach {
        bail!(CtlError("--rm and --detach cannot be used together".into()));
    }
    // Like nerdctl: an image stored under the exact name wins (imports
    // without a registry name), otherwise the docker-normalized name.
    let img = match resolve(ctx, &a.image, a.platform.as_deref()).await {
        Err(e) if is_not_found(&e) => {
            let name = berth_proto::reference::normalize(&a.image).map_err(CtlError)?;
            if name == a.image {
                return Err(e);
            }
            resolve(ctx, &name, a.platform.as_deref()).await?
        }
        r => r?,
    };
    let snapshotter = ctx.snapshotter.clone();
    let lease = Lease::create(ctx).await?;
    // From here on a signal must not end berthctl half-way: during setup
    // it stops the run and removes what was made; once the task exists it
    // is forwarded to it (see run_task).
    let mut caught = CaughtSignals::catch();
    let created = std::sync::atomic::AtomicBool::new(false);
    let setup = async {
        ensure_unpacked(ctx, &img, &snapshotter, &lease).await?;
        let spec = build_spec(&ctx.ns, &a, &img.config)?;
        let mounts = SnapshotsClient::new(ctx.ch.clone())
            .prepare(with_lease(
                ctx.req(sapi::PrepareSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    key: a.id.clone(),
                    parent: img.top().to_string(),
                    labels: HashMap::new(),
                }),
                &lease.id,
            ))
            .await?
            .into_inner()
            .mounts;
        let container = capi::Container {
            id: a.id.clone(),
            labels: a
                .labels
                .iter()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            image: img.name.clone(),
            runtime: Some(capi::container::Runtime {
                name: a.runtime.clone(),
                options: a.runc_binary.as_ref().map(|b| {
                    berth_proto::typeurl::pack(&berth_proto::pb::containerd::runc::v1::Options {
                        binary_name: b.clone(),
                        ..Default::default()
                    })
                }),
            }),
            spec: Some(prost_types::Any {
                type_url: berth_proto::typeurl::OCI_SPEC_URL.into(),
                value: serde_json::to_vec(&spec)?,
            }),
            snapshotter: snapshotter.clone(),
            snapshot_key: a.id.clone(),
            ..Default::default()
        };
        ContainersClient::new(ctx.ch.clone())
            .create(ctx.req(capi::CreateContainerRequest {
                container: Some(container),
            }))
            .await?;
        created.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok::<_, anyhow::Error>(mounts)
    };
    let setup = tokio::select! {
        r = setup => r,
        sig = caught.next() => {
            // The snapshot is only under our lease until the container
            // exists; after that the container is ours to remove.
            if created.load(std::sync::atomic::Ordering::Relaxed) {
                cleanup(ctx, &a.id, &snapshotter).await;
            }
            lease.done(ctx).await;
            eprintln!("berthctl: interrupted before {} started; nothing was left behind", a.id);
            return Err(ExitCode(128 + sig).into());
        }
    };
    let mounts = match setup {
        Ok(m) => m,
        Err(e) => {
            lease.done(ctx).await;
            return Err(e);
        }
    };
    lease.done(ctx).await;
    let code = run_task(ctx, &a, mounts, caught).await;
    if a.rm {
        cleanup(ctx, &a.id, &snapshotter).await;
    }
    match code? {
        0 => Ok(()),
        c => Err(ExitCode(c as i32).into()),
    }
}

async fn run_task(
    ctx: &Ctx,
    a: &RunArgs,
    rootfs: Vec<berth_proto::types::Mount>,
    caught: CaughtSignals,
) -> Result<u32> {
    let mut tasks = TasksClient::new(ctx.ch.clone());
    let interactive = a.interactive || a.tty;
    let fifos = if a.detach {
        None
    } else {
        Some(Fifos::create(&a.id, interactive, a.tty)?)
    };
    let attached = match &fifos {
        Some(f) => Some(Attached::start(f, interactive)?),
        None => None,
    };
    // Detached tasks log to a file the shim appends to; `tasks attach` follows it.
    let log = format!(
        "file://{}/{}/{}.log",
        std::env::var("BERTH_LOG_DIR").unwrap_or_else(|_| "/var/log/berth".into()),
        ctx.ns,
        a.id
    );
    let (stdin, stdout, stderr) = fifos.as_ref().map_or_else(
        || {
            (
                String::new(),
                log.clone(),
                if a.tty { String::new() } else { log.clone() },
            )
        },
        |f| (f.stdin.clone(), f.stdout.clone(), f.stderr.clone()),
    );
    let caught = (!a.detach).then_some(caught);
    tasks
        .create(ctx.req(tapi::CreateTaskRequest {
            container_id: a.id.clone(),
            rootfs,
            stdin,
            stdout,
            stderr,
            terminal: a.tty,
            ..Default::default()
        }))
        .await?;
    if interactive && let Some(f) = &fifos {
        Attached::forward_stdin(f, ctx, &a.id, "")?;
    }
    // Wait before start, so even an instant exit is seen.
    let waiter = (!a.detach).then(|| {
        let mut t = tasks.clone();
        let req = ctx.req(tapi::WaitRequest {
            container_id: a.id.clone(),
            exec_id: String::new(),
        });
        tokio::spawn(async move { t.wait(req).await })
    });
    let _raw = (a.tty && std::io::stdin().is_terminal()).then(RawTerminal::enable);
    tasks
        .start(ctx.req(tapi::StartRequest {
            container_id: a.id.clone(),
            exec_id: String::new(),
        }))
        .await?;
    if a.detach {
        println!("{}", a.id);
        return Ok(0);
    }
    if a.tty
        && let Some((w, h)) = terminal_size()
    {
        let _ = tasks
            .resize_pty(ctx.req(tapi::ResizePtyRequest {
                container_id: a.id.clone(),
                exec_id: String::new(),
                width: w,
                height: h,
            }))
            .await;
    }
    let fwd = caught.map(|c| c.forward(ctx, &a.id, "", a.tty));
    let w = match waiter {
        Some(h) => h.await.map_err(|e| CtlError(format!("wait: {e}")))?,
        None => return Ok(0),
    };
    if let Some(f) = fwd {
        f.abort();
    }
    if let Some(at) = attached {
        at.drain().await;
    }
    Ok(w?.into_inner().exit_status)
}

/// Removes a run's task, container and snapshot.
pub async fn cleanup(ctx: &Ctx, id: &str, snapshotter: &str) {
    let _ = TasksClient::new(ctx.ch.clone())
        .delete(ctx.req(tapi::DeleteTaskRequest {
            container_id: id.into(),
        }))
        .await;
    let _ = ContainersClient::new(ctx.ch.clone())
        .delete(ctx.req(capi::DeleteContainerRequest { id: id.into() }))
        .await;
    let _ = SnapshotsClient::new(ctx.ch.clone())
        .remove(ctx.req(sapi::RemoveSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: id.into(),
        }))
        .await;
}
