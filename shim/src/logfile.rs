//! Output to a json-file log ([`berth_proto::jsonlog`]): the shim cuts the
//! process's output into lines and appends them as entries, rotating the
//! file by size. The shim outlives berthd, so logging goes on while berthd
//! restarts.

use crate::fdio::async_read;
use crate::{Error, Result};
use berth_proto::jsonlog::{Destination, LineSplitter, Writer};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

/// One log file, shared by the streams written to it.
pub type Shared = Arc<Mutex<Writer>>;

/// The logs a process's streams go to, opened once per file.
#[derive(Default)]
pub struct Opened(Vec<(PathBuf, Shared)>);

impl Opened {
    /// The writer of `uri`'s file, and the stream it names.
    pub fn open(&mut self, uri: &str) -> Result<(Shared, String)> {
        let d = Destination::parse(uri).map_err(Error::invalid)?;
        if let Some((_, w)) = self.0.iter().find(|(p, _)| *p == d.path) {
            return Ok((w.clone(), d.stream));
        }
        if let Some(dir) = d.path.parent() {
            // berthd made it; made again (owner-only: output may hold
            // secrets) if it went away meanwhile.
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                berth_mount::private::OWNER_ONLY,
            )
            .create(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let w = Writer::open(&d.path, d.max_size, d.max_files)
            .map_err(|e| Error::io(format!("open log {}", d.path.display()), e))?;
        let w = Arc::new(Mutex::new(w));
        self.0.push((d.path, w.clone()));
        Ok((w, d.stream))
    }
}

fn write(w: &Shared, stream: &str, time: i64, line: &[u8]) -> bool {
    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
    w.write(stream, time, line).is_ok()
}

/// Copies a process's output into the log until the process side closes.
/// After a failed write (the log removed with its container, a full disk)
/// output is still read, so the process never blocks on a full pipe, but
/// dropped.
pub fn copy_to_log(from: Arc<AsyncFd<OwnedFd>>, w: Shared, stream: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        let mut lines = LineSplitter::default();
        let mut ok = true;
        loop {
            match async_read(&from, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // One time for what one read brought, as docker stamps
                    // each message when it is read.
                    let now = berth_proto::time::now();
                    for l in lines.push(&buf[..n]) {
                        ok = ok && write(&w, &stream, now, &l);
                    }
                }
            }
        }
        if let Some(rest) = lines.finish()
            && ok
        {
            write(&w, &stream, berth_proto::time::now(), &rest);
        }
    })
}
