//! Image import/export through the daemon's Transfer service: the archive
//! travels over a `Streaming.Stream`, paced by the receiver's window
//! credits; progress comes back on a second stream. A daemon without those
//! services (containerd 1.6) gets the client-side path of [`crate::archive`].

use crate::cli::{ExportArgs, Format, ImportArgs};
use crate::ctx::{Ctx, interactive, parse_kv_labels};
use crate::error::CtlError;
use crate::image::platform;
use anyhow::{Context as _, Result};
use berth_proto::pb::containerd::types::transfer as tt;
use berth_proto::services::streaming::v1::StreamInit;
use berth_proto::services::streaming::v1::streaming_client::StreamingClient;
use berth_proto::services::transfer::v1::transfer_client::TransferClient;
use berth_proto::services::transfer::v1::{TransferOptions, TransferRequest};
use berth_proto::typeurl;
use indicatif::{ProgressBar, ProgressStyle};
use prost_types::Any;
use std::io::{Read, Write};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Largest data message sent.
const MAX_DATA: usize = 1 << 20;
/// Credit granted to the daemon at a time when receiving.
const WINDOW: i32 = 4 << 20;

/// An open stream: what we send and what the daemon sends.
pub(crate) struct Stream {
    pub id: String,
    pub tx: mpsc::Sender<Any>,
    pub rx: Streaming<Any>,
}

/// True when the daemon serves no Streaming/Transfer service (containerd
/// 1.6 answers Unimplemented for services it lacks).
pub(crate) fn lacks_transfer(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tonic::Status>()
        .is_some_and(|s| s.code() == tonic::Code::Unimplemented)
}

/// The error for a command only a daemon with a Transfer service can run,
/// naming the daemon and what to use instead.
pub(crate) async fn needs_transfer(ctx: &Ctx, command: &str, instead: &str) -> anyhow::Error {
    let daemon =
        berth_proto::services::version::v1::version_client::VersionClient::new(ctx.ch.clone())
            .version(())
            .await
            .map(|v| format!("this daemon (version {})", v.into_inner().version))
            .unwrap_or_else(|_| "this daemon".into());
    CtlError(format!(
        "`berthctl {command}` needs berthd's Transfer service, which {daemon} does not serve (containerd 1.6 has none): use {instead} instead"
    ))
    .into()
}

pub(crate) async fn open(ctx: &Ctx, kind: &str) -> Result<Stream> {
    let id = format!("{kind}-{}", uuid::Uuid::new_v4().simple());
    let (tx, rx) = mpsc::channel(16);
    tx.send(typeurl::pack(&StreamInit { id: id.clone() }))
        .await?;
    let mut resp = StreamingClient::new(ctx.ch.clone())
        .stream(ctx.req(ReceiverStream::new(rx)))
        .await?
        .into_inner();
    // The daemon acknowledges once the stream is registered.
    resp.next()
        .await
        .ok_or_else(|| CtlError("the daemon closed the stream before acknowledging it".into()))??;
    Ok(Stream { id, tx, rx: resp })
}

fn bar(total: u64, what: &str) -> Option<ProgressBar> {
    if !interactive() {
        return None;
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    Some(pb)
}

/// Prints progress events from the daemon (plain lines when not on a terminal);
/// returns the names of the images reported made.
/// (On stderr when `to_stderr`: the archive itself, or a JSON result, goes to stdout.)
fn spawn_progress(
    mut s: Stream,
    pb: Option<ProgressBar>,
    to_stderr: bool,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut images = Vec::new();
        while let Some(Ok(msg)) = s.rx.next().await {
            if let Some(p) = typeurl::unpack::<tt::Progress>(&msg)
                && matches!(p.event.as_str(), "image" | "unpacked" | "exported")
            {
                match &pb {
                    Some(pb) => pb.println(format!("{}: {}", p.event, p.name)),
                    None if to_stderr => eprintln!("{}: {}", p.event, p.name),
                    None => println!("{}: {}", p.event, p.name),
                }
                if p.event == "image" && !images.contains(&p.name) {
                    images.push(p.name);
                }
            }
        }
        drop(s.tx);
        images
    })
}

