//! Container logs in the Kubernetes CRI format, as containerd's CRI plugin
//! writes them and the kubelet (`crictl logs`, `kubectl logs`) reads them:
//! one line per piece of output,
//! `<RFC 3339 time, nanoseconds, UTC> <stdout|stderr> <F|P> <content>\n`.
//!
//! What containerd does, and so do we ([`Splitter`]):
//! - a line's newline is not part of its content; a `\r\n` ending is
//!   dropped whole (a lone `\r` elsewhere is content);
//! - an empty line is written as an `F` line with empty content;
//! - a line longer than the maximum (0: no maximum) is cut into `P` pieces
//!   of exactly the maximum, the rest ending in an `F` piece;
//! - output that ends without a newline (the process closed the stream)
//!   ends in a `P` piece.
//!
//! Both streams of a container share one file (with a terminal there is
//! only stdout). berthd does not rotate these logs: the kubelet renames the
//! file and asks for it to be reopened (`ReopenContainerLog`), so the
//! writer can [`reopen`](Writer::reopen) its path and the [`Follower`]
//! moves on to the new file once the old one is read to its end.
//!
//! Destinations are `berth-log://` stdio URIs with `format=cri` (see
//! [`crate::jsonlog::Destination`]).

use crate::logrotate::LogFile;
use crate::time::{format_time, parse_time};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest piece containerd writes by default
/// (`max_container_log_line_size`).
pub const DEFAULT_MAX_LINE: usize = 16 << 10;

/// The mode of a log file we create, as containerd's CRI creates them
/// (readable by the group of log collectors, not by everybody).
pub const FILE_MODE: u32 = 0o640;
/// The mode of a log directory we create, as containerd's CRI.
pub const DIR_MODE: u32 = 0o755;

/// The format of a `berth-log://` destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// docker's json-file ([`crate::jsonlog`]), rotated by berth.
    #[default]
    Json,
    /// The CRI format (this module), rotated by the kubelet.
    Cri,
}

impl Format {
    /// The URI spelling (`format=…`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Cri => "cri",
        }
    }

    /// Parses the URI spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Format::Json),
            "cri" => Some(Format::Cri),
            _ => None,
        }
    }
}

/// The stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// `stdout` or `stderr`; anything else is no stream.
    pub fn parse(s: &[u8]) -> Option<Self> {
        match s {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// One line of a CRI log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Nanoseconds since the epoch.
    pub time: i64,
    pub stream: Stream,
    /// `P`: a piece of a longer line (or the unterminated end of output).
    pub partial: bool,
    /// What the kubelet passes on: the content of a full line with its
    /// newline (when the file's line had one), of a partial line without.
    /// Writing the contents one after the other gives back the output
    /// (less `\r` before newlines).
    pub content: Vec<u8>,
}

/// One line of the file for a piece of output, newline included.
pub fn encode(stream: Stream, time: i64, partial: bool, content: &[u8]) -> Vec<u8> {
    let t = format_time(time);
    let mut out = Vec::with_capacity(t.len() + content.len() + 12);
    out.extend_from_slice(t.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// Parses one line of a CRI log (with or without its newline), as the
/// kubelet does: the time (RFC 3339, any offset, any fraction), the stream
/// (`stdout`/`stderr`), the tag (`P` is partial; anything else, such as
/// `F`, full; tags after a `:` are ignored), then the content. `None` for
/// a line that is none.
pub fn parse_line(line: &[u8]) -> Option<Line> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = parse_time(std::str::from_utf8(fields.next()?).ok()?)?;
    let stream = Stream::parse(fields.next()?)?;
    let tags = fields.next()?;
    let content = fields.next()?;
    let partial = tags.split(|b| *b == b':').next() == Some(b"P");
    let content = match content {
        [rest @ .., b'\n'] if partial => rest,
        c => c,
    };
    Some(Line {
        time,
        stream,
        partial,
        content: content.to_vec(),
    })
}

/// A piece of output to write as one line: its content (no newline) and
/// whether it is partial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub partial: bool,
    pub content: Vec<u8>,
}

/// Cuts one stream's output into pieces as containerd's CRI logger does
/// (see the module documentation).
#[derive(Debug, Default)]
pub struct Splitter {
    max: usize,
    pending: Vec<u8>,
}

impl Splitter {
    /// Pieces of at most `max` bytes (0: lines are never cut).
    pub fn new(max: usize) -> Self {
        Self {
            max,
            pending: Vec::new(),
        }
    }

    /// Bytes of the line so far that count towards the maximum: a final
    /// `\r` does not yet, as it may begin the `\r\n` that ends the line.
    fn counted(&self) -> usize {
        self.pending.len() - usize::from(self.pending.last() == Some(&b'\r'))
    }

    /// Takes `data`; returns the pieces it completes.
    pub fn push(&mut self, data: &[u8]) -> Vec<Piece> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                let mut content = std::mem::take(&mut self.pending);
                if content.last() == Some(&b'\r') {
                    content.pop();
                }
                out.push(Piece {
                    partial: false,
                    content,
                });
                continue;
            }
            self.pending.push(b);
            if self.max > 0 && self.counted() > self.max {
                let rest = self.pending.split_off(self.max);
                out.push(Piece {
                    partial: true,
                    content: std::mem::replace(&mut self.pending, rest),
                });
            }
        }
        out
    }

    /// At the end of the output: what is left of an unfinished line, as
    /// partial pieces.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        while self.max > 0 && self.pending.len() > self.max {
            let rest = self.pending.split_off(self.max);
            out.push(Piece {
                partial: true,
                content: std::mem::replace(&mut self.pending, rest),
            });
        }
        if !self.pending.is_empty() {
            out.push(Piece {
                partial: true,
                content: std::mem::take(&mut self.pending),
            });
        }
        out
    }
}

