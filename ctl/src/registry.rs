//! `images pull`, `images push` and `images tag`. Pull and push run in the
//! daemon (Transfer service, as containerd 2's clients do); berthctl
//! answers the daemon's credential requests on an auth stream and shows
//! the progress it streams back.

use crate::cli::{PullArgs, PushArgs, RegistryArgs};
use crate::ctx::{Ctx, interactive};
use crate::error::CtlError;
use crate::image::platform;
use crate::transfer::{Stream, lacks_transfer, needs_transfer, open};
use anyhow::{Context as _, Result};
use base64::Engine as _;
use berth_proto::pb::containerd::types::transfer as tt;
use berth_proto::services::images::v1 as images;
use berth_proto::services::images::v1::images_client::ImagesClient;
use berth_proto::services::transfer::v1::transfer_client::TransferClient;
use berth_proto::services::transfer::v1::{TransferOptions, TransferRequest};
use berth_proto::typeurl;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use tokio_stream::StreamExt;

/// Credentials for `host`: `--user`, else docker's config.json.
fn credentials(args: &RegistryArgs, host: &str) -> Result<Option<(String, String)>> {
    if let Some(u) = &args.user {
        return Ok(Some(match u.split_once(':') {
            Some((user, pass)) => (user.to_string(), pass.to_string()),
            None => (u.clone(), read_password(u, host)?),
        }));
    }
    docker_config_credentials(host)
}

fn read_password(user: &str, host: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CtlError(format!(
            "--user {user} has no password and there is no terminal to ask on: pass --user {user}:PASSWORD"
        ))
        .into());
    }
    eprint!("Password for {user}@{host}: ");
    let orig = nix::sys::termios::tcgetattr(&stdin).context("read terminal settings")?;
    let mut quiet = orig.clone();
    quiet
        .local_flags
        .remove(nix::sys::termios::LocalFlags::ECHO);
    nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &quiet)?;
    let mut line = String::new();
    let r = stdin.read_line(&mut line);
    let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &orig);
    eprintln!();
    r.context("read password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Looks `host` up in docker's config.json the way docker does: its
/// credential helper (`credHelpers[host]`, else `credsStore`) first, then
/// the credentials stored inline under `auths`.
fn docker_config_credentials(host: &str) -> Result<Option<(String, String)>> {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => PathBuf::from(d).join("config.json"),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".docker/config.json"),
            None => return Ok(None),
        },
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let mut keys = vec![
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
    ];
    if host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io" {
        // Where `docker login` files Docker Hub.
        keys.insert(0, "https://index.docker.io/v1/".into());
    }
    let helper = v
        .get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| keys.iter().find_map(|k| h.get(k)))
        .or_else(|| v.get("credsStore"))
        .and_then(|h| h.as_str())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        for k in &keys {
            if let Some(c) = run_credential_helper(helper, k)? {
                return Ok(Some(c));
            }
        }
    }
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let Some(entry) = keys.iter().find_map(|k| {
        auths
            .get(k)
            .or_else(|| auths.get(&format!("{k}/")))
            .and_then(|e| e.as_object())
    }) else {
        return Ok(None);
    };
    if let Some(a) = entry.get("auth").and_then(|a| a.as_str())
        && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(a)
        && let Ok(text) = String::from_utf8(raw)
        && let Some((u, p)) = text.split_once(':')
    {
        return Ok(Some((u.to_string(), p.to_string())));
    }
    let u = entry.get("username").and_then(|u| u.as_str());
    let p = entry.get("password").and_then(|p| p.as_str());
    Ok(u.zip(p).map(|(u, p)| (u.to_string(), p.to_string())))
}

