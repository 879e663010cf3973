//! The commands.

use crate::CtlError;
use crate::cli::*;
use crate::output::{Table, ago, human_size, labels as fmt_labels, rfc3339};
use anyhow::{Context as _, Result, bail};
use berth_proto::client::request;
use berth_proto::services::content::v1 as content;
use berth_proto::services::content::v1::content_client::ContentClient;
use berth_proto::services::events::v1 as events;
use berth_proto::services::events::v1::events_client::EventsClient;
use berth_proto::services::images::v1 as images;
use berth_proto::services::images::v1::images_client::ImagesClient;
use berth_proto::services::introspection::v1 as introspection;
use berth_proto::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_proto::services::leases::v1 as leases;
use berth_proto::services::leases::v1::leases_client::LeasesClient;
use berth_proto::services::namespaces::v1 as namespaces;
use berth_proto::services::namespaces::v1::namespaces_client::NamespacesClient;
use berth_proto::services::version::v1::version_client::VersionClient;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Dials the daemon and runs one command.
pub async fn run(cli: Cli) -> Result<()> {
    let ch = berth_proto::client::connect(&cli.address)
        .await
        .map_err(|e| {
            CtlError(format!(
                "{e} (is berthd running? set --address or BERTH_ADDRESS)"
            ))
        })?;
    let ctx = Ctx {
        ch,
        ns: cli.namespace.clone(),
        format: cli.format,
        snapshotter: cli.snapshotter.clone(),
    };
    match cli.command {
        Command::Version => version(&ctx).await,
        Command::Namespaces(c) => namespaces_cmd(&ctx, c).await,
        Command::Content(c) => content_cmd(&ctx, c).await,
        Command::Images(c) => images_cmd(&ctx, c).await,
        Command::Leases(c) => leases_cmd(&ctx, c).await,
        Command::Snapshots(a) => crate::snapshots::run(&ctx, a).await,
        Command::Run(a) => crate::run::run(&ctx, a).await,
        Command::Containers(c) => crate::tasks::containers(&ctx, c).await,
        Command::Tasks(t) => crate::tasks::tasks(&ctx, t).await,
        Command::Events(a) => events_cmd(&ctx, a).await,
        Command::Plugins(Plugins::Ls { filters }) => plugins(&ctx, filters).await,
    }
}

pub(crate) struct Ctx {
    pub ch: Channel,
    pub ns: String,
    pub format: Format,
    /// Named in every snapshot, container and unpack request.
    pub snapshotter: String,
}

impl Ctx {
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        request(&self.ns, msg)
    }
}

/// Parses `key=value` arguments; `key=` (or bare `key`) means "remove".
pub(crate) fn parse_labels(args: &[String]) -> HashMap<String, String> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (a.clone(), String::new()),
        })
        .collect()
}

/// The field mask that updates exactly these labels.
pub(crate) fn label_mask(l: &HashMap<String, String>) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: l.keys().map(|k| format!("labels.{k}")).collect(),
    }
}

async fn version(ctx: &Ctx) -> Result<()> {
    let v = VersionClient::new(ctx.ch.clone())
        .version(())
        .await?
        .into_inner();
    if ctx.format == Format::Json {
        println!(
            "{}",
            json!({"client": {"version": env!("CARGO_PKG_VERSION")},
                   "server": {"version": v.version, "revision": v.revision}})
        );
    } else {
        println!("Client:\n  Version:  {}", env!("CARGO_PKG_VERSION"));
        println!(
            "\nServer:\n  Version:  {}\n  Revision: {}",
            v.version, v.revision
        );
    }
    Ok(())
}

