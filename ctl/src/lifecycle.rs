//! docker's container lifecycle commands over the containerd API: `stop`
//! (SIGTERM, then SIGKILL after a grace period), `start` (a new task for a
//! stopped container), `restart`, `kill`, `rm` (task, container and
//! snapshot at once) and `wait`. `stop` and `kill` mark the container
//! [`L::STOPPED`] first so that berthd's restart policy does not undo them;
//! `start` clears the mark.

use crate::cli::Command;
use crate::ctx::{Ctx, label_mask};
use crate::error::{CtlError, ExitCode, status_error};
use crate::ps::{get_container, get_task, is_live, spec_of, state_name};
use crate::stdio::{Attached, CaughtSignals, Fifos};
use anyhow::{Result, bail};
use berth_proto::labels as L;
use berth_proto::services::containers::v1 as capi;
use berth_proto::services::containers::v1::containers_client::ContainersClient;
use berth_proto::services::snapshots::v1 as sapi;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::services::tasks::v1 as tapi;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use std::collections::HashMap;
use std::time::Duration;

pub async fn run(ctx: &Ctx, c: Command) -> Result<()> {
    match c {
        Command::Stop(a) => each(&a.names, |id| stop(ctx, id, a.time, a.signal)).await,
        Command::Restart(a) => {
            each(&a.names, |id| async move {
                stop(ctx, id, a.time, a.signal).await?;
                start(ctx, id).await
            })
            .await
        }
        Command::Start(a) if a.attach => {
            let [id] = a.names.as_slice() else {
                bail!(CtlError(
                    "start -a takes one container: it attaches to its output until it exits".into()
                ));
            };
            start_attached(ctx, id).await
        }
        Command::Start(a) => each(&a.names, |id| start(ctx, id)).await,
        Command::Kill(a) => each(&a.names, |id| kill(ctx, id, a.signal)).await,
        Command::Rm(a) => each(&a.names, |id| rm(ctx, id, a.force)).await,
        Command::Wait(a) => {
            // Prints each exit code, as docker does; berthctl's own status
            // says only whether waiting worked.
            for id in &a.names {
                println!("{}", wait(ctx, id).await?);
            }
            Ok(())
        }
        _ => unreachable!("dispatched by commands"),
    }
}

/// Runs `f` for each container, printing its name when done, as docker;
/// one failing does not stop the others (each error is printed, and
/// berthctl exits 1). One container's error is returned as it is.
async fn each<'a, F, Fut>(names: &'a [String], f: F) -> Result<()>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    if let [id] = names {
        f(id).await?;
        println!("{id}");
        return Ok(());
    }
    let mut failed = false;
    for id in names {
        match f(id).await {
            Ok(()) => println!("{id}"),
            Err(e) => {
                failed = true;
                let msg = match e.downcast_ref::<tonic::Status>() {
                    Some(s) => status_error(s).0,
                    None => e.to_string(),
                };
                eprintln!("berthctl: {id}: {msg}");
            }
        }
    }
    if failed {
        return Err(ExitCode(1).into());
    }
    Ok(())
}

/// Sets or clears the [`L::STOPPED`] label; a start by hand also resets
/// the restart count, as docker's does.
async fn mark_stopped(ctx: &Ctx, id: &str, stopped: bool) -> Result<()> {
    let mut labels = HashMap::from([(
        L::STOPPED.to_string(),
        if stopped { "true" } else { "" }.to_string(),
    )]);
    if !stopped {
        labels.insert(L::RESTART_COUNT.to_string(), String::new());
    }
    ContainersClient::new(ctx.ch.clone())
        .update(ctx.req(capi::UpdateContainerRequest {
            update_mask: Some(label_mask(&labels)),
            container: Some(capi::Container {
                id: id.into(),
                labels,
                ..Default::default()
            }),
        }))
        .await?;
    Ok(())
}

async fn signal(ctx: &Ctx, id: &str, sig: u32, all: bool) -> Result<(), tonic::Status> {
    TasksClient::new(ctx.ch.clone())
        .kill(ctx.req(tapi::KillRequest {
            container_id: id.into(),
            exec_id: String::new(),
            signal: sig,
            all,
        }))
        .await
        .map(|_| ())
}