/// `docker-credential-<helper> get` for `server`: the docker credential
/// helper protocol (server URL on stdin, `{"Username","Secret"}` JSON on
/// stdout; "not found" is a failure whose output says so).
fn run_credential_helper(helper: &str, server: &str) -> Result<Option<(String, String)>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CtlError(format!(
                "docker config.json names credential helper {helper:?}, but {program} cannot run ({e}): install it, or pass --user"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits early closes its stdin; its answer says why.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("run {program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let said = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(CtlError(format!(
            "credential helper {program} failed for {server}: {}",
            said.trim()
        ))
        .into());
    }
    let v: serde_json::Value = serde_json::from_str(&stdout).map_err(|e| {
        CtlError(format!(
            "credential helper {program} answered something other than JSON for {server}: {e}"
        ))
    })?;
    let user = v.get("Username").and_then(|u| u.as_str()).unwrap_or("");
    let secret = v.get("Secret").and_then(|s| s.as_str()).unwrap_or("");
    if user == "<token>" {
        // An identity (OAuth refresh) token, which the registry client
        // cannot exchange.
        return Err(CtlError(format!(
            "credential helper {program} holds an identity token for {server}, which berth cannot use: pass --user USER:PASSWORD"
        ))
        .into());
    }
    if user.is_empty() && secret.is_empty() {
        return Ok(None);
    }
    Ok(Some((user.to_string(), secret.to_string())))
}

/// Answers the daemon's credential requests until it closes the stream.
fn serve_auth(mut s: Stream, args: RegistryArgs) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(msg)) = s.rx.next().await {
            let Some(req) = typeurl::unpack::<tt::AuthRequest>(&msg) else {
                continue;
            };
            let resp = match tokio::task::block_in_place(|| credentials(&args, &req.host)) {
                Ok(Some((username, secret))) => tt::AuthResponse {
                    auth_type: tt::AuthType::Credentials as i32,
                    username,
                    secret,
                    ..Default::default()
                },
                Ok(None) => tt::AuthResponse::default(),
                Err(e) => {
                    eprintln!("berthctl: {e}");
                    tt::AuthResponse::default()
                }
            };
            if s.tx.send(typeurl::pack(&resp)).await.is_err() {
                return;
            }
        }
    })
}

/// A `--ca-file` handed to the daemon as a certs.d directory holding it
/// for the registry's host (the daemon runs on this machine).
struct HostDir {
    // Removed when the transfer is done.
    _dir: Option<tempfile::TempDir>,
    path: String,
}

fn host_dir(args: &RegistryArgs, host: &str) -> Result<HostDir> {
    match (&args.ca_file, &args.hosts_dir) {
        (Some(_), Some(_)) => {
            Err(CtlError("--ca-file and --hosts-dir cannot be used together".into()).into())
        }
        (None, Some(d)) => Ok(HostDir {
            _dir: None,
            path: std::fs::canonicalize(d)
                .with_context(|| format!("--hosts-dir {}", d.display()))?
                .display()
                .to_string(),
        }),
        (Some(ca), None) => {
            let pem =
                std::fs::read(ca).with_context(|| format!("read --ca-file {}", ca.display()))?;
            let dir = tempfile::Builder::new()
                .prefix("berthctl-certs-")
                .tempdir()?;
            let h = dir.path().join(host);
            std::fs::create_dir_all(&h)?;
            std::fs::write(h.join("ca.crt"), pem)?;
            Ok(HostDir {
                path: dir.path().display().to_string(),
                _dir: Some(dir),
            })
        }
        (None, None) => Ok(HostDir {
            _dir: None,
            path: String::new(),
        }),
    }
}

/// Registry host of a normalized reference.
fn host_of(reference: &str) -> String {
    berth_proto::reference::Reference::parse(reference)
        .map(|r| r.domain)
        .unwrap_or_default()
}

struct Prepared {
    resolver: tt::RegistryResolver,
    auth: tokio::task::JoinHandle<()>,
    progress: Stream,
    _host_dir: HostDir,
}

