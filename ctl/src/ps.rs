//! `berthctl ps` and `inspect`: a container's record joined with its task
//! (if any) into docker's view of it: state, "Up 5 seconds" / "Exited (1)
//! 3 minutes ago" / "Created", command, ports, networks. The lookups here
//! ([`get_container`], [`get_task`]) serve the other container commands.

use crate::cli::Command;
use crate::ctx::Ctx;
use crate::error::CtlError;
use crate::output::{Table, rfc3339};
use anyhow::Result;
use berth_proto::labels as L;
use berth_proto::pb::containerd::v1::types::{Process, Status};
use berth_proto::services::containers::v1 as capi;
use berth_proto::services::containers::v1::containers_client::ContainersClient;
use berth_proto::services::tasks::v1 as tapi;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use serde_json::{Value, json};
use std::collections::HashMap;

pub async fn run(ctx: &Ctx, c: Command) -> Result<()> {
    match c {
        Command::Ps(a) => ps(ctx, a.all, a.quiet).await,
        Command::Inspect(a) => inspect(ctx, &a.names).await,
        _ => unreachable!("dispatched by commands"),
    }
}

/// A container by name, or a message saying there is none.
pub(crate) async fn get_container(ctx: &Ctx, id: &str) -> Result<capi::Container> {
    match ContainersClient::new(ctx.ch.clone())
        .get(ctx.req(capi::GetContainerRequest { id: id.into() }))
        .await
    {
        Ok(r) => Ok(r.into_inner().container.unwrap_or_default()),
        Err(s) if s.code() == tonic::Code::NotFound => {
            Err(CtlError(format!("no such container: {id} (see berthctl ps -a)")).into())
        }
        Err(s) => Err(s.into()),
    }
}

/// The container's task, if it has one.
pub(crate) async fn get_task(ctx: &Ctx, id: &str) -> Result<Option<Process>> {
    match TasksClient::new(ctx.ch.clone())
        .get(ctx.req(tapi::GetRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }))
        .await
    {
        Ok(r) => Ok(r.into_inner().process),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s.into()),
    }
}

/// The container's spec as JSON (null if it has none).
pub(crate) fn spec_of(c: &capi::Container) -> Value {
    c.spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .unwrap_or(Value::Null)
}

/// A task's state in docker's words.
pub(crate) fn state_name(task: Option<&Process>) -> &'static str {
    match task.map(|p| Status::try_from(p.status).unwrap_or(Status::Unknown)) {
        None | Some(Status::Created) => "created",
        Some(Status::Running) => "running",
        Some(Status::Paused | Status::Pausing) => "paused",
        Some(Status::Stopped) => "exited",
        Some(Status::Unknown) => "unknown",
    }
}

/// Whether the task has a live process (running or paused).
pub(crate) fn is_live(task: Option<&Process>) -> bool {
    matches!(state_name(task), "running" | "paused")
}

/// docker's human durations (its `units.HumanDuration`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (minutes, hours) = (s / 60, (s + 1800) / 3600);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", s / 3600 / 24 / 365),
    }
}

/// docker's STATUS column: "Up 5 seconds", "Up 2 minutes (Paused)",
/// "Exited (1) 3 minutes ago", "Created". `started` and `now` are Unix
/// seconds; without a start time, "Up".
pub fn status_text(task: Option<&Process>, started: Option<i64>, now: i64) -> String {
    let up = || match started {
        Some(t) => format!("Up {}", human_duration(now - t)),
        None => "Up".into(),
    };
    match (state_name(task), task) {
        ("running", _) => up(),
        ("paused", _) => format!("{} (Paused)", up()),
        ("exited", Some(p)) => match p.exited_at.as_ref() {
            Some(t) => format!(
                "Exited ({}) {} ago",
                p.exit_status,
                human_duration(now - t.seconds)
            ),
            None => format!("Exited ({})", p.exit_status),
        },
        ("unknown", _) => "Unknown".into(),
        _ => "Created".into(),
    }
}

/// When process `pid` started (Unix seconds), from /proc: berthctl talks
/// to a daemon on this host, and the task API has no start time.
pub(crate) fn started_at(pid: u32) -> Option<i64> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces and parentheses).
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: i64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1);
    Some(btime + ticks / hz)
}

/// The process's command line, as docker's COMMAND column (quoted, cut to
/// 20 characters).
pub fn short_command(args: &[String]) -> String {
    let full = args.join(" ");
    let cut: String = if full.chars().count() > 20 {
        full.chars().take(19).chain(std::iter::once('…')).collect()
    } else {
        full
    };
    format!("\"{cut}\"")
}

