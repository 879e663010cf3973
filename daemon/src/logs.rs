//! The json-file logs berthd keeps of containers whose label
//! `berth.log-driver` is `json-file`: where they live
//! (`<root>/logs/<ns>/<id>/<id>-json.log`), the destinations a task's
//! shim is given (the shim writes and rotates, see
//! [`berth_proto::jsonlog`]), reading them back (tail, since, follow) and
//! removing them with the container.

use crate::config::LogsConfig;
use crate::containers::Container;
use crate::error::{Error, Result, io_err};
use crate::types::Labels;
use berth_proto::jsonlog::{self, Destination, Entry};
use berth_proto::labels::{JSON_FILE, LOG_DRIVER};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The logs of one daemon.
pub struct LogStore {
    dir: PathBuf,
    config: LogsConfig,
}

impl LogStore {
    /// Logs under `<root>/logs`, rotated as `config` says.
    pub fn new(root: &Path, config: LogsConfig) -> Self {
        Self {
            dir: root.join("logs"),
            config,
        }
    }

    /// Whether a container with these labels asks berthd to keep its log.
    pub fn wanted(labels: &Labels) -> bool {
        labels.get(LOG_DRIVER).is_some_and(|d| d == JSON_FILE)
    }

    fn container_dir(&self, ns: &str, id: &str) -> PathBuf {
        self.dir.join(ns).join(id)
    }

    /// The file a container's log is written to.
    pub fn path(&self, ns: &str, id: &str) -> PathBuf {
        jsonlog::log_path(&self.container_dir(ns, id), id)
    }

    /// The stdout and stderr URIs of a new task of the container (with a
    /// terminal, both streams arrive as stdout); makes its directory.
    pub fn destinations(&self, ns: &str, id: &str, terminal: bool) -> Result<(String, String)> {
        let dir = self.container_dir(ns, id);
        // Output may hold secrets: owner-only, as the shim makes them.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)
            .map_err(|e| io_err(format!("create {}", dir.display()), e))?;
        let path = jsonlog::log_path(&dir, id);
        if path.to_string_lossy().contains('?') {
            return Err(Error::invalid(format!(
                "log path {} holds a '?', which a stdio URI cannot carry",
                path.display()
            )));
        }
        let uri = |stream: &str| {
            Destination::json(
                path.clone(),
                stream,
                self.config.max_size,
                self.config.max_files,
            )
            .uri()
        };
        let stderr = if terminal {
            String::new()
        } else {
            uri("stderr")
        };
        Ok((uri("stdout"), stderr))
    }

