//! Commands that look into a running container: `exec` (docker's grammar
//! over `tasks exec`), `top` (the host's ps(1), filtered to the
//! container's processes, as docker does) and `stats` (live usage from the
//! task metrics, [`crate::metrics`]).

use crate::cli::{Command, ExecArgs, Format, StatsArgs, TopArgs};
use crate::ctx::Ctx;
use crate::error::CtlError;
use crate::metrics::Summary;
use crate::output::{Table, human_size};
use crate::ps::{get_container, get_task, is_live};
use anyhow::{Result, bail};
use berth_proto::services::tasks::v1 as tapi;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub async fn run(ctx: &Ctx, c: Command) -> Result<()> {
    match c {
        Command::Exec(a) => exec(ctx, a).await,
        Command::Top(a) => top(ctx, a).await,
        Command::Stats(a) => stats(ctx, a).await,
        _ => unreachable!("dispatched by commands"),
    }
}

/// The pid of the container's running task, or why there is none.
async fn running_pid(ctx: &Ctx, id: &str) -> Result<u32> {
    get_container(ctx, id).await?;
    match get_task(ctx, id).await? {
        Some(t) if is_live(Some(&t)) => Ok(t.pid),
        _ => bail!(CtlError(format!(
            "container {id} is not running: start it first (berthctl start {id})"
        ))),
    }
}

/// `-e KEY` (no value) takes this shell's value, or is dropped when unset.
fn caller_env(vars: impl IntoIterator<Item = String>) -> Vec<String> {
    vars.into_iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e)
            } else {
                std::env::var(&e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect()
}

async fn exec(ctx: &Ctx, a: ExecArgs) -> Result<()> {
    let id = a.container().to_string();
    running_pid(ctx, &id).await?;
    let env = caller_env(
        a.env_files
            .iter()
            .flat_map(|f| f.0.iter().cloned())
            .chain(a.env.iter().cloned()),
    );
    crate::tasks::exec(
        ctx,
        &id,
        None,
        a.tty,
        a.interactive,
        a.workdir.clone(),
        env,
        a.user.clone(),
        a.detach,
        a.command().to_vec(),
    )
    .await
}

/// ps(1)'s output, keeping the header and the rows whose PID column is in
/// `pids` (docker's `top`). The titles, and the kept rows split into as
/// many fields (the last takes the rest of the line).
fn filter_ps(out: &str, pids: &HashSet<u32>) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut lines = out.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let col = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| CtlError("ps printed no PID column: keep pid in its -o list".into()))?;
    let n = titles.len();
    let mut rows = Vec::new();
    for l in lines {
        let mut fields: Vec<String> = Vec::new();
        let mut rest = l.trim_start();
        while fields.len() + 1 < n && !rest.is_empty() {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            fields.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
        fields.push(rest.to_string());
        if row_pid(l, col).is_some_and(|p| pids.contains(&p)) {
            rows.push(fields);
        }
    }
    Ok((titles, rows))
}

/// The PID column's value of a ps row (the columns before the command
/// hold no spaces).
fn row_pid(line: &str, col: usize) -> Option<u32> {
    line.split_whitespace().nth(col)?.parse().ok()
}