/// `command` ("pull", "push") names what needs the Transfer service.
async fn prepare(
    ctx: &Ctx,
    args: &RegistryArgs,
    reference: &str,
    command: &str,
) -> Result<Prepared> {
    let auth = match open(ctx, "auth").await {
        Err(e) if lacks_transfer(&e) => {
            // Registry access runs in the daemon; berthctl has no client-side
            // registry client to fall back on.
            return Err(needs_transfer(
                ctx,
                &format!("images {command}"),
                &format!("`ctr images {command}`"),
            )
            .await);
        }
        r => r?,
    };
    let hd = host_dir(args, &host_of(reference))?;
    let progress = open(ctx, "progress").await?;
    let resolver = tt::RegistryResolver {
        auth_stream: auth.id.clone(),
        default_scheme: if args.plain_http {
            "http".into()
        } else {
            String::new()
        },
        host_dir: hd.path.clone(),
        ..Default::default()
    };
    Ok(Prepared {
        resolver,
        auth: serve_auth(auth, args.clone()),
        progress,
        _host_dir: hd,
    })
}

pub async fn pull(ctx: &Ctx, a: PullArgs) -> Result<()> {
    let name = berth_proto::reference::normalize(&a.reference).map_err(CtlError)?;
    let p = prepare(ctx, &a.registry, &name, "pull").await?;
    let platforms = a
        .platform
        .iter()
        .map(|s| platform(s))
        .collect::<Result<Vec<_>>>()?;
    let mut store = tt::ImageStore {
        name: name.clone(),
        platforms: platforms.clone(),
        all_metadata: a.all_platforms,
        ..Default::default()
    };
    if !a.no_unpack {
        if platforms.is_empty() {
            store.unpacks.push(tt::UnpackConfiguration {
                platform: None,
                snapshotter: ctx.snapshotter.clone(),
            });
        }
        for pl in &platforms {
            store.unpacks.push(tt::UnpackConfiguration {
                platform: Some(pl.clone()),
                snapshotter: ctx.snapshotter.clone(),
            });
        }
    }
    let req = TransferRequest {
        source: Some(typeurl::pack(&tt::OciRegistry {
            reference: name.clone(),
            resolver: Some(p.resolver.clone()),
        })),
        destination: Some(typeurl::pack(&store)),
        options: Some(TransferOptions {
            progress_stream: p.progress.id.clone(),
        }),
    };
    run(ctx, req, p).await?;
    if ctx.format == crate::cli::Format::Json {
        // One object, the image as stored (progress went to stderr).
        let v = crate::output::images_json(&ctx.ch, &ctx.ns, std::slice::from_ref(&name)).await?;
        let img = v.as_array().and_then(|a| a.first()).cloned();
        println!("{}", serde_json::to_string_pretty(&img)?);
    } else {
        println!("{name}");
    }
    Ok(())
}

pub async fn push(ctx: &Ctx, a: PushArgs) -> Result<()> {
    let local = crate::image::local_name(ctx, &a.reference).await?;
    let target = berth_proto::reference::normalize(&a.reference).map_err(CtlError)?;
    let p = prepare(ctx, &a.registry, &target, "push").await?;
    let store = tt::ImageStore {
        name: local,
        platforms: a
            .platform
            .iter()
            .map(|s| platform(s))
            .collect::<Result<_>>()?,
        ..Default::default()
    };
    let req = TransferRequest {
        source: Some(typeurl::pack(&store)),
        destination: Some(typeurl::pack(&tt::OciRegistry {
            reference: target.clone(),
            resolver: Some(p.resolver.clone()),
        })),
        options: Some(TransferOptions {
            progress_stream: p.progress.id.clone(),
        }),
    };
    run(ctx, req, p).await?;
    if ctx.format == crate::cli::Format::Json {
        // What was pushed where; the digest is the local image's unless
        // platforms were picked (then the registry holds a subset).
        let img = ImagesClient::new(ctx.ch.clone())
            .get(ctx.req(images::GetImageRequest {
                name: store.name.clone(),
            }))
            .await?
            .into_inner()
            .image
            .unwrap_or_default();
        let digest = img
            .target
            .filter(|_| a.platform.is_none())
            .map(|t| t.digest);
        let v = serde_json::json!({"reference": target, "image": store.name, "digest": digest});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{target}");
    }
    Ok(())
}