/// A frozen task takes its signal only once thawed (as docker resumes one
/// it signals).
async fn thaw_if_paused(ctx: &Ctx, id: &str, state: &str) {
    if state == "paused" {
        let _ = TasksClient::new(ctx.ch.clone())
            .resume(ctx.req(tapi::ResumeTaskRequest {
                container_id: id.into(),
            }))
            .await;
    }
}

/// Waits for the container's task to exit; its exit status.
fn waiter(ctx: &Ctx, id: &str) -> tokio::task::JoinHandle<Result<u32, tonic::Status>> {
    let mut cl = TasksClient::new(ctx.ch.clone());
    let req = ctx.req(tapi::WaitRequest {
        container_id: id.into(),
        exec_id: String::new(),
    });
    tokio::spawn(async move { cl.wait(req).await.map(|r| r.into_inner().exit_status) })
}

/// `stop`: `sig` (default: the image's stop signal, else SIGTERM), then
/// SIGKILL (to every process) after `grace` seconds (-1: never). A
/// container that is not running is left as it is.
async fn stop(ctx: &Ctx, id: &str, grace: i64, sig: Option<u32>) -> Result<()> {
    let c = get_container(ctx, id).await?;
    let sig = match sig {
        Some(s) => s,
        None => match c.labels.get(crate::spec_more::STOP_SIGNAL) {
            Some(s) => crate::cli::parse_signal(s).map_err(|e| {
                CtlError(format!("{id}'s image stop signal: {e} (give one with -s)"))
            })?,
            None => libc::SIGTERM as u32,
        },
    };
    mark_stopped(ctx, id, true).await?;
    let task = get_task(ctx, id).await?;
    if !is_live(task.as_ref()) {
        return Ok(());
    }
    let state = state_name(task.as_ref());
    let mut done = waiter(ctx, id);
    if let Err(e) = signal(ctx, id, sig, false).await
        && is_live(get_task(ctx, id).await?.as_ref())
    {
        return Err(e.into());
    }
    thaw_if_paused(ctx, id, state).await;
    if grace >= 0 {
        let grace = Duration::from_secs(grace.unsigned_abs());
        if tokio::time::timeout(grace, &mut done).await.is_ok() {
            return Ok(());
        }
        if let Err(e) = signal(ctx, id, libc::SIGKILL as u32, true).await
            && is_live(get_task(ctx, id).await?.as_ref())
        {
            return Err(e.into());
        }
    }
    done.await
        .map_err(|e| CtlError(format!("wait for {id}: {e}")))??;
    Ok(())
}

/// Makes the container's next task: the old one (exited, or created and
/// never started) is deleted first; the stop mark is cleared.
async fn fresh_task(ctx: &Ctx, id: &str, stdio: [String; 3]) -> Result<bool> {
    let c = get_container(ctx, id).await?;
    let mut tasks = TasksClient::new(ctx.ch.clone());
    if get_task(ctx, id).await?.is_some() {
        tasks
            .delete(ctx.req(tapi::DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await?;
    }
    mark_stopped(ctx, id, false).await?;
    let rootfs = if c.snapshot_key.is_empty() {
        Vec::new()
    } else {
        SnapshotsClient::new(ctx.ch.clone())
            .mounts(ctx.req(sapi::MountsRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            }))
            .await?
            .into_inner()
            .mounts
    };
    let terminal = spec_of(&c)["process"]["terminal"]
        .as_bool()
        .unwrap_or(false);
    let [stdin, stdout, stderr] = stdio;
    let req = tapi::CreateTaskRequest {
        container_id: id.into(),
        rootfs,
        stdin,
        stdout,
        stderr,
        terminal,
        ..Default::default()
    };
    tasks.create(ctx.req(req)).await?;
    Ok(terminal)
}

async fn start_task(ctx: &Ctx, id: &str) -> Result<()> {
    TasksClient::new(ctx.ch.clone())
        .start(ctx.req(tapi::StartRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }))
        .await?;
    Ok(())
}

/// `start`: a new task with empty stdio (berthd logs it, see the
/// `berth.log-driver` label); a running container is left running.
async fn start(ctx: &Ctx, id: &str) -> Result<()> {
    if is_live(get_task(ctx, id).await?.as_ref()) {
        return Ok(());
    }
    fresh_task(ctx, id, Default::default()).await?;
    start_task(ctx, id).await
}