/// `images import`: progress lines, or with `--format json` (progress on
/// stderr) the imported images as a JSON array.
pub async fn import(ctx: &Ctx, a: ImportArgs) -> Result<()> {
    let names = import_names(ctx, a).await?;
    if ctx.format == Format::Json {
        let v = crate::output::images_json(&ctx.ch, &ctx.ns, &names).await?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

async fn import_names(ctx: &Ctx, a: ImportArgs) -> Result<Vec<String>> {
    let (mut reader, total): (Box<dyn Read + Send>, u64) = if a.file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), 0)
    } else {
        // The OS's reason too ("No such file or directory"), in the one
        // line berthctl prints.
        let f = std::fs::File::open(&a.file).map_err(|e| {
            CtlError(format!(
                "open {}: {}",
                a.file.display(),
                crate::error::io_reason(&e)
            ))
        })?;
        let n = f.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(f), n)
    };
    let labels = parse_kv_labels(&a.labels)?;
    let mut data = match open(ctx, "import").await {
        Err(e) if lacks_transfer(&e) => return crate::archive::import(ctx, &a, reader).await,
        r => r?,
    };
    let progress = open(ctx, "progress").await?;
    let pb = bar(total, "importing");
    let mut store = tt::ImageStore {
        name: a.index_name.clone().unwrap_or_default(),
        labels,
        all_metadata: a.all_platforms,
        ..Default::default()
    };
    if let Some(p) = &a.platform {
        store.platforms.push(platform(p)?);
    }
    if !a.no_unpack {
        store.unpacks.push(tt::UnpackConfiguration {
            platform: store.platforms.first().cloned(),
            snapshotter: ctx.snapshotter.clone(),
        });
    }
    if let Some(b) = &a.base_name {
        store.extra_references.push(tt::ImageReference {
            name: b.clone(),
            is_prefix: true,
            allow_overwrite: true,
            add_digest: a.digests,
            ..Default::default()
        });
    } else if a.digests {
        store.extra_references.push(tt::ImageReference {
            add_digest: true,
            ..Default::default()
        });
    }
    let req = TransferRequest {
        source: Some(typeurl::pack(&tt::ImageImportStream {
            stream: data.id.clone(),
            media_type: String::new(),
            force_compress: false,
        })),
        destination: Some(typeurl::pack(&store)),
        options: Some(TransferOptions {
            progress_stream: progress.id.clone(),
        }),
    };
    let printer = spawn_progress(progress, pb.clone(), ctx.format == Format::Json);
    let mut tc = TransferClient::new(ctx.ch.clone());
    let call = tc.transfer(ctx.req(req));
    // Feed the archive as the daemon grants credit.
    let pb2 = pb.clone();
    let feeder = tokio::spawn(async move {
        let mut credit: i64 = 0;
        let mut buf = vec![0u8; MAX_DATA];
        loop {
            while credit <= 0 {
                match data.rx.next().await {
                    Some(Ok(m)) => {
                        if let Some(u) = typeurl::unpack::<tt::WindowUpdate>(&m) {
                            credit += i64::from(u.update);
                        }
                    }
                    _ => return Ok::<_, anyhow::Error>(()),
                }
            }
            // credit > 0 here; beyond usize it is just "as much as fits".
            let want = usize::try_from(credit).map_or(MAX_DATA, |c| c.min(MAX_DATA));
            let n = tokio::task::block_in_place(|| reader.read(&mut buf[..want]))
                .context("read archive")?;
            if n == 0 {
                // Close our side only: dropping the response stream would
                // cancel the call before the last messages are delivered.
                drop(data.tx);
                while data.rx.next().await.is_some() {}
                return Ok(());
            }
            credit -= n as i64;
            if let Some(pb) = &pb2 {
                pb.inc(n as u64);
            }
            let msg = typeurl::pack(&tt::Data {
                data: buf[..n].to_vec(),
            });
            if data.tx.send(msg).await.is_err() {
                return Ok(());
            }
        }
    });
    let result = call.await;
    feeder.abort();
    let names = printer.await.unwrap_or_default();
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    result?;
    Ok(names)
}