/// The published ports of the `berth.ports` label, as docker prints them
/// (`0.0.0.0:8080->80/tcp`), and as JSON.
fn ports(labels: &HashMap<String, String>) -> (String, Vec<Value>) {
    let mut text = Vec::new();
    let mut js = Vec::new();
    for item in L::items(labels.get(L::PORTS).map_or("", String::as_str)) {
        let Ok(p) = L::PortMapping::parse(item) else {
            continue;
        };
        let ip = p
            .host_ip
            .map_or_else(|| "0.0.0.0".to_string(), |i| i.to_string());
        text.push(format!(
            "{ip}:{}->{}/{}",
            p.host_port,
            p.container_port,
            p.protocol.as_str()
        ));
        js.push(json!({"host_ip": ip, "host_port": p.host_port,
                       "container_port": p.container_port, "protocol": p.protocol.as_str()}));
    }
    (text.join(", "), js)
}

fn args_of(spec: &Value) -> Vec<String> {
    spec["process"]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect()
}

fn ts(secs: i64) -> String {
    rfc3339(Some(&prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }))
}

/// One container's state as JSON (shared by `ps` and `inspect`).
fn state_json(task: Option<&Process>, started: Option<i64>, now: i64) -> Value {
    let exited = state_name(task) == "exited";
    json!({
        "status": state_name(task),
        "running": is_live(task),
        "paused": state_name(task) == "paused",
        "pid": task.filter(|_| is_live(task)).map(|p| p.pid),
        "exit_code": task.filter(|_| exited).map(|p| p.exit_status),
        "started_at": started.map(ts),
        "finished_at": task.filter(|_| exited).and_then(|p| p.exited_at.as_ref()).map(|t| rfc3339(Some(t))),
        "text": status_text(task, started, now),
    })
}

/// Every task of the namespace, by the id of its container.
pub(crate) async fn tasks_by_container(ctx: &Ctx) -> Result<HashMap<String, Process>> {
    Ok(TasksClient::new(ctx.ch.clone())
        .list(ctx.req(tapi::ListTasksRequest {
            filter: String::new(),
        }))
        .await?
        .into_inner()
        .tasks
        .into_iter()
        .map(|p| {
            // containerd names a task by `id` only; berthd fills container_id.
            let id = if p.container_id.is_empty() {
                p.id.clone()
            } else {
                p.container_id.clone()
            };
            (id, p)
        })
        .collect())
}

