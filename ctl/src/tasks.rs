//! `berthctl containers …` and `berthctl tasks …`.

use crate::cli::{Containers, Format, Tasks};
use crate::ctx::Ctx;
use crate::error::CtlError;
use crate::error::ExitCode;
use crate::output::{Table, labels as fmt_labels, time_json};
use crate::stdio::{Attached, CaughtSignals, Fifos, RawTerminal, terminal_size};
use anyhow::{Result, bail};
use berth_proto::pb::containerd::v1::types::Status;
use berth_proto::services::containers::v1 as capi;
use berth_proto::services::containers::v1::containers_client::ContainersClient;
use berth_proto::services::snapshots::v1 as sapi;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::services::tasks::v1 as tapi;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use serde_json::json;
use std::io::IsTerminal;

fn status(s: i32) -> &'static str {
    match Status::try_from(s).unwrap_or(Status::Unknown) {
        Status::Created => "CREATED",
        Status::Running => "RUNNING",
        Status::Stopped => "STOPPED",
        Status::Paused => "PAUSED",
        Status::Pausing => "PAUSING",
        Status::Unknown => "UNKNOWN",
    }
}

/// A signal by name (SIGKILL, KILL) or number.
pub fn parse_signal(s: &str) -> Result<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let name = s.to_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as u32)
        .map_err(|_| CtlError(format!("unknown signal {s:?}")).into())
}