async fn top(ctx: &Ctx, a: TopArgs) -> Result<()> {
    running_pid(ctx, &a.name).await?;
    let pids: HashSet<u32> = TasksClient::new(ctx.ch.clone())
        .list_pids(ctx.req(tapi::ListPidsRequest {
            container_id: a.name.clone(),
        }))
        .await?
        .into_inner()
        .processes
        .iter()
        .map(|p| p.pid)
        .collect();
    let args = if a.ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        a.ps_args.clone()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| CtlError(format!("run ps: {e}")))?;
    if !out.status.success() {
        bail!(CtlError(format!(
            "ps {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let (titles, rows) = filter_ps(&String::from_utf8_lossy(&out.stdout), &pids)?;
    let pid_col = titles.iter().position(|t| t == "PID").unwrap_or_default();
    if ctx.format == Format::Json {
        println!("{}", json!({"titles": titles, "processes": rows}));
        return Ok(());
    }
    // ps's own alignment: its header, then the container's rows.
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{}", text.lines().next().unwrap_or_default());
    for l in text.lines().skip(1) {
        if row_pid(l, pid_col).is_some_and(|p| pids.contains(&p)) {
            println!("{l}");
        }
    }
    Ok(())
}

/// This host's memory, docker's limit for a container without one.
fn host_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

async fn sample(ctx: &Ctx, id: &str) -> Result<Option<Summary>> {
    let ms = TasksClient::new(ctx.ch.clone())
        .metrics(ctx.req(tapi::MetricsRequest {
            filters: vec![format!("id=={id}")],
        }))
        .await?
        .into_inner()
        .metrics;
    Ok(ms
        .into_iter()
        .next()
        .and_then(|m| m.data.as_ref().and_then(crate::metrics::decode)))
}

/// One row of `stats`: CPU % from two samples `wall` apart (100 % is one
/// CPU, as docker counts), memory against its limit (the host's memory
/// when unlimited).
fn stats_row(
    id: &str,
    before: &Summary,
    now: &Summary,
    wall: Duration,
    host_mem: Option<u64>,
) -> (Vec<String>, Value) {
    let cpu_ns = now.cpu_total_ns.saturating_sub(before.cpu_total_ns) as f64;
    let cpu = if wall.is_zero() {
        0.0
    } else {
        cpu_ns / wall.as_nanos() as f64 * 100.0
    };
    let limit = if now.memory_limit >= (1 << 62) {
        host_mem.unwrap_or(now.memory_limit)
    } else {
        now.memory_limit
    };
    let mem_pct = if limit == 0 {
        0.0
    } else {
        now.memory_usage as f64 / limit as f64 * 100.0
    };
    let size = |n: u64| human_size(i64::try_from(n).unwrap_or(i64::MAX));
    (
        vec![
            id.to_string(),
            format!("{cpu:.2}%"),
            format!("{} / {}", size(now.memory_usage), size(limit)),
            format!("{mem_pct:.2}%"),
            now.pids_current.to_string(),
        ],
        json!({"name": id, "cpu_percent": cpu, "memory_usage": now.memory_usage,
               "memory_limit": limit, "memory_percent": mem_pct, "pids": now.pids_current}),
    )
}

async fn stats(ctx: &Ctx, a: StatsArgs) -> Result<()> {
    let names = if a.names.is_empty() {
        let mut v: Vec<String> = crate::ps::tasks_by_container(ctx)
            .await?
            .into_iter()
            .filter(|(_, p)| is_live(Some(p)))
            .map(|(id, _)| id)
            .collect();
        v.sort();
        v
    } else {
        for n in &a.names {
            running_pid(ctx, n).await?;
        }
        a.names.clone()
    };
    let host_mem = host_memory();
    let take = |names: Vec<String>| async move {
        let mut out = Vec::new();
        for n in names {
            if let Some(s) = sample(ctx, &n).await? {
                out.push((n, s));
            }
        }
        Ok::<_, anyhow::Error>((Instant::now(), out))
    };
    let mut before = take(names.clone()).await?;
    let clear = !a.no_stream && std::io::stdout().is_terminal() && ctx.format == Format::Table;
    loop {
        // The first interval is short so --no-stream answers quickly.
        let pause = if a.no_stream { 500 } else { 1000 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let now = take(names.clone()).await?;
        let wall = now.0.duration_since(before.0);
        let mut t = Table::new(&["NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"]);
        for (id, s) in &now.1 {
            let Some((_, b)) = before.1.iter().find(|(n, _)| n == id) else {
                continue;
            };
            let (cells, js) = stats_row(id, b, s, wall, host_mem);
            t.row(cells, js);
        }
        if clear {
            print!("\x1b[2J\x1b[H");
        }
        if ctx.format == Format::Json && !a.no_stream {
            // One line per sample, so a program can read the stream.
            let rows: Vec<Value> = now
                .1
                .iter()
                .filter_map(|(id, s)| {
                    let (_, b) = before.1.iter().find(|(n, _)| n == id)?;
                    Some(stats_row(id, b, s, wall, host_mem).1)
                })
                .collect();
            println!("{}", Value::Array(rows));
        } else {
            t.print(ctx.format)?;
        }
        std::io::stdout().flush()?;
        if a.no_stream {
            return Ok(());
        }
        before = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_rows_are_kept_by_pid() {
        let out = "UID        PID  PPID  C STIME TTY          TIME CMD\n\
                   root         1     0  0 10:00 ?        00:00:01 /sbin/init splash\n\
                   root      4242     1  0 10:01 ?        00:00:00 sh -c trap '' TERM; sleep 1000\n\
                   root      4243  4242  0 10:01 ?        00:00:00 sleep 1000\n";
        let (titles, rows) = filter_ps(out, &HashSet::from([4242, 4243])).unwrap();
        assert_eq!(titles.len(), 8);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][1], "4242");
        assert_eq!(rows[0][7], "sh -c trap '' TERM; sleep 1000");
        assert!(filter_ps("USER CMD\nroot x\n", &HashSet::new()).is_err());
    }

    #[test]
    fn stats_rows() {
        let s = |cpu: u64, mem: u64, limit: u64| Summary {
            cgroup: "v1",
            memory_usage: mem,
            memory_limit: limit,
            memory_max: None,
            cpu_total_ns: cpu,
            cpu_kernel_ns: 0,
            cpu_user_ns: 0,
            pids_current: 3,
            pids_limit: 0,
        };
        let (cells, js) = stats_row(
            "web",
            &s(1_000_000_000, 0, 64 << 20),
            &s(1_500_000_000, 16 << 20, 64 << 20),
            Duration::from_secs(1),
            Some(1 << 30),
        );
        assert_eq!(
            cells,
            ["web", "50.00%", "16.0 MiB / 64.0 MiB", "25.00%", "3"]
        );
        assert_eq!(js["memory_limit"], 64 << 20);
        assert_eq!(js["pids"], 3);
        // No limit: the host's memory.
        let (cells, _) = stats_row(
            "w",
            &s(0, 0, u64::MAX),
            &s(0, 1 << 20, u64::MAX),
            Duration::from_secs(1),
            Some(1 << 30),
        );
        assert_eq!(cells[2], "1.0 MiB / 1.0 GiB");
    }

    #[test]
    fn env_without_value_comes_from_the_caller() {
        let path = std::env::var("PATH").unwrap();
        let e = caller_env([
            "A=1".to_string(),
            "PATH".into(),
            "BERTH_SURELY_UNSET_Q1".into(),
        ]);
        assert_eq!(e, ["A=1".to_string(), format!("PATH={path}")]);
    }
}
