//! Log files rotated by size ([`LogFile`]), under the json-file and CRI
//! writers: `path` is the current file, `path.1` the one before it, and so
//! on.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The `n`th rotated file of `path` (0 is `path` itself).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    s.into()
}

/// A log file opened for appending and rotated by size, as docker's
/// json-file driver does: before a line is appended, a file that has
/// reached `max_size` becomes `.1` (`.1` becomes `.2`, …, the oldest
/// dropped; with one file kept it is emptied instead) and a new one is
/// started. One `write(2)` per line, so lines of two streams never mix.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    /// Permission bits of the files it creates.
    mode: u32,
    size: u64,
    /// 0: never rotated.
    max_size: u64,
    max_files: u32,
}

impl LogFile {
    /// Opens (appending to, creating with `mode`) the log at `path`; its
    /// directory must exist.
    pub fn open(path: &Path, mode: u32, max_size: u64, max_files: u32) -> io::Result<Self> {
        let file = open_append(path, mode)?;
        Ok(Self {
            path: path.to_path_buf(),
            size: file.metadata()?.len(),
            file,
            mode,
            max_size,
            max_files: max_files.max(1),
        })
    }

    /// The path written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line, rotating first when the file is full.
    pub fn append(&mut self, line: &[u8]) -> io::Result<()> {
        if self.max_size > 0 && self.size >= self.max_size {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// Closes the file and opens the path again (a new file if the old one
    /// was renamed away), going on counting from the size found there.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open_append(&self.path, self.mode)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.size = 0;
        if self.max_files == 1 {
            return self.file.set_len(0);
        }
        for n in (1..self.max_files - 1).rev() {
            match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = open_append(&self.path, self.mode)?;
        Ok(())
    }
}

fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new().create(true).append(true),
        mode,
    )
    .open(path)
}
