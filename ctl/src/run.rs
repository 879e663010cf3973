//! `berthctl run`: resolves and unpacks the image, creates the container
//! from the spec [`crate::spec`] builds, runs its task attached (through
//! [`crate::stdio`]) or detached, and cleans up with `--rm`.

use crate::cli::{RunArgs, VolumeSource};
use crate::ctx::Ctx;
use crate::error::{CtlError, ExitCode};
use crate::image::{Lease, ensure_unpacked, resolve};
use crate::spec::build_spec;
use crate::stdio::{Attached, CaughtSignals, Fifos, RawTerminal, terminal_size};
use anyhow::{Result, bail};
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
use std::path::PathBuf;

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tonic::Status>()
        .is_some_and(|s| s.code() == tonic::Code::NotFound)
}

/// `berthctl run`.
pub async fn run(ctx: &Ctx, a: RunArgs) -> Result<()> {
    if a.rm && a.detach {
        bail!(CtlError("--rm and --detach cannot be used together".into()));
    }
    // Checked before anything is made: a missing network fails here.
    let networks = crate::run_net::networks(ctx, &a).await?;
    // Like nerdctl: an image stored under the exact name wins (imports
    // without a registry name), otherwise the docker-normalized name.
    let img = match resolve(ctx, a.image(), a.platform.as_deref()).await {
        Err(e) if is_not_found(&e) => {
            let name = berth_proto::reference::normalize(a.image()).map_err(CtlError)?;
            if name == a.image() {
                return Err(e);
            }
            resolve(ctx, &name, a.platform.as_deref()).await?
        }
        r => r?,
    };
    let snapshotter = ctx.snapshotter.clone();
    let id = container_name(ctx, a.name.as_deref(), &snapshotter).await?;
    let lease = Lease::create(ctx).await?;
    // From here on a signal must not end berthctl half-way: during setup
    // it stops the run and removes what was made; once the task exists it
    // is forwarded to it (see run_task).
    let mut caught = CaughtSignals::catch();
    let created = std::sync::atomic::AtomicBool::new(false);
    let setup = async {
        ensure_unpacked(ctx, &img, &snapshotter, &lease).await?;
        let mut spec = build_spec(&ctx.ns, &id, &a, &img.config)?;
        crate::userdb::apply_to_run(ctx, &img, &lease, a.user.as_deref(), &mut spec).await?;
        let volumes = volume_mounts(ctx, &a, &mut spec).await?;
        let mounts = SnapshotsClient::new(ctx.ch.clone())
            .prepare(with_lease(
                ctx.req(sapi::PrepareSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    key: id.clone(),
                    parent: img.top().to_string(),
                    labels: HashMap::new(),
                }),
                &lease.id,
            ))
            .await?
            .into_inner()
            .mounts;
        copy_up(&mounts, &volumes)?;
        let mut labels: HashMap<String, String> = a
            .labels
            .iter()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        labels.extend(
            crate::run_net::labels(&a, &networks)
                .into_iter()
                .chain(crate::spec_more::labels(&a, &img.config))
                .map(|(k, v)| (k.to_string(), v)),
        );
        // berthd keeps the output of tasks created without stdio (run -d,
        // restarts) in a json-file log: `berthctl logs`.
        labels.insert(
            berth_proto::labels::LOG_DRIVER.into(),
            berth_proto::labels::JSON_FILE.into(),
        );
        if !volumes.is_empty() {
            let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
            labels.insert(VOLUMES_LABEL.into(), names.join(","));
        }
        let container = capi::Container {
            id: id.clone(),
            labels,
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
            snapshot_key: id.clone(),
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
                cleanup(ctx, &id, &snapshotter).await;
            }
            lease.done(ctx).await;
            eprintln!("berthctl: interrupted before {id} started; nothing was left behind");
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
    let mut started = false;
    let code = run_task(ctx, &id, &a, mounts, caught, &mut started).await;
    // A task that never started (berthd refusing a taken port, a runtime
    // failing to create it) leaves nothing: a container that cannot run
    // would only hold its name, ports and snapshot.
    if !started && code.is_err() {
        stop_unstarted(ctx, &id).await;
    }
    if a.rm || (!started && code.is_err()) {
        cleanup(ctx, &id, &snapshotter).await;
    }
    match code? {
        0 => Ok(()),
        c => Err(ExitCode(c as i32).into()),
    }
}