/// The export's output: stdout for "-", else a new file that is removed
/// again if the export fails.
fn create_output(a: &ExportArgs) -> Result<Box<dyn Write + Send>> {
    Ok(if a.file.as_os_str() == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::File::create(&a.file)
                .with_context(|| format!("create {}", a.file.display()))?,
        )
    })
}

pub async fn export(ctx: &Ctx, mut a: ExportArgs) -> Result<()> {
    // Short names as `run` takes them; a missing image fails here, before
    // the output file exists.
    for n in &mut a.names {
        *n = crate::image::local_name(ctx, n).await?;
    }
    // Which path to take is known before the output file is made.
    let to_stdout = a.file.as_os_str() == "-";
    let data = match open(ctx, "export").await {
        Err(e) if lacks_transfer(&e) => None,
        r => Some(r?),
    };
    // Caught from here: an interrupted export must not leave a partial
    // archive behind either.
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut out = create_output(&a)?;
    let work = async {
        match data {
            None => crate::archive::export(ctx, &a, &mut out).await,
            Some(data) => export_transfer(ctx, &a, data, out).await,
        }
    };
    let result = tokio::select! {
        r = work => r,
        _ = int.recv() => Err(crate::error::ExitCode(128 + libc::SIGINT).into()),
        _ = term.recv() => Err(crate::error::ExitCode(128 + libc::SIGTERM).into()),
    };
    if result.is_err() && !to_stdout {
        let _ = std::fs::remove_file(&a.file);
        if result
            .as_ref()
            .is_err_and(|e| e.is::<crate::error::ExitCode>())
        {
            eprintln!(
                "berthctl: interrupted: removed the partial {}",
                a.file.display()
            );
        }
    }
    result
}

async fn export_transfer(
    ctx: &Ctx,
    a: &ExportArgs,
    mut data: Stream,
    mut out: Box<dyn Write + Send>,
) -> Result<()> {
    let progress = open(ctx, "progress").await?;
    let pb = if a.file.as_os_str() == "-" {
        None
    } else {
        bar(0, "exporting")
    };
    let mut names = a.names.iter();
    let first = names.next().cloned().unwrap_or_default();
    let store = tt::ImageStore {
        name: first,
        extra_references: names
            .map(|n| tt::ImageReference {
                name: n.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let dst = tt::ImageExportStream {
        stream: data.id.clone(),
        media_type: String::new(),
        platforms: a
            .platform
            .iter()
            .map(|p| platform(p))
            .collect::<Result<_>>()?,
        all_platforms: a.all_platforms,
        skip_compatibility_manifest: a.skip_manifest_json,
        skip_non_distributable: false,
    };
    let req = TransferRequest {
        source: Some(typeurl::pack(&store)),
        destination: Some(typeurl::pack(&dst)),
        options: Some(TransferOptions {
            progress_stream: progress.id.clone(),
        }),
    };
    let printer = spawn_progress(progress, pb.clone(), a.file.as_os_str() == "-");
    let pb2 = pb.clone();
    let receiver = tokio::spawn(async move {
        let mut window: i64 = 0;
        loop {
            if window < i64::from(WINDOW) / 2 {
                let upd = typeurl::pack(&tt::WindowUpdate { update: WINDOW });
                if data.tx.send(upd).await.is_ok() {
                    window += i64::from(WINDOW);
                }
            }
            match data.rx.next().await {
                Some(Ok(m)) => {
                    if let Some(d) = typeurl::unpack::<tt::Data>(&m) {
                        window -= d.data.len() as i64;
                        tokio::task::block_in_place(|| out.write_all(&d.data))
                            .context("write archive")?;
                        if let Some(pb) = &pb2 {
                            pb.inc(d.data.len() as u64);
                        }
                    }
                }
                Some(Err(s)) => return Err(anyhow::Error::from(s)),
                None => {
                    out.flush()?;
                    return Ok::<_, anyhow::Error>(());
                }
            }
        }
    });
    let result = TransferClient::new(ctx.ch.clone())
        .transfer(ctx.req(req))
        .await;
    if let Err(s) = result {
        receiver.abort();
        return Err(s.into());
    }
    receiver.await.context("export receiver")??;
    let _ = printer.await;
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    Ok(())
}
