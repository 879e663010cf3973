//! Output to a log file berthd names with a `berth-log://` URI: docker's
//! json-file format ([`berth_proto::jsonlog`], rotated by size by us) or
//! the Kubernetes CRI format ([`berth_proto::crilog`], rotated by the
//! kubelet, which then has the file reopened; by us only when the URI asks,
//! for berthd's own output files). The shim cuts the process's
//! output into lines and appends them; it outlives berthd, so logging goes
//! on while berthd restarts.

use crate::fdio::async_read;
use crate::{Error, Result};
use berth_proto::crilog::{self, Format, Splitter};
use berth_proto::jsonlog::{Destination, LineSplitter, Writer};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

/// One log file, as its format writes it.
pub enum Log {
    Json(Writer),
    Cri {
        writer: crilog::Writer,
        max_line: usize,
    },
}

impl Log {
    /// Closes the file and opens its path again (a new file there when the
    /// old one was renamed away).
    pub fn reopen(&mut self) -> std::io::Result<()> {
        match self {
            Log::Json(w) => w.reopen(),
            Log::Cri { writer, .. } => writer.reopen(),
        }
    }
}

/// One log file, shared by the streams written to it.
pub type Shared = Arc<Mutex<Log>>;

/// The logs a process's streams go to, opened once per file.
#[derive(Default)]
pub struct Opened(Vec<(PathBuf, Format, Shared)>);

impl Opened {
    /// The writer of `uri`'s file, and the stream it names.
    pub fn open(&mut self, uri: &str) -> Result<(Shared, String)> {
        let d = Destination::parse(uri).map_err(Error::invalid)?;
        if let Some((_, format, w)) = self.0.iter().find(|(p, _, _)| *p == d.path) {
            if *format != d.format {
                return Err(Error::invalid(format!(
                    "log {} is given as both {} and {}",
                    d.path.display(),
                    format.as_str(),
                    d.format.as_str()
                )));
            }
            return Ok((w.clone(), d.stream));
        }
        if let Some(dir) = d.path.parent() {
            // berthd made it; made again if it went away meanwhile. json:
            // owner-only (output may hold secrets); CRI: as containerd makes
            // the kubelet's log directories.
            let mode = match d.format {
                Format::Json => berth_mount::private::OWNER_ONLY,
                Format::Cri => crilog::DIR_MODE,
            };
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                mode,
            )
            .create(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let opened = match d.format {
            Format::Json => Writer::open(&d.path, d.max_size, d.max_files).map(Log::Json),
            Format::Cri => {
                crilog::Writer::open_rotating(&d.path, d.max_size, d.max_files).map(|writer| {
                    Log::Cri {
                        writer,
                        max_line: d.max_line,
                    }
                })
            }
        };
        let w = opened.map_err(|e| Error::io(format!("open log {}", d.path.display()), e))?;
        let w = Arc::new(Mutex::new(w));
        self.0.push((d.path, d.format, w.clone()));
        Ok((w, d.stream))
    }

    /// Every file opened.
    pub fn into_logs(self) -> Vec<Shared> {
        self.0.into_iter().map(|(_, _, w)| w).collect()
    }
}

/// Cuts one stream's output into what its log's format writes as lines.
enum Cutter {
    Json(LineSplitter),
    Cri(Splitter, crilog::Stream),
}

fn lock(w: &Shared) -> std::sync::MutexGuard<'_, Log> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cutter {
    fn new(w: &Shared, stream: &str) -> Self {
        match &*lock(w) {
            Log::Json(_) => Cutter::Json(LineSplitter::default()),
            Log::Cri { max_line, .. } => {
                let s = match stream {
                    "stderr" => crilog::Stream::Stderr,
                    _ => crilog::Stream::Stdout,
                };
                Cutter::Cri(Splitter::new(*max_line), s)
            }
        }
    }

    /// Writes the lines `data` completes (all that is left with `None`,
    /// at the end of the output); false once a write failed.
    fn write(&mut self, w: &Shared, stream: &str, data: Option<&[u8]>) -> bool {
        // One time for what one read brought, as docker stamps each
        // message when it is read.
        let now = berth_proto::time::now();
        let mut log = lock(w);
        match (self, &mut *log) {
            (Cutter::Json(s), Log::Json(w)) => {
                let lines = match data {
                    Some(d) => s.push(d),
                    None => s.finish().into_iter().collect(),
                };
                lines.iter().all(|l| w.write(stream, now, l).is_ok())
            }
            (Cutter::Cri(s, stream), Log::Cri { writer, .. }) => {
                let pieces = match data {
                    Some(d) => s.push(d),
                    None => s.finish(),
                };
                pieces
                    .iter()
                    .all(|p| writer.write(*stream, now, p.partial, &p.content).is_ok())
            }
            _ => false, // a log never changes format
        }
    }
}

