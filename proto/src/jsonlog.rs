//! Container logs in docker's json-file format, as the shim writes them
//! and berthd reads them: one JSON object a line,
//! `{"log":"line\n","stream":"stdout","time":"<RFC 3339, nanoseconds>"}`,
//! in `<dir>/<id>-json.log`, rotated by size to `…-json.log.1`, `.2`, …
//! (the highest is the oldest).
//!
//! berthd hands the shim a destination as a stdio URI
//! (`berth-log:///path?stream=stdout&max-size=N&max-files=M`, see
//! [`Destination`]), so the shim, which outlives berthd, keeps writing
//! while berthd restarts. The same scheme with `format=cri` names a log in
//! the Kubernetes CRI format ([`crate::crilog`]).

use crate::crilog::Format;
pub use crate::time::{format_time, parse_time};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The stdio URI scheme of a json-file destination.
pub const SCHEME: &str = "berth-log://";

/// The longest line kept whole (docker's limit too): longer ones are cut
/// into entries without a newline, so a runaway line cannot exhaust memory.
pub const MAX_LINE: usize = 16 << 10;

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Nanoseconds since the epoch.
    pub time: i64,
    /// The bytes, with their newline if the line had one.
    pub log: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Line<'a> {
    log: std::borrow::Cow<'a, str>,
    stream: std::borrow::Cow<'a, str>,
    time: std::borrow::Cow<'a, str>,
}

/// One line of the file, newline included. Bytes that are not UTF-8 become
/// U+FFFD, as in docker (JSON strings are Unicode).
pub fn encode(stream: &str, time: i64, log: &[u8]) -> Vec<u8> {
    let line = Line {
        log: String::from_utf8_lossy(log),
        stream: stream.into(),
        time: format_time(time).into(),
    };
    // Serialising strings into a Vec cannot fail.
    let mut out = serde_json::to_vec(&line).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Parses one line of the file; `None` for one that is not an entry (a
/// line cut short by a crash, say).
pub fn decode(line: &[u8]) -> Option<Entry> {
    let l: Line = serde_json::from_slice(line).ok()?;
    Some(Entry {
        stream: l.stream.into_owned(),
        time: parse_time(&l.time)?,
        log: l.log.into_owned().into_bytes(),
    })
}

/// The file a container's log is written to, in `dir`.
pub fn log_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}-json.log"))
}

use crate::logrotate::LogFile;
pub use crate::logrotate::rotated;

/// The files of a log, oldest first: the rotated ones that exist (from
/// `.1` up to the first missing one), then `path` itself if it exists.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (0..)
        .map(|n| rotated(path, n))
        .skip(1)
        .take_while(|p| p.exists())
        .collect();
    out.reverse();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

/// Where and how the shim writes one stream of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub path: PathBuf,
    pub stream: String,
    /// Rotate once the file has this many bytes; 0: never (CRI logs at the
    /// kubelet's paths are rotated by the kubelet; only berthd's own CRI
    /// output files are rotated by the shim).
    pub max_size: u64,
    /// Files kept, the current one included (at least 1: then the file is
    /// emptied instead of rotated).
    pub max_files: u32,
    /// json-file (`format=json`, the default) or CRI (`format=cri`).
    pub format: Format,
    /// CRI only (`max_line=N`): lines longer than this are cut into
    /// partial pieces; 0: never.
    pub max_line: usize,
}

impl Destination {
    /// A json-file destination.
    pub fn json(path: PathBuf, stream: &str, max_size: u64, max_files: u32) -> Self {
        Self {
            path,
            stream: stream.into(),
            max_size,
            max_files,
            format: Format::Json,
            max_line: 0,
        }
    }

    /// A CRI destination (not rotated by us: see [`Self::rotating`]).
    pub fn cri(path: PathBuf, stream: &str, max_line: usize) -> Self {
        Self {
            path,
            stream: stream.into(),
            max_size: 0,
            max_files: 1,
            format: Format::Cri,
            max_line,
        }
    }

    /// This destination rotated at `max_size` bytes, keeping `max_files`.
    pub fn rotating(mut self, max_size: u64, max_files: u32) -> Self {
        self.max_size = max_size;
        self.max_files = max_files.max(1);
        self
    }

    /// The stdio URI of this destination. The path must not hold `?`.
    pub fn uri(&self) -> String {
        match self.format {
            Format::Json => format!(
                "{SCHEME}{}?stream={}&max-size={}&max-files={}",
                self.path.display(),
                self.stream,
                self.max_size,
                self.max_files
            ),
            Format::Cri if self.max_size > 0 => format!(
                "{SCHEME}{}?stream={}&format=cri&max_line={}&max-size={}&max-files={}",
                self.path.display(),
                self.stream,
                self.max_line,
                self.max_size,
                self.max_files
            ),
            Format::Cri => format!(
                "{SCHEME}{}?stream={}&format=cri&max_line={}",
                self.path.display(),
                self.stream,
                self.max_line
            ),
        }
    }

    /// Parses a URI made by [`uri`](Self::uri).
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("{uri:?} is not a {SCHEME} URI"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !path.starts_with('/') {
            return Err(format!("{uri:?}: the log path must be absolute"));
        }
        let mut d = Destination::json(path.into(), "stdout", 0, 1);
        let mut max_line = None;
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{uri:?}: {k}={v:?} is not a number"))
            };
            match k {
                "stream" if v == "stdout" || v == "stderr" => d.stream = v.into(),
                "max-size" => d.max_size = num(v)?,
                "max-files" => {
                    d.max_files = u32::try_from(num(v)?)
                        .map_err(|_| format!("{uri:?}: max-files={v} is too large"))?
                        .max(1);
                }
                "format" => {
                    d.format = Format::parse(v)
                        .ok_or_else(|| format!("{uri:?}: unknown log format {v:?}"))?
                }
                "max_line" => {
                    max_line = Some(
                        usize::try_from(num(v)?)
                            .map_err(|_| format!("{uri:?}: max_line={v} is too large"))?,
                    )
                }
                _ => return Err(format!("{uri:?}: unknown parameter {kv:?}")),
            }
        }
        match d.format {
            Format::Json if max_line.is_some() => {
                return Err(format!(
                    "{uri:?}: max_line is for format=cri (json-file lines are cut at {MAX_LINE})"
                ));
            }
            _ => d.max_line = max_line.unwrap_or(0),
        }
        Ok(d)
    }
}

/// Appends entries to a log file, rotating it by size as docker's
/// json-file driver does ([`LogFile`]).
#[derive(Debug)]
pub struct Writer(LogFile);

impl Writer {
    /// Opens (appending to) the log at `path`; its directory must exist.
    /// Container output may hold secrets: files are owner-only.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<Self> {
        LogFile::open(path, 0o600, max_size, max_files).map(Writer)
    }

    /// Writes one entry (one line of the file).
    pub fn write(&mut self, stream: &str, time: i64, log: &[u8]) -> std::io::Result<()> {
        self.0.append(&encode(stream, time, log))
    }

    /// Closes the file and opens the path again (a new file if the old one
    /// was renamed away), going on counting from the size found there.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.0.reopen()
    }
}

/// Cuts a stream's bytes into log lines: complete lines (with their
/// newline), and lines longer than [`MAX_LINE`] in pieces.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Takes `data`; returns the lines it completes.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for &b in data {
            self.pending.push(b);
            if b == b'\n' || self.pending.len() >= MAX_LINE {
                out.push(std::mem::take(&mut self.pending));
            }
        }
        out
    }

    /// What is left of an unfinished line (at the end of the output).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
#[path = "jsonlog_tests.rs"]
mod tests;
