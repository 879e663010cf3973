//! Output: aligned tables for people, JSON for programs.

use crate::cli::Format;
use serde_json::Value;
use std::io::Write;

/// A table with a header row.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    json: Vec<Value>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
            json: Vec::new(),
        }
    }

    /// Adds a row: the cells for the table, the object for JSON.
    pub fn row(&mut self, cells: Vec<String>, json: Value) {
        self.rows.push(cells);
        self.json.push(json);
    }

    /// Prints in the chosen format.
    pub fn print(&self, format: Format) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if format == Format::Json {
            serde_json::to_writer_pretty(&mut out, &self.json)?;
            return writeln!(out);
        }
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let last = cells.len() - 1;
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                s.push_str(c);
                if i < last {
                    s.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
                }
            }
            s
        };
        writeln!(out, "{}", line(self.header.clone()))?;
        for r in &self.rows {
            writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
        }
        Ok(())
    }
}

/// A progress line of a command whose result is printed at the end
/// (import, pull): on stdout for people, on stderr with `--format json`,
/// where stdout carries only the result document.
pub fn progress(format: Format, line: &str) {
    if format == Format::Json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// Images by name as `images import`/`pull` report them in JSON: name,
/// target descriptor (size in bytes) and creation time. An image that is
/// gone meanwhile is null.
pub async fn images_json(
    ch: &tonic::transport::Channel,
    ns: &str,
    names: &[String],
) -> anyhow::Result<Value> {
    use berth_proto::services::images::v1 as images;
    let mut cl = images::images_client::ImagesClient::new(ch.clone());
    let mut out = Vec::new();
    for name in names {
        let img = match cl
            .get(berth_proto::client::request(
                ns,
                images::GetImageRequest { name: name.clone() },
            ))
            .await
        {
            Ok(r) => r.into_inner().image.unwrap_or_default(),
            Err(s) if s.code() == tonic::Code::NotFound => {
                out.push(Value::Null);
                continue;
            }
            Err(s) => return Err(s.into()),
        };
        let t = img.target.unwrap_or_default();
        out.push(serde_json::json!({
            "name": img.name,
            "media_type": t.media_type,
            "digest": t.digest,
            "size": t.size,
            "labels": img.labels,
            "created_at": time_json(img.created_at.as_ref()),
        }));
    }
    Ok(Value::Array(out))
}

/// Bytes as a short human size (1.5 MiB).
pub fn human_size(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// How long ago a timestamp was, briefly (5 minutes, 2 days).
pub fn ago(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else { return "-".into() };
    let now = chrono::Utc::now().timestamp();
    let d = (now - ts.seconds).max(0);
    match d {
        0..=59 => format!("{d} seconds"),
        60..=3599 => format!("{} minutes", d / 60),
        3600..=86399 => format!("{} hours", d / 3600),
        _ => format!("{} days", d / 86400),
    }
}

/// RFC 3339 form of a timestamp, `-` when unset.
pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> String {
    match time_json(ts) {
        Value::String(s) => s,
        _ => "-".into(),
    }
}

/// A timestamp for JSON: RFC 3339 text in UTC, or null when unset (also
/// the zero time containerd sends for "not yet", e.g. a running task's
/// `exited_at`).
pub fn time_json(ts: Option<&prost_types::Timestamp>) -> Value {
    ts.filter(|t| t.seconds > 0 || t.nanos > 0)
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0).unsigned_abs()))
        .map_or(Value::Null, |t| {
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        })
}

/// An event payload (or any `Any`) as a JSON object with typed fields,
/// decoded by its type URL; a type berthctl has no descriptor for is
/// described by its URL and size.
pub fn payload_json(any: &prost_types::Any) -> Value {
    berth_proto::fieldpath::any_json(any)
        .unwrap_or_else(|| serde_json::json!({"type_url": any.type_url, "bytes": any.value.len()}))
}

/// An event payload for people: its set fields as `key=value` (nested
/// ones as `runtime.name=…`), strings bare unless they need quotes.
pub fn payload_text(any: &prost_types::Any) -> String {
    let mut out = Vec::new();
    flatten("", &payload_json(any), &mut out);
    out.join(" ")
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        Value::Array(a) if a.is_empty() => {}
        Value::String(s) => {
            let plain = s
                .chars()
                .all(|c| !c.is_whitespace() && c != '"' && c != '\\');
            if plain {
                out.push(format!("{prefix}={s}"));
            } else {
                out.push(format!("{prefix}={v}"));
            }
        }
        other => out.push(format!("{prefix}={other}")),
    }
}

/// Labels as `k=v,k=v` (sorted), or `-`.
pub fn labels(l: &std::collections::HashMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    let mut v: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(",")
}

/// docker's question before a prune, on stderr; anything but y/yes
/// (any case) declines.
pub fn confirm(warning: &str) -> anyhow::Result<bool> {
    use std::io::BufRead;
    eprint!("WARNING! {warning}\nAre you sure you want to continue? [y/N] ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(answer_is_yes(&line))
}

pub fn answer_is_yes(line: &str) -> bool {
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let t = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(time_json(Some(&t)), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(Some(&t)), "2023-11-14T22:13:20Z");
        // Unset, and Go's zero time as containerd sends it.
        let zero = prost_types::Timestamp {
            seconds: -62_135_596_800,
            nanos: 0,
        };
        assert_eq!(time_json(None), Value::Null);
        assert_eq!(time_json(Some(&zero)), Value::Null);
        assert_eq!(rfc3339(None), "-");
    }

    #[test]
    fn payloads_read_as_fields_not_debug() {
        use berth_proto::pb::containerd::events as ev;
        let prep = berth_proto::typeurl::pack(&ev::SnapshotPrepare {
            key: "j2".into(),
            parent: "sha256:abc".into(),
            snapshotter: "overlayfs".into(),
        });
        assert_eq!(
            payload_text(&prep),
            "key=j2 parent=sha256:abc snapshotter=overlayfs"
        );
        let create = berth_proto::typeurl::pack(&ev::ContainerCreate {
            id: "c 1".into(),
            image: "busybox".into(),
            runtime: Some(ev::container_create::Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            }),
        });
        assert_eq!(
            payload_text(&create),
            "id=\"c 1\" image=busybox runtime.name=io.containerd.runc.v2"
        );
        let exit = berth_proto::typeurl::pack(&ev::TaskExit {
            container_id: "web".into(),
            id: "web".into(),
            pid: 42,
            exit_status: 0,
            exited_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
        });
        let j = payload_json(&exit);
        assert_eq!(j["pid"], 42);
        assert_eq!(j["exit_status"], 0);
        assert_eq!(j["exited_at"], "2023-11-14T22:13:20Z");
        let text = payload_text(&exit);
        assert!(text.contains("exit_status=0 "), "{text}");
        assert!(!text.contains("{ "), "{text}");
        let unknown = prost_types::Any {
            type_url: "example.com/Unknown".into(),
            value: vec![1, 2],
        };
        assert_eq!(
            payload_json(&unknown),
            serde_json::json!({"type_url": "example.com/Unknown", "bytes": 2})
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(10), "10 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
    }
}