/// How long an unfinished line waits for its end before it is written as
/// a partial (P) piece of a CRI log.
const PARTIAL_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Copies a process's output into the log until the process side closes.
/// After a failed write (the log removed with its container, a full disk)
/// output is still read, so the process never blocks on a full pipe, but
/// dropped.
pub fn copy_to_log(from: Arc<AsyncFd<OwnedFd>>, w: Shared, stream: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        let mut cutter = Cutter::new(&w, &stream);
        let cri = matches!(cutter, Cutter::Cri(..));
        let mut ok = true;
        loop {
            // A CRI log is also what CRI Attach reads: a line the process
            // leaves unfinished (a prompt, `echo -n`) is written as a P
            // piece once no more output follows for a moment, not only at
            // the end. Reading is cancel-safe (nothing is read before the
            // descriptor is ready).
            let read = match cri {
                true => {
                    match tokio::time::timeout(PARTIAL_AFTER, async_read(&from, &mut buf)).await {
                        Ok(r) => r,
                        Err(_) => {
                            ok = ok && cutter.write(&w, &stream, None);
                            async_read(&from, &mut buf).await
                        }
                    }
                }
                false => async_read(&from, &mut buf).await,
            };
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => ok = ok && cutter.write(&w, &stream, Some(&buf[..n])),
            }
        }
        if ok {
            cutter.write(&w, &stream, None);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::PARTIAL_AFTER;
    use crate::stdio::{IoOwner, setup};
    use berth_proto::crilog::{Line, Stream, read_file};
    use berth_proto::jsonlog::Destination;
    use std::io::Write;
    use std::time::Duration;

    fn lines(path: &std::path::Path) -> Vec<(Stream, bool, String)> {
        read_file(path)
            .unwrap()
            .into_iter()
            .map(|l: Line| (l.stream, l.partial, String::from_utf8(l.content).unwrap()))
            .collect()
    }

    #[test]
    fn both_streams_go_to_one_cri_log_which_reopens() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("berth-crilog-shim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // The kubelet's pod directory, the container's is made.
        let path = dir.join("pod").join("c1").join("0.log");
        let uri = |stream: &str| Destination::cri(path.clone(), stream, 8).uri();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let old = dir.join("pod").join("c1").join("0.log.1");
        rt.block_on(async {
            let (child, shim) = setup(
                "",
                &uri("stdout"),
                &uri("stderr"),
                false,
                IoOwner::default(),
            )
            .unwrap();
            assert_eq!(shim.logs.len(), 1, "one file for both streams");
            let out = std::fs::File::from(child.stdout.unwrap());
            let err = std::fs::File::from(child.stderr.unwrap());
            let settle = || tokio::time::sleep(Duration::from_millis(100));
            (&out).write_all(b"one\r\nlonger than eight\n").unwrap();
            settle().await;
            (&err).write_all(b"oops\nhalf").unwrap();
            // An unfinished line is written as a P piece once nothing
            // follows for PARTIAL_AFTER (what CRI Attach shows of a prompt).
            tokio::time::sleep(PARTIAL_AFTER * 3).await;
            std::fs::rename(&path, &old).unwrap();
            for l in &shim.logs {
                l.lock().unwrap().reopen().unwrap();
            }
            // Its end comes after the reopen, in the new file.
            (&err).write_all(b" ok\n").unwrap();
            (&out).write_all(b"\nno newline").unwrap();
            drop((out, err));
            for o in shim.outputs {
                o.await.unwrap();
            }
        });
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777 & !0o022, 0o640 & !0o022, "{mode:o}");
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777 & !0o022, 0o755 & !0o022, "{dir_mode:o}");
        let s = |st, p, c: &str| (st, p, c.to_string());
        assert_eq!(
            lines(&old),
            vec![
                s(Stream::Stdout, false, "one\n"),
                s(Stream::Stdout, true, "longer t"),
                s(Stream::Stdout, true, "han eigh"),
                s(Stream::Stdout, false, "t\n"),
                s(Stream::Stderr, false, "oops\n"),
                s(Stream::Stderr, true, "half"),
            ]
        );
        let mut new = lines(&path);
        // The two streams' copies run concurrently.
        new.sort_by_key(|l| l.0 == Stream::Stdout);
        assert_eq!(
            new,
            vec![
                s(Stream::Stderr, false, " ok\n"),
                s(Stream::Stdout, false, "\n"),
                s(Stream::Stdout, true, "no newli"),
                s(Stream::Stdout, true, "ne"),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
