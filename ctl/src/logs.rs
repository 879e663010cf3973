//! `berthctl logs`: prints a container's json-file log that berthd keeps
//! (`berth.services.logs.v1.Logs`), stdout lines to stdout and stderr lines
//! to stderr. With `-f` it follows, and when the stream breaks because
//! berthd restarts, it reconnects and resumes after the last line printed.

use crate::cli::LogsArgs;
use crate::ctx::Ctx;
use crate::error::CtlError;
use anyhow::Result;
use berth_proto::pb::berth::services::logs::v1::logs_client::LogsClient;
use berth_proto::pb::berth::services::logs::v1::{LogEntry, ReadRequest};
use std::io::Write;
use std::time::{Duration, Instant};
use tonic::Code;

/// How long `-f` waits for a restarting berthd before giving up.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// Where printing got to: the time of the last entry printed and how many
/// entries of that very time were printed (entries read at once share it).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Resume {
    time: i64,
    same: usize,
}

fn nanos(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(t.nanos))
    })
}

/// `--tail`: a count, or `all` (negative).
fn parse_tail(s: &str) -> Result<i64> {
    if s == "all" {
        return Ok(-1);
    }
    s.parse::<u32>()
        .map(i64::from)
        .map_err(|_| CtlError(format!("--tail {s:?}: give a number of lines or \"all\"")).into())
}

/// `--since`: RFC 3339, Unix seconds, or a duration before `now` (all in
/// nanoseconds since the epoch).
fn parse_since(s: &str, now: i64) -> Result<i64> {
    if let Some(t) = berth_proto::jsonlog::parse_time(s) {
        return Ok(t);
    }
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        // Whole nanoseconds from a float of seconds: rounding is the point.
        #[allow(clippy::cast_possible_truncation)]
        return Ok((secs * 1e9).round() as i64);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        let d = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        return Ok(now.saturating_sub(d));
    }
    Err(CtlError(format!(
        "--since {s:?}: give an RFC 3339 time (2024-05-01T10:00:00Z), Unix seconds, or a duration ago (10m, 1h30m)"
    ))
    .into())
}

/// docker's `logs -t` prefix: RFC 3339 with all nine fraction digits.
fn stamp(nanos: i64) -> String {
    chrono::DateTime::from_timestamp(
        nanos.div_euclid(1_000_000_000),
        u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
    )
    .unwrap_or_default()
    .format("%Y-%m-%dT%H:%M:%S%.9fZ")
    .to_string()
}

/// Prints a batch, skipping what was printed before a reconnect.
fn print(entries: &[LogEntry], timestamps: bool, skip: &mut usize, at: &mut Resume) -> Result<()> {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for e in entries {
        let t = nanos(e.time.as_ref());
        if *skip > 0 && t == at.time {
            *skip -= 1;
            continue;
        }
        *skip = 0;
        let w: &mut dyn Write = if e.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        if timestamps {
            write!(w, "{} ", stamp(t))?;
        }
        w.write_all(&e.data)?;
        *at = if t == at.time {
            Resume {
                time: t,
                same: at.same + 1,
            }
        } else {
            Resume { time: t, same: 1 }
        };
    }
    out.flush()?;
    err.flush()?;
    Ok(())
}

/// A stream that ended this way may be resumed: berthd went away.
fn broken(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
    )
}

pub(crate) async fn run(ctx: &Ctx, a: LogsArgs) -> Result<()> {
    let tail = parse_tail(&a.tail)?;
    let since = a
        .since
        .as_deref()
        .map(|s| parse_since(s, berth_proto::time::now()))
        .transpose()?;
    let mut cl = LogsClient::new(ctx.ch.clone());
    let mut at: Option<Resume> = None;
    let mut lost_since: Option<Instant> = None;
    loop {
        // After a break: from the last entry printed (inclusive, skipping
        // those already printed), every entry.
        let (since, tail, mut skip, mut cur) = match at {
            Some(r) => (Some(r.time), -1, r.same, r),
            None => (since, tail, 0, Resume::default()),
        };
        let req = ctx.req(ReadRequest {
            id: a.container.clone(),
            follow: a.follow,
            tail,
            since: since.map(berth_proto::time::timestamp),
        });
        let res = match cl.read(req).await {
            Ok(s) => {
                let mut s = s.into_inner();
                lost_since = None;
                loop {
                    match s.message().await {
                        Ok(Some(m)) => {
                            print(&m.entries, a.timestamps, &mut skip, &mut cur)?;
                            if cur != Resume::default() {
                                at = Some(cur);
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => return Ok(()),
            Err(e) if a.follow && broken(&e) => {
                let first = *lost_since.get_or_insert_with(Instant::now);
                if first.elapsed() > RECONNECT_FOR {
                    return Err(CtlError(format!(
                        "lost berthd while following {} and it did not come back within {}s: {}",
                        a.container,
                        RECONNECT_FOR.as_secs(),
                        e.message()
                    ))
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_and_since_parse_dockers_forms() {
        assert_eq!(parse_tail("all").unwrap(), -1);
        assert_eq!(parse_tail("3").unwrap(), 3);
        assert!(parse_tail("-1").is_err());
        let now = 1_700_000_000_000_000_000;
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_since("1700000000.5", now).unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(parse_since("10m", now).unwrap(), now - 600_000_000_000);
        assert_eq!(parse_since("1h30m", now).unwrap(), now - 5_400_000_000_000);
        let e = parse_since("yesterday", now).unwrap_err().to_string();
        assert!(e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn dockers_flags_parse() {
        use clap::Parser;
        let c = crate::cli::Cli::try_parse_from([
            "berthctl", "-n", "ns1", "logs", "-f", "--tail", "3", "-t", "--since", "5m", "web",
        ])
        .unwrap();
        let crate::cli::Command::Logs(a) = c.command else {
            panic!("{c:?}")
        };
        assert!(a.follow && a.timestamps);
        assert_eq!((a.tail.as_str(), a.since.as_deref()), ("3", Some("5m")));
        assert_eq!((c.namespace.as_str(), a.container.as_str()), ("ns1", "web"));
    }

    #[test]
    fn timestamps_have_nine_digits() {
        assert_eq!(stamp(1_500_000_000), "1970-01-01T00:00:01.500000000Z");
    }

    #[test]
    fn a_resumed_read_skips_what_was_printed() {
        let e = |t: i64| LogEntry {
            stream: "stdout".into(),
            time: Some(berth_proto::time::timestamp(t)),
            data: Vec::new(),
        };
        let mut at = Resume::default();
        let mut skip = 0;
        print(&[e(1), e(2), e(2)], false, &mut skip, &mut at).unwrap();
        assert_eq!(at, Resume { time: 2, same: 2 });
        // Resumed at time 2, skipping the two already printed.
        let mut skip = at.same;
        print(&[e(2), e(2), e(2), e(3)], false, &mut skip, &mut at).unwrap();
        assert_eq!((skip, at), (0, Resume { time: 3, same: 1 }));
    }
}