async fn namespaces_cmd(ctx: &Ctx, c: Namespaces) -> Result<()> {
    let mut cl = NamespacesClient::new(ctx.ch.clone());
    match c {
        Namespaces::Ls { quiet } => {
            let list = cl
                .list(ctx.req(namespaces::ListNamespacesRequest::default()))
                .await?
                .into_inner()
                .namespaces;
            if quiet {
                list.iter().for_each(|n| println!("{}", n.name));
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "LABELS"]);
            for n in list {
                t.row(
                    vec![n.name.clone(), fmt_labels(&n.labels)],
                    json!({"name": n.name, "labels": n.labels}),
                );
            }
            t.print(ctx.format)?;
        }
        Namespaces::Create { name, labels } => {
            // The header too: containerd needs a namespace to publish the
            // event, whichever namespace is being created.
            cl.create(ctx.req(namespaces::CreateNamespaceRequest {
                namespace: Some(namespaces::Namespace {
                    name,
                    labels: parse_labels(&labels),
                }),
            }))
            .await?;
        }
        Namespaces::Rm { names } => {
            for name in names {
                cl.delete(ctx.req(namespaces::DeleteNamespaceRequest { name: name.clone() }))
                    .await
                    .map_err(|s| CtlError(format!("remove {name}: {}", crate::status_error(&s))))?;
                println!("{name}");
            }
        }
        Namespaces::Label { name, labels } => {
            let l = parse_labels(&labels);
            let mask = label_mask(&l);
            let ns = cl
                .update(ctx.req(namespaces::UpdateNamespaceRequest {
                    namespace: Some(namespaces::Namespace { name, labels: l }),
                    update_mask: Some(mask),
                }))
                .await?
                .into_inner()
                .namespace
                .unwrap_or_default();
            println!("{}", fmt_labels(&ns.labels));
        }
    }
    Ok(())
}

async fn content_cmd(ctx: &Ctx, c: Content) -> Result<()> {
    let mut cl = ContentClient::new(ctx.ch.clone());
    match c {
        Content::Ls { quiet, filters } => {
            let mut s = cl
                .list(ctx.req(content::ListContentRequest { filters }))
                .await?
                .into_inner();
            let mut t = Table::new(&["DIGEST", "SIZE", "AGE", "LABELS"]);
            while let Some(block) = s.next().await {
                for i in block?.info {
                    if quiet {
                        println!("{}", i.digest);
                        continue;
                    }
                    t.row(
                        vec![
                            i.digest.clone(),
                            human_size(i.size),
                            ago(i.created_at.as_ref()),
                            fmt_labels(&i.labels),
                        ],
                        json!({"digest": i.digest, "size": i.size,
                               "created_at": rfc3339(i.created_at.as_ref()), "labels": i.labels}),
                    );
                }
            }
            if !quiet {
                t.print(ctx.format)?;
            }
        }
        Content::Get { digest } => {
            let mut s = crate::image::read_blob(ctx, &digest).await?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = s.next().await {
                out.write_all(&chunk?.data)?;
            }
            out.flush()?;
        }
        Content::Ingest {
            reference,
            expected_digest,
            expected_size,
            file,
            labels,
        } => {
            let mut data = Vec::new();
            match file {
                Some(f) => {
                    data = std::fs::read(&f).with_context(|| format!("read {}", f.display()))?;
                }
                None => {
                    std::io::stdin().read_to_end(&mut data)?;
                }
            }
            let labels = labels
                .iter()
                .map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| CtlError(format!("--label {l}: expected key=value")))
                })
                .collect::<std::result::Result<_, _>>()?;
            let digest = ingest(
                ctx,
                &reference,
                data,
                expected_digest,
                expected_size,
                labels,
            )
            .await?;
            println!("{digest}");
        }
        Content::Rm { digests } => {
            for d in digests {
                cl.delete(ctx.req(content::DeleteContentRequest { digest: d.clone() }))
                    .await?;
                println!("{d}");
            }
        }
        Content::Label { digest, labels } => {
            let l = parse_labels(&labels);
            let mask = label_mask(&l);
            let info = cl
                .update(ctx.req(content::UpdateRequest {
                    info: Some(content::Info {
                        digest,
                        labels: l,
                        ..Default::default()
                    }),
                    update_mask: Some(mask),
                }))
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            println!("{}", fmt_labels(&info.labels));
        }
    }
    Ok(())
}