/// Runs the transfer while showing its progress.
async fn run(ctx: &Ctx, req: TransferRequest, p: Prepared) -> Result<()> {
    let shown = show_progress(p.progress, ctx.format);
    let result = TransferClient::new(ctx.ch.clone())
        .transfer(ctx.req(req))
        .await;
    let _ = shown.await;
    p.auth.abort();
    result?;
    Ok(())
}

pub async fn tag(ctx: &Ctx, source: &str, target: &str, force: bool) -> Result<()> {
    let src = crate::image::local_name(ctx, source).await?;
    let dst = berth_proto::reference::normalize(target).map_err(CtlError)?;
    let mut ic = ImagesClient::new(ctx.ch.clone());
    let mut img = ic
        .get(ctx.req(images::GetImageRequest { name: src }))
        .await?
        .into_inner()
        .image
        .unwrap_or_default();
    img.name = dst.clone();
    img.created_at = None;
    img.updated_at = None;
    match ic
        .create(ctx.req(images::CreateImageRequest {
            image: Some(img.clone()),
            ..Default::default()
        }))
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::AlreadyExists && force => {
            ic.update(ctx.req(images::UpdateImageRequest {
                image: Some(img),
                ..Default::default()
            }))
            .await?;
        }
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            return Err(CtlError(format!(
                "image {dst} already exists: use --force to replace it"
            ))
            .into());
        }
        Err(s) => return Err(s.into()),
    }
    println!("{dst}");
    Ok(())
}

/// Shows the daemon's progress reports: a bar per blob on a terminal,
/// one line per finished step otherwise.
fn show_progress(mut s: Stream, format: crate::cli::Format) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tty = interactive() && format != crate::cli::Format::Json;
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{prefix:30} {msg:11} [{bar:25}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let mut bars: HashMap<String, ProgressBar> = HashMap::new();
        while let Some(Ok(msg)) = s.rx.next().await {
            let Some(p) = typeurl::unpack::<tt::Progress>(&msg) else {
                continue;
            };
            let short = short_name(&p.name);
            let is_blob = p.total > 0 || p.desc.is_some() && p.name.contains("sha256:");
            if tty && is_blob && p.name.contains("sha256:") {
                let pb = bars.entry(p.name.clone()).or_insert_with(|| {
                    let pb = multi.add(ProgressBar::new(p.total.max(0) as u64));
                    pb.set_style(style.clone());
                    pb.set_prefix(short.clone());
                    pb
                });
                if p.total > 0 {
                    pb.set_length(p.total as u64);
                }
                pb.set_position(p.progress.max(0) as u64);
                pb.set_message(p.event.clone());
                if matches!(p.event.as_str(), "complete" | "exists" | "mounted") {
                    pb.finish();
                }
                continue;
            }
            if matches!(p.event.as_str(), "downloading" | "uploading" | "waiting") {
                continue;
            }
            let detail = match (&p.desc, p.total) {
                _ if p.event == "resuming" => format!(" at byte {} of {}", p.progress, p.total),
                (Some(d), _) if matches!(p.event.as_str(), "resolved" | "saved" | "pushed") => {
                    format!(" {}", d.digest)
                }
                (_, t) if t > 0 => format!(" ({})", crate::output::human_size(t)),
                _ => String::new(),
            };
            let line = format!("{}: {}{detail}", p.event, short);
            if tty {
                let _ = multi.println(line);
            } else {
                crate::output::progress(format, &line);
            }
        }
        for pb in bars.values() {
            if !pb.is_finished() {
                pb.abandon();
            }
        }
        drop(s.tx);
    })
}

/// `layer-sha256:<64 hex>` shown as `layer-sha256:<12 hex>`.
fn short_name(name: &str) -> String {
    match name.split_once("sha256:") {
        Some((kind, hex)) if hex.len() > 12 => format!("{kind}sha256:{}", &hex[..12]),
        _ => name.to_string(),
    }
}