async fn ps(ctx: &Ctx, all: bool, quiet: bool) -> Result<()> {
    let mut list = ContainersClient::new(ctx.ch.clone())
        .list(ctx.req(capi::ListContainersRequest { filters: vec![] }))
        .await?
        .into_inner()
        .containers;
    let tasks = tasks_by_container(ctx).await?;
    // Newest first, as docker lists them.
    list.sort_by_key(|c| std::cmp::Reverse(c.created_at.as_ref().map(|t| (t.seconds, t.nanos))));
    let now = chrono::Utc::now().timestamp();
    let mut t = Table::new(&["NAME", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS"]);
    for c in list {
        let task = tasks.get(&c.id);
        if !all && !is_live(task) {
            continue;
        }
        if quiet {
            println!("{}", c.id);
            continue;
        }
        let started = task
            .filter(|_| is_live(task))
            .and_then(|p| started_at(p.pid));
        let args = args_of(&spec_of(&c));
        let (port_text, port_json) = ports(&c.labels);
        let created = c.created_at.as_ref().map(|t| t.seconds);
        let state = state_json(task, started, now);
        t.row(
            vec![
                c.id.clone(),
                c.image.clone(),
                short_command(&args),
                created.map_or_else(
                    || "-".into(),
                    |s| format!("{} ago", human_duration(now - s)),
                ),
                status_text(task, started, now),
                port_text,
            ],
            json!({"name": c.id, "image": c.image, "command": args.join(" "),
                   "created": rfc3339(c.created_at.as_ref()), "state": state["status"],
                   "status": state["text"], "pid": state["pid"], "exit_code": state["exit_code"],
                   "ports": port_json, "labels": c.labels}),
        );
    }
    if !quiet {
        t.print(ctx.format)?;
    }
    Ok(())
}

async fn inspect(ctx: &Ctx, names: &[String]) -> Result<()> {
    let now = chrono::Utc::now().timestamp();
    let mut out = Vec::new();
    for id in names {
        let c = get_container(ctx, id).await?;
        let task = get_task(ctx, id).await?;
        let live = is_live(task.as_ref());
        let started = task
            .as_ref()
            .filter(|_| live)
            .and_then(|p| started_at(p.pid));
        let spec = spec_of(&c);
        let p = &spec["process"];
        let (_, port_json) = ports(&c.labels);
        let addrs = task
            .as_ref()
            .filter(|_| live)
            .map(|t| crate::netinfo::addresses(t.pid))
            .unwrap_or_default();
        let networks: serde_json::Map<String, Value> =
            L::items(c.labels.get(L::NETWORKS).map_or("", String::as_str))
                .enumerate()
                .map(|(i, n)| {
                    let ifname = format!("eth{i}");
                    let ips: Vec<&String> = addrs
                        .iter()
                        .filter(|(dev, _)| *dev == ifname)
                        .map(|(_, ip)| ip)
                        .collect();
                    (
                        n.to_string(),
                        json!({"interface": ifname, "ip_addresses": ips}),
                    )
                })
                .collect();
        let mounts: Vec<Value> = spec["mounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["type"] == "bind")
            .map(|m| {
                let ro = m["options"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|x| x == "ro"));
                json!({"source": m["source"], "destination": m["destination"], "read_only": ro})
            })
            .collect();
        let res = &spec["linux"]["resources"];
        let quota = res["cpu"]["quota"].as_f64();
        let period = res["cpu"]["period"].as_f64().filter(|p| *p > 0.0);
        out.push(json!({
            "name": c.id,
            "image": c.image,
            "created": rfc3339(c.created_at.as_ref()),
            "runtime": c.runtime.as_ref().map(|r| r.name.clone()),
            "snapshotter": c.snapshotter,
            "snapshot_key": c.snapshot_key,
            "labels": c.labels,
            "state": state_json(task.as_ref(), started, now),
            "config": {
                "cmd": args_of(&spec),
                "env": p["env"],
                "working_dir": p["cwd"],
                "user": p["user"],
                "tty": p["terminal"],
                "hostname": spec["hostname"],
            },
            "host_config": {
                "restart_policy": c.labels.get(L::RESTART).map_or("no", String::as_str),
                "stopped_by_user": c.labels.get(L::STOPPED).is_some_and(|v| v == "true"),
                "read_only_rootfs": spec["root"]["readonly"].as_bool().unwrap_or(false),
                "capabilities": p["capabilities"]["bounding"],
                "no_new_privileges": p["noNewPrivileges"],
                "seccomp": !spec["linux"]["seccomp"].is_null(),
                "memory_limit": res["memory"]["limit"],
                "cpus": quota.zip(period).map(|(q, p)| q / p),
                "pids_limit": res["pids"]["limit"],
            },
            "mounts": mounts,
            "networks": networks,
            "ports": port_json,
        }));
    }
    // JSON in either format, as docker's inspect.
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: Status, exit: u32, exited_at: Option<i64>) -> Process {
        Process {
            status: status as i32,
            exit_status: exit,
            pid: 42,
            exited_at: exited_at.map(|s| prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn durations_as_docker_words_them() {
        for (secs, want) in [
            (0, "Less than a second"),
            (1, "1 second"),
            (5, "5 seconds"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (180, "3 minutes"),
            (3599, "59 minutes"),
            (3600, "About an hour"),
            (5400, "2 hours"),
            (47 * 3600, "47 hours"),
            (3 * 86400, "3 days"),
            (20 * 86400, "2 weeks"),
            (90 * 86400, "3 months"),
            (3 * 365 * 86400, "3 years"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn status_strings() {
        let now = 1_000_000;
        assert_eq!(status_text(None, None, now), "Created");
        let created = task(Status::Created, 0, None);
        assert_eq!(status_text(Some(&created), None, now), "Created");
        let running = task(Status::Running, 0, None);
        assert_eq!(
            status_text(Some(&running), Some(now - 5), now),
            "Up 5 seconds"
        );
        assert_eq!(status_text(Some(&running), None, now), "Up");
        let paused = task(Status::Paused, 0, None);
        assert_eq!(
            status_text(Some(&paused), Some(now - 120), now),
            "Up 2 minutes (Paused)"
        );
        let exited = task(Status::Stopped, 1, Some(now - 180));
        assert_eq!(
            status_text(Some(&exited), None, now),
            "Exited (1) 3 minutes ago"
        );
        let killed = task(Status::Stopped, 137, None);
        assert_eq!(status_text(Some(&killed), None, now), "Exited (137)");
        assert!(is_live(Some(&running)) && is_live(Some(&paused)));
        assert!(!is_live(Some(&exited)) && !is_live(None));
        let j = state_json(Some(&exited), None, now);
        assert_eq!(j["exit_code"], 1);
        assert!(j["pid"].is_null());
        assert_eq!(state_json(Some(&running), None, now)["pid"], 42);
    }

    #[test]
    fn commands_and_ports_as_docker_shows_them() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(short_command(&a(&["sleep", "5"])), "\"sleep 5\"");
        assert_eq!(
            short_command(&a(&["sh", "-c", "trap '' TERM; sleep 1000"])),
            "\"sh -c trap '' TERM;…\""
        );
        let labels = HashMap::from([(
            L::PORTS.to_string(),
            "8080:80/tcp,127.0.0.1:53:53/udp".to_string(),
        )]);
        let (text, js) = ports(&labels);
        assert_eq!(text, "0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp");
        assert_eq!(js[1]["host_port"], 53);
        assert_eq!(ports(&HashMap::new()).0, "");
    }

    #[test]
    fn this_process_has_a_start_time() {
        let t = started_at(std::process::id()).unwrap();
        let now = chrono::Utc::now().timestamp();
        assert!(t <= now && now - t < 3600, "{t} vs {now}");
        assert_eq!(started_at(0), None);
    }
}