async fn run_task(
    ctx: &Ctx,
    id: &str,
    a: &RunArgs,
    rootfs: Vec<berth_proto::types::Mount>,
    caught: CaughtSignals,
    started: &mut bool,
) -> Result<u32> {
    let mut tasks = TasksClient::new(ctx.ch.clone());
    let interactive = a.interactive || a.tty;
    let fifos = if a.detach {
        None
    } else {
        Some(Fifos::create(id, interactive, a.tty)?)
    };
    let attached = match &fifos {
        Some(f) => Some(Attached::start(f, interactive)?),
        None => None,
    };
    // Detached tasks get no stdio: berthd logs them (label berth.log-driver).
    let (stdin, stdout, stderr) = fifos.as_ref().map_or_else(Default::default, |f| {
        (f.stdin.clone(), f.stdout.clone(), f.stderr.clone())
    });
    let caught = (!a.detach).then_some(caught);
    tasks
        .create(ctx.req(tapi::CreateTaskRequest {
            container_id: id.to_string(),
            rootfs,
            stdin,
            stdout,
            stderr,
            terminal: a.tty,
            ..Default::default()
        }))
        .await?;
    if interactive && let Some(f) = &fifos {
        Attached::forward_stdin(f, ctx, id, "")?;
    }
    // Wait before start, so even an instant exit is seen.
    let waiter = (!a.detach).then(|| {
        let mut t = tasks.clone();
        let req = ctx.req(tapi::WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        });
        tokio::spawn(async move { t.wait(req).await })
    });
    let _raw = (a.tty && std::io::stdin().is_terminal()).then(RawTerminal::enable);
    tasks
        .start(ctx.req(tapi::StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await?;
    *started = true;
    if a.detach {
        println!("{id}");
        return Ok(0);
    }
    if a.tty
        && let Some((w, h)) = terminal_size()
    {
        let _ = tasks
            .resize_pty(ctx.req(tapi::ResizePtyRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                width: w,
                height: h,
            }))
            .await;
    }
    let fwd = caught.map(|c| c.forward(ctx, id, "", a.tty));
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

/// The container's ID: `--name`, or a generated name. containerd has
/// only IDs, so the name is the ID. Docker generates adjective_noun names;
/// a random 12-hex-digit one (the length of docker's short IDs) needs no
/// word list and is as easy to type.
async fn container_name(ctx: &Ctx, name: Option<&str>, snapshotter: &str) -> Result<String> {
    if let Some(n) = name {
        if name_taken(ctx, n, snapshotter).await? {
            bail!(CtlError(format!(
                "the container name {n:?} is already in use: remove that container or pick another --name"
            )));
        }
        return Ok(n.to_string());
    }
    for _ in 0..16 {
        let n = generate_name();
        if !name_taken(ctx, &n, snapshotter).await? {
            return Ok(n);
        }
    }
    bail!(CtlError(
        "could not generate an unused container name; give one with --name".into()
    ))
}

/// A random name: 12 lower-case hex digits.
pub(crate) fn generate_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Whether a container, or a snapshot run would create, already has this ID.
async fn name_taken(ctx: &Ctx, id: &str, snapshotter: &str) -> Result<bool> {
    match ContainersClient::new(ctx.ch.clone())
        .get(ctx.req(capi::GetContainerRequest { id: id.into() }))
        .await
    {
        Ok(_) => return Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => return Err(s.into()),
    }
    match SnapshotsClient::new(ctx.ch.clone())
        .stat(ctx.req(sapi::StatSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: id.into(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(s.into()),
    }
}

/// The container label listing the named volumes a run mounted.
const VOLUMES_LABEL: &str = "berth.volumes";

/// A named volume a run mounts, and whether to fill it from the image.
struct NamedVolume {
    name: String,
    mountpoint: PathBuf,
    target: String,
    fill: bool,
}

/// Adds `-v` mounts to `spec`, creating named volumes on first use;
/// returns the named ones.
async fn volume_mounts(ctx: &Ctx, a: &RunArgs, spec: &mut Value) -> Result<Vec<NamedVolume>> {
    let mut named = Vec::new();
    let Some(mounts) = spec["mounts"].as_array_mut() else {
        bail!(CtlError("the spec has no mounts list".into()));
    };
    for v in &a.volumes {
        let source = match &v.source {
            VolumeSource::Host(p) => p.clone(),
            VolumeSource::Named(n) => {
                let r = crate::volumes::ensure(ctx, n).await?;
                let mp = PathBuf::from(r.volume.unwrap_or_default().mountpoint);
                // docker fills a volume from the image only while it is
                // empty, so a second container never overwrites data.
                let empty = std::fs::read_dir(&mp)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
                named.push(NamedVolume {
                    name: n.clone(),
                    mountpoint: mp.clone(),
                    target: v.target.clone(),
                    fill: empty,
                });
                mp
            }
        };
        let mode = if v.readonly { "ro" } else { "rw" };
        mounts.push(json!({
            "destination": v.target,
            "type": "bind",
            "source": source,
            "options": ["rbind", mode],
        }));
    }
    Ok(named)
}

/// Copies what the image holds at each empty volume's path into it (as
/// docker does), through a temporary mount of the container's rootfs.
fn copy_up(rootfs: &[berth_proto::types::Mount], volumes: &[NamedVolume]) -> Result<()> {
    if !volumes.iter().any(|v| v.fill) {
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix("berthctl-copyup-")
        .tempdir()?;
    let mounts: Vec<berth_mount::Mount> = rootfs.iter().cloned().map(Into::into).collect();
    berth_mount::mount_all(&mounts, tmp.path())
        .map_err(|e| CtlError(format!("mount the rootfs to fill volumes: {e}")))?;
    let copied = (|| {
        for v in volumes.iter().filter(|v| v.fill) {
            let src = tmp.path().join(v.target.trim_start_matches('/'));
            // Only a real directory of the image's (a symlink could point
            // anywhere on the host from here).
            if !std::fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            // cp -a keeps owners, modes, times, links and special files,
            // which is what the container expects to find.
            let st = std::process::Command::new("cp")
                .arg("-a")
                .arg("--")
                .arg(src.join("."))
                .arg(&v.mountpoint)
                .status()
                .map_err(|e| CtlError(format!("run cp to fill volume {}: {e}", v.name)))?;
            if !st.success() {
                bail!(CtlError(format!(
                    "filling volume {} from the image's {} failed ({st})",
                    v.name, v.target
                )));
            }
        }
        Ok(())
    })();
    let _ = berth_mount::unmount(tmp.path());
    copied
}

/// Ends a task that was created but failed to start (if it exists), so
/// that it can be deleted.
async fn stop_unstarted(ctx: &Ctx, id: &str) {
    let mut tasks = TasksClient::new(ctx.ch.clone());
    let killed = tasks
        .kill(ctx.req(tapi::KillRequest {
            container_id: id.into(),
            exec_id: String::new(),
            signal: 9,
            all: true,
        }))
        .await;
    if killed.is_ok() {
        let wait = tasks.wait(ctx.req(tapi::WaitRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), wait).await;
    }
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