/// Uploads `data` through the Write protocol: resumes a previous upload of
/// the same ref from its offset.
async fn ingest(
    ctx: &Ctx,
    reference: &str,
    data: Vec<u8>,
    expected: Option<String>,
    size: Option<i64>,
    labels: std::collections::HashMap<String, String>,
) -> Result<String> {
    const CHUNK: usize = 1 << 20;
    let mut cl = ContentClient::new(ctx.ch.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let total = size.unwrap_or(data.len() as i64);
    let expected = expected.unwrap_or_default();
    tx.send(content::WriteContentRequest {
        action: content::WriteAction::Stat as i32,
        r#ref: reference.to_string(),
        total,
        expected: expected.clone(),
        ..Default::default()
    })
    .await?;
    let mut resp = cl
        .write(ctx.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await?
        .into_inner();
    let stat = resp
        .next()
        .await
        .ok_or_else(|| CtlError("the daemon closed the upload".into()))??;
    // A negative offset restarts; one past the end (or past usize) resumes at the end.
    let mut offset = usize::try_from(stat.offset.max(0)).map_or(data.len(), |o| o.min(data.len()));
    if offset > 0 {
        eprintln!("resuming {reference} at offset {offset}");
    }
    loop {
        let end = (offset + CHUNK).min(data.len());
        let last = end == data.len();
        tx.send(content::WriteContentRequest {
            action: if last {
                content::WriteAction::Commit
            } else {
                content::WriteAction::Write
            } as i32,
            r#ref: reference.to_string(),
            total,
            expected: if last {
                expected.clone()
            } else {
                String::new()
            },
            offset: offset as i64,
            data: data[offset..end].to_vec(),
            labels: if last {
                labels.clone()
            } else {
                Default::default()
            },
        })
        .await?;
        let r = resp
            .next()
            .await
            .ok_or_else(|| CtlError("the daemon closed the upload".into()))??;
        offset = end;
        if last {
            return Ok(r.digest);
        }
    }
}

async fn images_cmd(ctx: &Ctx, c: Images) -> Result<()> {
    let mut cl = ImagesClient::new(ctx.ch.clone());
    match c {
        Images::Ls { quiet, filters } => {
            let list = cl
                .list(ctx.req(images::ListImagesRequest { filters }))
                .await?
                .into_inner()
                .images;
            if quiet {
                list.iter().for_each(|i| println!("{}", i.name));
                return Ok(());
            }
            let mut t = Table::new(&["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]);
            for i in list {
                let target = i.target.clone().unwrap_or_default();
                let (size, platforms) = match walk(ctx, &target).await {
                    Ok((s, p)) => (human_size(s), p.join(",")),
                    Err(_) => ("-".into(), "-".into()),
                };
                t.row(
                    vec![
                        i.name.clone(),
                        target.media_type.clone(),
                        target.digest.clone(),
                        size.clone(),
                        platforms.clone(),
                        fmt_labels(&i.labels),
                    ],
                    json!({"name": i.name, "media_type": target.media_type, "digest": target.digest,
                           "size": size, "platforms": platforms, "labels": i.labels}),
                );
            }
            t.print(ctx.format)?;
        }
        Images::Pull(a) => crate::registry::pull(ctx, a).await?,
        Images::Push(a) => crate::registry::push(ctx, a).await?,
        Images::Tag {
            source,
            target,
            force,
        } => crate::registry::tag(ctx, &source, &target, force).await?,
        Images::Import(a) => crate::transfer::import(ctx, a).await?,
        Images::Export(a) => crate::transfer::export(ctx, a).await?,
        Images::Rm { names, sync } => {
            for name in names {
                cl.delete(ctx.req(images::DeleteImageRequest {
                    name: name.clone(),
                    sync,
                    target: None,
                }))
                .await
                .map_err(|s| CtlError(format!("remove {name}: {}", crate::status_error(&s))))?;
                println!("{name}");
            }
        }
        Images::Label { name, labels } => {
            let l = parse_labels(&labels);
            let mask = label_mask(&l);
            let img = cl
                .update(ctx.req(images::UpdateImageRequest {
                    image: Some(images::Image {
                        name,
                        labels: l,
                        ..Default::default()
                    }),
                    update_mask: Some(mask),
                    source_date_epoch: None,
                }))
                .await?
                .into_inner()
                .image
                .unwrap_or_default();
            println!("{}", fmt_labels(&img.labels));
        }
        Images::Mount {
            name,
            target,
            rw,
            platform,
        } => mount_image(ctx, &name, &target, rw, platform.as_deref()).await?,
        Images::Unmount { target } => {
            let target = std::fs::canonicalize(&target)
                .map_err(|e| CtlError(format!("{}: {e}", target.display())))?;
            let st = std::process::Command::new("umount").arg(&target).status()?;
            if !st.success() {
                bail!(CtlError(format!(
                    "umount {} failed ({st})",
                    target.display()
                )));
            }
            use berth_proto::services::snapshots::v1 as sapi;
            sapi::snapshots_client::SnapshotsClient::new(ctx.ch.clone())
                .remove(ctx.req(sapi::RemoveSnapshotRequest {
                    snapshotter: ctx.snapshotter.clone(),
                    key: mount_key(&target),
                }))
                .await?;
            println!("{}", target.display());
        }
        Images::Inspect { name } => {
            let img = cl
                .get(ctx.req(images::GetImageRequest { name }))
                .await?
                .into_inner()
                .image
                .unwrap_or_default();
            let target = img.target.clone().unwrap_or_default();
            let manifest = crate::image::read_json(ctx, &target.digest).await?;
            let mut config = Value::Null;
            if let Some(d) = manifest.pointer("/config/digest").and_then(Value::as_str) {
                config = crate::image::read_json(ctx, d).await.unwrap_or(Value::Null);
            }
            let out = json!({
                "name": img.name,
                "labels": img.labels,
                "created_at": rfc3339(img.created_at.as_ref()),
                "updated_at": rfc3339(img.updated_at.as_ref()),
                "target": {"media_type": target.media_type, "digest": target.digest, "size": target.size},
                "manifest": manifest,
                "config": config,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}

fn mount_key(target: &std::path::Path) -> String {
    format!("berthctl-mount:{}", target.display())
}

async fn mount_image(
    ctx: &Ctx,
    name: &str,
    target: &std::path::Path,
    rw: bool,
    platform: Option<&str>,
) -> Result<()> {
    use berth_proto::services::snapshots::v1 as sapi;
    let target = std::fs::canonicalize(target)
        .map_err(|e| CtlError(format!("{}: {e}", target.display())))?;
    let chain = crate::image::resolve(ctx, name, platform)
        .await?
        .top()
        .to_string();
    let mut cl = sapi::snapshots_client::SnapshotsClient::new(ctx.ch.clone());
    if let Err(s) = cl
        .stat(ctx.req(sapi::StatSnapshotRequest {
            snapshotter: ctx.snapshotter.clone(),
            key: chain.clone(),
        }))
        .await
    {
        if s.code() == tonic::Code::NotFound {
            bail!(CtlError(format!(
                "image {name} is not unpacked (no snapshot {chain}): import it without --no-unpack"
            )));
        }
        return Err(s.into());
    }
    let key = mount_key(&target);
    let labels = HashMap::from([(
        "containerd.io/gc.root".to_string(),
        chrono::Utc::now().to_rfc3339(),
    )]);
    let mounts = if rw {
        cl.prepare(ctx.req(sapi::PrepareSnapshotRequest {
            snapshotter: ctx.snapshotter.clone(),
            key: key.clone(),
            parent: chain,
            labels,
        }))
        .await?
        .into_inner()
        .mounts
    } else {
        cl.view(ctx.req(sapi::ViewSnapshotRequest {
            snapshotter: ctx.snapshotter.clone(),
            key: key.clone(),
            parent: chain,
            labels,
        }))
        .await?
        .into_inner()
        .mounts
    };
    if let Err(e) = crate::snapshots::mount_with_tool(&mounts, &target) {
        let _ = cl
            .remove(ctx.req(sapi::RemoveSnapshotRequest {
                snapshotter: ctx.snapshotter.clone(),
                key,
            }))
            .await;
        return Err(e);
    }
    println!("{}", target.display());
    Ok(())
}

/// Size of an image for this host (index + manifest + config + layers, as
/// ctr counts it) and the platforms it offers.
async fn walk(ctx: &Ctx, target: &berth_proto::types::Descriptor) -> Result<(i64, Vec<String>)> {
    let v = crate::image::read_json(ctx, &target.digest).await?;
    if let Some(ms) = v.get("manifests").and_then(Value::as_array) {
        let host = crate::image::host_platform();
        let mut platforms = Vec::new();
        let mut chosen = None;
        for m in ms {
            let p = m.get("platform");
            let pos = p
                .and_then(|p| p.get("os"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let parch = p
                .and_then(|p| p.get("architecture"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if !pos.is_empty() {
                platforms.push(format!("{pos}/{parch}"));
            }
            if chosen.is_none() && (pos.is_empty() || format!("{pos}/{parch}") == host) {
                chosen = Some(m.clone());
            }
        }
        let mut size = target.size;
        if let Some(m) = chosen {
            let d = berth_proto::types::Descriptor {
                media_type: m["mediaType"].as_str().unwrap_or_default().to_string(),
                digest: m["digest"].as_str().unwrap_or_default().to_string(),
                size: m["size"].as_i64().unwrap_or(0),
                annotations: HashMap::new(),
            };
            if let Ok((s, p)) = Box::pin(walk(ctx, &d)).await {
                size += s;
                if platforms.is_empty() {
                    platforms = p;
                }
            }
        }
        return Ok((size, platforms));
    }
    let mut size = target.size;
    let mut platforms = Vec::new();
    if let Some(c) = v.get("config") {
        size += c["size"].as_i64().unwrap_or(0);
        if let Some(d) = c["digest"].as_str()
            && let Ok(cfg) = crate::image::read_json(ctx, d).await
        {
            platforms.push(format!(
                "{}/{}",
                cfg["os"].as_str().unwrap_or("?"),
                cfg["architecture"].as_str().unwrap_or("?")
            ));
        }
    }
    for l in v["layers"].as_array().into_iter().flatten() {
        size += l["size"].as_i64().unwrap_or(0);
    }
    Ok((size, platforms))
}

async fn leases_cmd(ctx: &Ctx, c: Leases) -> Result<()> {
    let mut cl = LeasesClient::new(ctx.ch.clone());
    match c {
        Leases::Ls { quiet, filters } => {
            let list = cl
                .list(ctx.req(leases::ListRequest { filters }))
                .await?
                .into_inner()
                .leases;
            if quiet {
                list.iter().for_each(|l| println!("{}", l.id));
                return Ok(());
            }
            let mut t = Table::new(&["ID", "CREATED AT", "LABELS"]);
            for l in list {
                t.row(
                    vec![l.id.clone(), rfc3339(l.created_at.as_ref()), fmt_labels(&l.labels)],
                    json!({"id": l.id, "created_at": rfc3339(l.created_at.as_ref()), "labels": l.labels}),
                );
            }
            t.print(ctx.format)?;
        }
        Leases::Create {
            id,
            expires,
            labels,
        } => {
            let mut l = parse_labels(&labels);
            let d = humantime_secs(&expires)?;
            if d > 0 {
                let t = chrono::Utc::now() + chrono::Duration::seconds(d);
                l.insert(
                    "containerd.io/gc.expire".into(),
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                );
            }
            let lease = cl
                .create(ctx.req(leases::CreateRequest {
                    id: id.unwrap_or_default(),
                    labels: l,
                }))
                .await?
                .into_inner()
                .lease
                .unwrap_or_default();
            println!("{}", lease.id);
        }
        Leases::Rm { ids, sync } => {
            for id in ids {
                cl.delete(ctx.req(leases::DeleteRequest {
                    id: id.clone(),
                    sync,
                }))
                .await?;
                println!("{id}");
            }
        }
    }
    Ok(())
}

/// Parses durations like `24h`, `30m`, `90s`, `0`.
fn humantime_secs(s: &str) -> Result<i64> {
    if s == "0" {
        return Ok(0);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| CtlError(format!("duration {s:?}: expected e.g. 24h, 30m, 90s")))?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => bail!(CtlError(format!(
            "duration {s:?}: unit must be s, m, h or d"
        ))),
    };
    Ok(n * mult)
}

async fn events_cmd(ctx: &Ctx, a: EventsArgs) -> Result<()> {
    let mut cl = EventsClient::new(ctx.ch.clone());
    let mut s = cl
        .subscribe(events::SubscribeRequest { filters: a.filters })
        .await?
        .into_inner();
    while let Some(env) = s.next().await {
        let env = env?;
        let ev = env.event.as_ref().map(describe_event).unwrap_or_default();
        if ctx.format == Format::Json {
            println!(
                "{}",
                json!({"timestamp": rfc3339(env.timestamp.as_ref()), "namespace": env.namespace,
                       "topic": env.topic, "event": ev})
            );
        } else {
            println!(
                "{} {} {} {}",
                rfc3339(env.timestamp.as_ref()),
                env.namespace,
                env.topic,
                ev
            );
        }
    }
    Ok(())
}

/// A readable rendering of an event payload.
fn describe_event(any: &prost_types::Any) -> String {
    use berth_proto::pb::containerd::events as ev;
    use berth_proto::pb::containerd::services::images::v1 as im;
    use berth_proto::typeurl::unpack;
    macro_rules! try_types {
        ($($t:ty),*) => {$(
            if let Some(m) = unpack::<$t>(any) {
                return format!("{m:?}");
            }
        )*};
    }
    try_types!(
        ev::NamespaceCreate,
        ev::NamespaceUpdate,
        ev::NamespaceDelete,
        ev::ContentCreate,
        ev::ContentDelete,
        im::ImageCreate,
        im::ImageUpdate,
        im::ImageDelete,
        ev::ContainerCreate,
        ev::ContainerUpdate,
        ev::ContainerDelete,
        ev::SnapshotPrepare,
        ev::SnapshotCommit,
        ev::SnapshotRemove,
        ev::TaskCreate,
        ev::TaskStart,
        ev::TaskExit,
        ev::TaskDelete,
        ev::TaskOom,
        ev::TaskExecAdded,
        ev::TaskExecStarted,
        ev::TaskPaused,
        ev::TaskResumed
    );
    format!("{} ({} bytes)", any.type_url, any.value.len())
}

async fn plugins(ctx: &Ctx, filters: Vec<String>) -> Result<()> {
    let list = IntrospectionClient::new(ctx.ch.clone())
        .plugins(introspection::PluginsRequest { filters })
        .await?
        .into_inner()
        .plugins;
    let mut t = Table::new(&["TYPE", "ID", "PLATFORMS", "STATUS"]);
    for p in list {
        let platforms: Vec<String> = p
            .platforms
            .iter()
            .map(|x| format!("{}/{}", x.os, x.architecture))
            .collect();
        let status = match &p.init_err {
            Some(e) => format!("error: {}", e.message),
            None => "ok".into(),
        };
        let platforms = if platforms.is_empty() {
            "-".into()
        } else {
            platforms.join(",")
        };
        t.row(
            vec![p.r#type.clone(), p.id.clone(), platforms.clone(), status.clone()],
            json!({"type": p.r#type, "id": p.id, "platforms": platforms, "status": status, "exports": p.exports}),
        );
    }
    t.print(ctx.format)?;
    Ok(())
}

/// Is stdout a terminal (for progress bars)?
pub(crate) fn interactive() -> bool {
    std::io::stdout().is_terminal()
}