    /// The stdout and stderr URIs of a task whose output goes to a log in
    /// the CRI format at `path`, a path the kubelet chose (the pod's
    /// `log_directory` joined with the container's `log_path`): both
    /// streams in the one file (with a terminal only stdout, and stderr is
    /// empty), lines longer than `max_line` cut into partial pieces (0:
    /// never; containerd's `max_container_log_line_size`, where any
    /// non-positive value means no limit, maps negative to 0). `rotate`
    /// (max size, files kept) has the shim rotate the file by size, for a
    /// file of berthd's own; a kubelet's log is not rotated by berthd (the
    /// kubelet rotates, then has the file reopened, see
    /// `TaskService::reopen_log`). Makes the file's directories if missing
    /// (mode 0755, as containerd). A relative path, or one holding a `?`
    /// (which a stdio URI cannot carry), is refused.
    pub fn cri_stdio(
        path: &Path,
        terminal: bool,
        max_line: usize,
        rotate: Option<(u64, u32)>,
    ) -> Result<(String, String)> {
        if !path.is_absolute() {
            return Err(Error::invalid(format!(
                "log path {} is not absolute",
                path.display()
            )));
        }
        let text = path
            .to_str()
            .ok_or_else(|| Error::invalid(format!("log path {} is not UTF-8", path.display())))?;
        if text.contains('?') {
            return Err(Error::invalid(format!(
                "log path {text} holds a '?', which a stdio URI cannot carry"
            )));
        }
        if path.file_name().is_none() || text.ends_with('/') {
            return Err(Error::invalid(format!("log path {text} names no file")));
        }
        if let Some(dir) = path.parent() {
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                berth_proto::crilog::DIR_MODE,
            )
            .create(dir)
            .map_err(|e| io_err(format!("create {}", dir.display()), e))?;
        }
        let uri = |stream: &str| {
            let d = Destination::cri(path.to_path_buf(), stream, max_line);
            match rotate {
                Some((size, files)) => d.rotating(size, files),
                None => d,
            }
            .uri()
        };
        let stderr = if terminal {
            String::new()
        } else {
            uri("stderr")
        };
        Ok((uri("stdout"), stderr))
    }

    /// A new task's stdout and stderr: a container labelled
    /// `berth.log-driver=json-file` whose task is created without either
    /// gets its json-file log; otherwise they are the request's.
    pub fn stdio(
        &self,
        ns: &str,
        c: &Container,
        terminal: bool,
        stdout: String,
        stderr: String,
    ) -> Result<(String, String)> {
        if Self::wanted(&c.record.labels) && stdout.is_empty() && stderr.is_empty() {
            return self.destinations(ns, &c.id, terminal);
        }
        Ok((stdout, stderr))
    }

    /// Removes a container's log (every rotated file); none is fine.
    pub fn remove(&self, ns: &str, id: &str) -> Result<()> {
        let dir = self.container_dir(ns, id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err(format!("remove {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }
}

/// Reads a log file as it grows, across rotations: it keeps the file it
/// opened and, once the path names another file (rotated) and the old
/// one is read to its end, goes on with the new one from its start.
pub struct Follower {
    path: PathBuf,
    file: Option<(File, u64)>,
    pos: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Follows `path` (which need not exist yet).
    pub fn new(path: &Path) -> Self {
        let mut f = Self {
            path: path.to_path_buf(),
            file: None,
            pos: 0,
            partial: Vec::new(),
        };
        f.reopen();
        f
    }

    fn reopen(&mut self) {
        self.file = File::open(&self.path)
            .and_then(|f| {
                let ino = f.metadata()?.ino();
                Ok((f, ino))
            })
            .ok();
        self.pos = 0;
        self.partial.clear();
    }

    /// The entries older than the followed file: the rotated files, oldest
    /// first (without the followed one, should it have been rotated).
    pub fn older(&self) -> Vec<Entry> {
        let ino = self.file.as_ref().map(|(_, i)| *i);
        let mut out = Vec::new();
        for p in jsonlog::files(&self.path) {
            let same = std::fs::metadata(&p).is_ok_and(|m| Some(m.ino()) == ino);
            if same || p == self.path {
                continue;
            }
            if let Ok(data) = std::fs::read(&p) {
                out.extend(lines(&data));
            }
        }
        out
    }

    /// The entries written since the last call.
    pub fn poll(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        if self.file.is_none() {
            self.reopen();
        }
        self.drain(&mut out);
        let current = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        let ours = self.file.as_ref().map(|(_, i)| *i);
        if current.is_some() && current != ours {
            // Rotated: what was written to the old file before the rename,
            // the files rotated after it (more than one rotation since the
            // last poll), then the new file.
            self.drain(&mut out);
            let rotated: Vec<PathBuf> = (1..)
                .map(|n| jsonlog::rotated(&self.path, n))
                .take_while(|p| p.exists())
                .collect();
            let k = rotated
                .iter()
                .position(|p| std::fs::metadata(p).ok().map(|m| m.ino()) == ours);
            // Ours is now `.k+1`; `.k` down to `.1` are newer.
            for p in rotated[..k.unwrap_or(0)].iter().rev() {
                if let Ok(data) = std::fs::read(p) {
                    out.extend(lines(&data));
                }
            }
            self.reopen();
            self.drain(&mut out);
        }
        out
    }

    fn drain(&mut self, out: &mut Vec<Entry>) {
        let Some((f, _)) = &self.file else {
            return;
        };
        // Emptied instead of rotated (max_files = 1): from the start.
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
            out.extend(lines(&self.partial));
            self.partial = rest;
        }
    }
}

/// The entries of whole lines; lines that are no entry are skipped.
fn lines(data: &[u8]) -> impl Iterator<Item = Entry> + '_ {
    data.split_inclusive(|b| *b == b'\n')
        .filter(|l| l.ends_with(b"\n"))
        .filter_map(jsonlog::decode)
}

/// Entries at or after `since` (nanoseconds; `None`: all), and of those
/// the last `tail` (negative: all).
pub fn select(entries: Vec<Entry>, since: Option<i64>, tail: i64) -> Vec<Entry> {
    let mut v: Vec<Entry> = entries
        .into_iter()
        .filter(|e| since.is_none_or(|s| e.time >= s))
        .collect();
    if let Ok(n) = usize::try_from(tail)
        && v.len() > n
    {
        v.drain(..v.len() - n);
    }
    v
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
