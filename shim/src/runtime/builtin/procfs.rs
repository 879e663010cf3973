//! Writing procfs files as the host does it for [`super::sys::Host`]:
//! sysctls, the OOM score, the AppArmor attribute. In the container, after
//! pivot_root, the path is the container's: a file that is not on procfs
//! (an image's own, or a mount over /proc) must not take the write, and
//! the kernel takes an attribute in one write(2), whole or not at all.

use std::io::{self, Write};
use std::path::Path;

/// Writes `data` to the existing procfs file `path` in one write(2).
pub fn write(path: &Path, data: &str) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    let fs = nix::sys::statfs::fstatfs(&f)?;
    if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(io::Error::other(format!(
            "{} is not on procfs",
            path.display()
        )));
    }
    let n = f.write(data.as_bytes())?;
    if n != data.len() {
        return Err(io::Error::other(format!(
            "short write to {}: {n} of {} bytes",
            path.display(),
            data.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_procfs_files_take_the_write() {
        // Our own OOM score (a value it already has: nothing changes).
        let now = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        write(Path::new("/proc/self/oom_score_adj"), now.trim()).unwrap();
        let p = std::env::temp_dir().join(format!("berth-procfs-{}", std::process::id()));
        std::fs::write(&p, "x").unwrap();
        let e = write(&p, "y").unwrap_err();
        std::fs::remove_file(&p).unwrap();
        assert!(e.to_string().ends_with("is not on procfs"), "{e}");
        // Never created.
        let e = write(Path::new("/proc/self/no-such-file"), "1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
