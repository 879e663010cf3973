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

/// RFC 3339 form of a timestamp.
pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map_or_else(|| "-".into(), |t| t.to_rfc3339())
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
    fn sizes() {
        assert_eq!(human_size(10), "10 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
    }
}