pub async fn containers(ctx: &Ctx, c: Containers) -> Result<()> {
    let mut cl = ContainersClient::new(ctx.ch.clone());
    match c {
        Containers::Ls { quiet, filters } => {
            let list = cl
                .list(ctx.req(capi::ListContainersRequest { filters }))
                .await?
                .into_inner()
                .containers;
            if quiet {
                list.iter().for_each(|c| println!("{}", c.id));
                return Ok(());
            }
            let mut t = Table::new(&["CONTAINER", "IMAGE", "RUNTIME"]);
            for c in list {
                let rt = c.runtime.clone().unwrap_or_default().name;
                t.row(
                    vec![c.id.clone(), c.image.clone(), rt.clone()],
                    json!({"id": c.id, "image": c.image, "runtime": rt, "labels": c.labels,
                           "created_at": time_json(c.created_at.as_ref()),
                           "updated_at": time_json(c.updated_at.as_ref())}),
                );
            }
            t.print(ctx.format)?;
        }
        Containers::Info { id } => {
            let c = cl
                .get(ctx.req(capi::GetContainerRequest { id }))
                .await?
                .into_inner()
                .container
                .unwrap_or_default();
            let spec: serde_json::Value = c
                .spec
                .as_ref()
                .and_then(|s| serde_json::from_slice(&s.value).ok())
                .unwrap_or(serde_json::Value::Null);
            let v = json!({
                "id": c.id, "image": c.image, "labels": c.labels,
                "runtime": c.runtime.map(|r| r.name),
                "snapshotter": c.snapshotter, "snapshot_key": c.snapshot_key,
                "created_at": time_json(c.created_at.as_ref()), "updated_at": time_json(c.updated_at.as_ref()),
                "spec": spec,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Containers::Rm { ids } => {
            for id in ids {
                let c = cl
                    .get(ctx.req(capi::GetContainerRequest { id: id.clone() }))
                    .await?
                    .into_inner()
                    .container
                    .unwrap_or_default();
                let running = TasksClient::new(ctx.ch.clone())
                    .get(ctx.req(tapi::GetRequest {
                        container_id: id.clone(),
                        exec_id: String::new(),
                    }))
                    .await
                    .is_ok();
                if running {
                    bail!(CtlError(format!(
                        "container {id} has a task: delete it first (berthctl tasks rm {id})"
                    )));
                }
                cl.delete(ctx.req(capi::DeleteContainerRequest { id: id.clone() }))
                    .await?;
                if !c.snapshot_key.is_empty() {
                    let _ = SnapshotsClient::new(ctx.ch.clone())
                        .remove(ctx.req(sapi::RemoveSnapshotRequest {
                            snapshotter: c.snapshotter,
                            key: c.snapshot_key,
                        }))
                        .await;
                }
                println!("{id}");
            }
        }
        Containers::Prune(a) => crate::prune::container_prune(ctx, a.force).await?,
        Containers::Label { id, labels } => {
            let l = crate::ctx::parse_labels(&labels);
            let mask = crate::ctx::label_mask(&l);
            let c = cl
                .update(ctx.req(capi::UpdateContainerRequest {
                    container: Some(capi::Container {
                        id,
                        labels: l,
                        ..Default::default()
                    }),
                    update_mask: Some(mask),
                }))
                .await?
                .into_inner()
                .container
                .unwrap_or_default();
            println!("{}", fmt_labels(&c.labels));
        }
    }
    Ok(())
}

pub async fn tasks(ctx: &Ctx, t: Tasks) -> Result<()> {
    let mut cl = TasksClient::new(ctx.ch.clone());
    match t {
        Tasks::Ls { quiet } => {
            let list = cl
                .list(ctx.req(tapi::ListTasksRequest {
                    filter: String::new(),
                }))
                .await?
                .into_inner()
                .tasks;
            // containerd names a task by `id` only; berthd fills container_id.
            let id = |p: &berth_proto::pb::containerd::v1::types::Process| {
                if p.container_id.is_empty() {
                    p.id.clone()
                } else {
                    p.container_id.clone()
                }
            };
            if quiet {
                list.iter().for_each(|p| println!("{}", id(p)));
                return Ok(());
            }
            let mut tb = Table::new(&["TASK", "PID", "STATUS"]);
            for p in list {
                let st = status(p.status);
                let id = id(&p);
                tb.row(
                    vec![id.clone(), p.pid.to_string(), st.to_string()],
                    json!({"id": id, "pid": p.pid, "status": st, "exit_status": p.exit_status,
                           "exited_at": time_json(p.exited_at.as_ref())}),
                );
            }
            tb.print(ctx.format)?;
        }
        Tasks::Start { id } => {
            cl.start(ctx.req(tapi::StartRequest {
                container_id: id,
                exec_id: String::new(),
            }))
            .await?;
        }
        Tasks::Kill {
            id,
            signal,
            all,
            exec_id,
        } => {
            cl.kill(ctx.req(tapi::KillRequest {
                container_id: id,
                exec_id: exec_id.unwrap_or_default(),
                signal: parse_signal(&signal)?,
                all,
            }))
            .await?;
        }
        Tasks::Ps { id } => {
            let ps = cl
                .list_pids(ctx.req(tapi::ListPidsRequest { container_id: id }))
                .await?
                .into_inner()
                .processes;
            let mut tb = Table::new(&["PID", "INFO"]);
            for p in ps {
                let info = p
                    .info
                    .as_ref()
                    .and_then(
                        berth_proto::typeurl::unpack::<
                            berth_proto::pb::containerd::runc::v1::ProcessDetails,
                        >,
                    )
                    .map_or_else(|| "-".to_string(), |d| format!("exec_id:{}", d.exec_id));
                tb.row(
                    vec![p.pid.to_string(), info.clone()],
                    json!({"pid": p.pid, "info": info}),
                );
            }
            tb.print(ctx.format)?;
        }
        Tasks::Metrics { id } => {
            let ms = cl
                .metrics(ctx.req(tapi::MetricsRequest {
                    filters: vec![format!("id=={id}")],
                }))
                .await?
                .into_inner()
                .metrics;
            let m = ms
                .into_iter()
                .next()
                .ok_or_else(|| CtlError(format!("no metrics for task {id}: is it running?")))?;
            let s = m
                .data
                .as_ref()
                .and_then(crate::metrics::decode)
                .ok_or_else(|| {
                    CtlError("the metrics are in a format berthctl does not know".into())
                })?;
            if ctx.format == Format::Json {
                println!("{}", s.json(&id));
            } else {
                let mut tb = Table::new(&["METRIC", "VALUE"]);
                for (k, v) in s.rows() {
                    tb.row(vec![k.to_string(), v], json!({}));
                }
                tb.print(ctx.format)?;
            }
        }
        Tasks::Pause { id } => {
            cl.pause(ctx.req(tapi::PauseTaskRequest { container_id: id }))
                .await?;
        }
        Tasks::Resume { id } => {
            cl.resume(ctx.req(tapi::ResumeTaskRequest { container_id: id }))
                .await?;
        }
        Tasks::Rm { ids, force } => {
            for id in ids {
                if force {
                    let _ = cl
                        .kill(ctx.req(tapi::KillRequest {
                            container_id: id.clone(),
                            exec_id: String::new(),
                            signal: 9,
                            all: true,
                        }))
                        .await;
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        cl.wait(ctx.req(tapi::WaitRequest {
                            container_id: id.clone(),
                            exec_id: String::new(),
                        })),
                    )
                    .await;
                }
                let d = cl
                    .delete(ctx.req(tapi::DeleteTaskRequest {
                        container_id: id.clone(),
                    }))
                    .await?
                    .into_inner();
                println!("{id} (exit status {})", d.exit_status);
            }
        }
        Tasks::Attach { id } => {
            let p = cl
                .get(ctx.req(tapi::GetRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                }))
                .await?
                .into_inner()
                .process
                .unwrap_or_default();
            if let Ok(d) = berth_proto::jsonlog::Destination::parse(&p.stdout)
                && d.format == berth_proto::crilog::Format::Cri
            {
                return follow_cri(ctx, &id, &d.path).await;
            }
            if p.stdout.starts_with(berth_proto::jsonlog::SCHEME) {
                let a = crate::cli::LogsArgs {
                    follow: true,
                    tail: "all".into(),
                    since: None,
                    timestamps: false,
                    container: id,
                };
                return crate::logs::run(ctx, a).await;
            }
            let Some(log) = p.stdout.strip_prefix("file://") else {
                bail!(CtlError(format!(
                    "task {id} has no log to attach to: only tasks started with `berthctl run -d` keep one"
                )));
            };
            follow(ctx, &id, log).await?;
        }
        Tasks::Exec {
            exec_id,
            tty,
            interactive,
            cwd,
            env,
            user,
            detach,
            id,
            command,
        } => {
            exec(
                ctx,
                &id,
                exec_id,
                tty,
                interactive,
                cwd,
                env,
                user,
                detach,
                command,
            )
            .await?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn exec(
    ctx: &Ctx,
    id: &str,
    exec_id: Option<String>,
    tty: bool,
    interactive: bool,
    cwd: Option<String>,
    env: Vec<String>,
    user: Option<String>,
    detach: bool,
    command: Vec<String>,
) -> Result<()> {
    let c = ContainersClient::new(ctx.ch.clone())
        .get(ctx.req(capi::GetContainerRequest { id: id.into() }))
        .await?
        .into_inner()
        .container
        .unwrap_or_default();
    let spec: serde_json::Value = c
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .unwrap_or_default();
    let mut process = spec["process"].clone();
    process["args"] = json!(command);
    process["terminal"] = json!(tty);
    process["consoleSize"] = match terminal_size() {
        Some((w, h)) if tty => json!({"height": h, "width": w}),
        _ => serde_json::Value::Null,
    };
    if let Some(d) = cwd {
        process["cwd"] = json!(d);
    }
    if !env.is_empty() {
        let mut e: Vec<String> = process["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        // One value per name: a program's getenv sees the first.
        for kv in env {
            let key = kv.split('=').next().unwrap_or_default();
            e.retain(|x| x.split('=').next() != Some(key));
            e.push(kv);
        }
        process["env"] = json!(e);
    }
    if let Some(u) = user {
        process["user"] = serde_json::to_value(crate::userdb::for_exec(ctx, id, &u).await?)?;
    }
    if let Some(e) = crate::stdio::tty_refusal(tty, detach, std::io::stdin().is_terminal()) {
        bail!(CtlError(e));
    }
    let exec_id = exec_id
        .unwrap_or_else(|| format!("exec-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    let interactive = interactive || tty;
    let fifos = if detach {
        None
    } else {
        Some(Fifos::create(&format!("{id}-{exec_id}"), interactive, tty)?)
    };
    let attached = match &fifos {
        Some(f) => Some(Attached::start(f, interactive)?),
        None => None,
    };
    let (stdin, stdout, stderr) = fifos
        .as_ref()
        .map_or((String::new(), String::new(), String::new()), |f| {
            (f.stdin.clone(), f.stdout.clone(), f.stderr.clone())
        });
    let mut cl = TasksClient::new(ctx.ch.clone());
    let caught = (!detach).then(CaughtSignals::catch);
    cl.exec(ctx.req(tapi::ExecProcessRequest {
        container_id: id.into(),
        stdin,
        stdout,
        stderr,
        terminal: tty,
        spec: Some(prost_types::Any {
            type_url: berth_proto::typeurl::OCI_PROCESS_URL.into(),
            value: serde_json::to_vec(&process)?,
        }),
        exec_id: exec_id.clone(),
    }))
    .await?;
    let waiter = {
        let mut c2 = cl.clone();
        let req = ctx.req(tapi::WaitRequest {
            container_id: id.into(),
            exec_id: exec_id.clone(),
        });
        tokio::spawn(async move { c2.wait(req).await })
    };
    let _raw = (tty && std::io::stdin().is_terminal()).then(RawTerminal::enable);
    cl.start(ctx.req(tapi::StartRequest {
        container_id: id.into(),
        exec_id: exec_id.clone(),
    }))
    .await?;
    // After Start: runc's shim opens an exec's FIFOs only then, and a
    // CloseIO before that (an empty input) would be lost.
    if interactive && let Some(f) = &fifos {
        Attached::forward_stdin(f, ctx, id, &exec_id)?;
    }
    if detach {
        println!("{exec_id}");
        return Ok(());
    }
    if tty && let Some((w, h)) = terminal_size() {
        let _ = cl
            .resize_pty(ctx.req(tapi::ResizePtyRequest {
                container_id: id.into(),
                exec_id: exec_id.clone(),
                width: w,
                height: h,
            }))
            .await;
    }
    let fwd = caught.map(|c| c.forward(ctx, id, &exec_id, tty));
    let w = waiter.await.map_err(|e| CtlError(format!("wait: {e}")))?;
    if let Some(f) = fwd {
        f.abort();
    }
    if let Some(a) = attached {
        a.drain().await;
    }
    let _ = cl
        .delete_process(ctx.req(tapi::DeleteProcessRequest {
            container_id: id.into(),
            exec_id,
        }))
        .await;
    match w?.into_inner().exit_status {
        0 => Ok(()),
        c => Err(ExitCode(c as i32).into()),
    }
}

/// Prints a task's log as it grows until the task exits.
async fn follow(ctx: &Ctx, id: &str, log: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut f = tokio::fs::File::open(log)
        .await
        .map_err(|e| CtlError(format!("open {log}: {e}")))?;
    let mut cl = TasksClient::new(ctx.ch.clone());
    let mut wait = Box::pin(cl.wait(ctx.req(tapi::WaitRequest {
        container_id: id.into(),
        exec_id: String::new(),
    })));
    let mut out = tokio::io::stdout();
    let mut buf = vec![0u8; 32 << 10];
    let mut done = false;
    loop {
        let n = f.read(&mut buf).await?;
        if n > 0 {
            out.write_all(&buf[..n]).await?;
            out.flush().await?;
            continue;
        }
        if done {
            return Ok(());
        }
        tokio::select! {
            _ = &mut wait => done = true,
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
}

/// Prints a CRI-format log (a kubelet's, on this host) from its start, each
/// line to the stream it came from, until the task exits; across reopens.
async fn follow_cri(ctx: &Ctx, id: &str, path: &std::path::Path) -> Result<()> {
    use berth_proto::crilog::{Follower, Stream};
    use tokio::io::AsyncWriteExt;
    let mut f = Follower::new(path, 0);
    let mut cl = TasksClient::new(ctx.ch.clone());
    let mut wait = Box::pin(cl.wait(ctx.req(tapi::WaitRequest {
        container_id: id.into(),
        exec_id: String::new(),
    })));
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    let mut done = false;
    loop {
        let lines = f.poll();
        for l in &lines {
            match l.stream {
                Stream::Stdout => out.write_all(&l.content).await?,
                Stream::Stderr => err.write_all(&l.content).await?,
            }
        }
        out.flush().await?;
        if !lines.is_empty() {
            continue;
        }
        if done {
            return Ok(());
        }
        tokio::select! {
            _ = &mut wait => done = true,
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
}
