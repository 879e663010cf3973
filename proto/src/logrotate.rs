//! Size rotation of a log file, shared by the json-file and CRI writers:
//! `path` is the current file, `path.1` the one before it, and so on.

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

/// Rotates the log at `path` whose open file is `file`, keeping
/// `max_files` files (the current one included): `.1` becomes `.2` and so
/// on (the oldest dropped), the file becomes `.1`, and a new one is opened
/// with `open`. With one file it is emptied instead. The new file to write.
pub fn rotate(
    path: &Path,
    max_files: u32,
    file: &std::fs::File,
    open: fn(&Path) -> std::io::Result<std::fs::File>,
) -> std::io::Result<std::fs::File> {
    if max_files <= 1 {
        file.set_len(0)?;
        return file.try_clone();
    }
    for n in (1..max_files - 1).rev() {
        match std::fs::rename(rotated(path, n), rotated(path, n + 1)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(path, rotated(path, 1))?;
    open(path)
}