/// Appends lines to a CRI log ([`LogFile`], files made with
/// [`FILE_MODE`]). Each line is one write to a file opened for appending,
/// so lines of the two streams never interleave.
#[derive(Debug)]
pub struct Writer(LogFile);

impl Writer {
    /// Opens (appending to) the log at `path`; its directory must exist.
    /// Never rotated (the kubelet rotates its logs and has them reopened).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::open_rotating(path, 0, 1)
    }

    /// [`Self::open`], rotated by size before a line once the file has
    /// `max_size` bytes (0: never), `max_files` files kept: for logs no
    /// kubelet rotates. A [`Follower`] goes on across the rotations.
    pub fn open_rotating(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<Self> {
        LogFile::open(path, FILE_MODE, max_size, max_files).map(Writer)
    }

    /// The path written to.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes one piece as one line.
    pub fn write(
        &mut self,
        stream: Stream,
        time: i64,
        partial: bool,
        content: &[u8],
    ) -> std::io::Result<()> {
        self.0.append(&encode(stream, time, partial, content))
    }

    /// Closes the file and opens the path again: after the kubelet renamed
    /// the log away, later lines go to a new file at the path.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.0.reopen()
    }
}

/// Reads a CRI log as it is written, across reopens: it keeps the file it
/// opened and, once the path names another file (the old one was renamed
/// and the log reopened) and the old one is read to its end, goes on with
/// the new one from its start. Lines that are no CRI line are skipped.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    /// The file read, and its (device, inode).
    file: Option<(File, (u64, u64))>,
    pos: u64,
    partial: Vec<u8>,
}

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

impl Follower {
    /// Follows `path` from byte `offset` of the file there now (a file
    /// that appears only later is read from its start).
    pub fn new(path: &Path, offset: u64) -> Self {
        let mut f = Self {
            path: path.to_path_buf(),
            file: None,
            pos: 0,
            partial: Vec::new(),
        };
        f.open();
        if f.file.is_some() {
            f.pos = offset;
        }
        f
    }

    /// Follows `path` from the end of the file there now: only what is
    /// written from here on (as an attach sees output).
    pub fn from_end(path: &Path) -> Self {
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        Self::new(path, len)
    }

    /// The byte offset reached in the file being read.
    pub fn offset(&self) -> u64 {
        self.pos
    }

    fn open(&mut self) {
        self.file = File::open(&self.path)
            .and_then(|f| {
                let id = identity(&f.metadata()?);
                Ok((f, id))
            })
            .ok();
        self.pos = 0;
        self.partial.clear();
    }

    /// The lines written since the last call.
    pub fn poll(&mut self) -> Vec<Line> {
        let mut out = Vec::new();
        if self.file.is_none() {
            self.open();
        }
        self.drain(&mut out);
        let current = std::fs::metadata(&self.path).ok().map(|m| identity(&m));
        let ours = self.file.as_ref().map(|(_, id)| *id);
        // Gone (renamed, not reopened yet): the writer still writes to
        // ours. Another file: reopened; ours was read to its end above,
        // and nothing more is written to it.
        if current.is_some() && current != ours {
            self.drain(&mut out);
            self.open();
            self.drain(&mut out);
        }
        out
    }

    /// Waits until there are lines (polling every `interval`).
    pub async fn next(&mut self, interval: Duration) -> Vec<Line> {
        loop {
            let lines = self.poll();
            if !lines.is_empty() {
                return lines;
            }
            tokio::time::sleep(interval).await;
        }
    }

    fn drain(&mut self, out: &mut Vec<Line>) {
        let Some((f, _)) = &self.file else {
            return;
        };
        // Truncated (copytruncate): from the start.
        if f.metadata().is_ok_and(|m| m.len() < self.pos) {
            self.pos = 0;
            self.partial.clear();
        }
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match f.read_at(&mut buf, self.pos) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.pos += n as u64;
                    self.partial.extend_from_slice(&buf[..n]);
                }
            }
        }
        // Only whole lines: the writer may be half-way through one.
        if let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') {
            let rest = self.partial.split_off(end + 1);
            out.extend(
                self.partial
                    .split_inclusive(|b| *b == b'\n')
                    .filter_map(parse_line),
            );
            self.partial = rest;
        }
    }
}

/// Every line of a CRI log file (a last line without newline included).
pub fn read_file(path: &Path) -> std::io::Result<Vec<Line>> {
    let data = std::fs::read(path)?;
    Ok(data
        .split_inclusive(|b| *b == b'\n')
        .filter_map(parse_line)
        .collect())
}

#[cfg(test)]
#[path = "crilog_tests.rs"]
mod tests;