/// `start -a`: the new task's output comes to berthctl through FIFOs, as
/// with an attached `run`, until it exits; its exit code is berthctl's.
async fn start_attached(ctx: &Ctx, id: &str) -> Result<()> {
    if is_live(get_task(ctx, id).await?.as_ref()) {
        bail!(CtlError(format!(
            "container {id} is already running: start -a attaches only to a container it starts"
        )));
    }
    let c = get_container(ctx, id).await?;
    let terminal = spec_of(&c)["process"]["terminal"]
        .as_bool()
        .unwrap_or(false);
    let fifos = Fifos::create(id, false, terminal)?;
    let attached = Attached::start(&fifos, false)?;
    let caught = CaughtSignals::catch();
    fresh_task(
        ctx,
        id,
        [String::new(), fifos.stdout.clone(), fifos.stderr.clone()],
    )
    .await?;
    let done = waiter(ctx, id);
    start_task(ctx, id).await?;
    let fwd = caught.forward(ctx, id, "", terminal);
    let code = done
        .await
        .map_err(|e| CtlError(format!("wait for {id}: {e}")))??;
    fwd.abort();
    attached.drain().await;
    match code {
        0 => Ok(()),
        c => Err(ExitCode(i32::try_from(c).unwrap_or(255)).into()),
    }
}

/// `kill`: the signal to the container's main process.
async fn kill(ctx: &Ctx, id: &str, sig: u32) -> Result<()> {
    get_container(ctx, id).await?;
    let task = get_task(ctx, id).await?;
    if !is_live(task.as_ref()) {
        bail!(CtlError(format!(
            "container {id} is not running (see berthctl ps -a)"
        )));
    }
    mark_stopped(ctx, id, true).await?;
    signal(ctx, id, sig, false).await?;
    thaw_if_paused(ctx, id, state_name(task.as_ref())).await;
    Ok(())
}

/// `rm`: the task (killed first with `force`), the container, then its
/// snapshot.
pub(crate) async fn rm(ctx: &Ctx, id: &str, force: bool) -> Result<()> {
    let c = get_container(ctx, id).await?;
    let task = get_task(ctx, id).await?;
    if is_live(task.as_ref()) {
        if !force {
            bail!(CtlError(format!(
                "container {id} is running: stop it first (berthctl stop {id}) or remove it with rm -f"
            )));
        }
        // So that berthd's restart policy does not bring it back meanwhile.
        mark_stopped(ctx, id, true).await?;
        let done = waiter(ctx, id);
        signal(ctx, id, libc::SIGKILL as u32, true).await?;
        thaw_if_paused(ctx, id, state_name(task.as_ref())).await;
        tokio::time::timeout(Duration::from_secs(30), done)
            .await
            .map_err(|_| CtlError(format!("{id} did not die within 30 s of SIGKILL")))?
            .map_err(|e| CtlError(format!("wait for {id}: {e}")))??;
    }
    if task.is_some() {
        TasksClient::new(ctx.ch.clone())
            .delete(ctx.req(tapi::DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await?;
    }
    ContainersClient::new(ctx.ch.clone())
        .delete(ctx.req(capi::DeleteContainerRequest { id: id.into() }))
        .await?;
    if !c.snapshot_key.is_empty() {
        match SnapshotsClient::new(ctx.ch.clone())
            .remove(ctx.req(sapi::RemoveSnapshotRequest {
                snapshotter: c.snapshotter,
                key: c.snapshot_key.clone(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => eprintln!(
                "berthctl: {id} is removed, but not its snapshot {}: {}",
                c.snapshot_key,
                status_error(&s)
            ),
        }
    }
    Ok(())
}

/// `wait`: the exit code of the container's task, once it exits.
async fn wait(ctx: &Ctx, id: &str) -> Result<u32> {
    get_container(ctx, id).await?;
    if get_task(ctx, id).await?.is_none() {
        bail!(CtlError(format!(
            "container {id} has no task to wait for: start it first (berthctl start {id})"
        )));
    }
    Ok(waiter(ctx, id)
        .await
        .map_err(|e| CtlError(format!("wait for {id}: {e}")))??)
}
