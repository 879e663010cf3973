//! Directories and files no other host user can reach. A mount point (or
//! anything above it) that others can traverse lets them run a container's
//! setuid files as root and read its files (CVE-2021-41103); specs, logs and
//! databases hold secrets. Modes are set explicitly, whatever the umask.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Traversable by others but not listable: the root and state directories,
/// parents of per-namespace directories.
pub const PASS_THROUGH: u32 = 0o711;
/// Owner only: stores, bundles, mount points' parents.
pub const OWNER_ONLY: u32 = 0o700;
/// Owner-only files: specs, databases, logs, sockets.
pub const OWNER_FILE: u32 = 0o600;

/// Creates `path` (missing parents too) and sets it to exactly `mode`, also
/// when it already existed with a looser one (an admin's `mkdir` leaves
/// 0755).
pub fn dir(path: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(mode).create(path)?;
    std::fs::set_permissions(path, Permissions::from_mode(mode))
}

/// Creates `path` with `mode` when missing, and otherwise only takes away
/// what group and others may do beyond `mode`: for directories shared with
/// others (containerd's shim socket directory) or chosen by a user.
pub fn dir_tightened(path: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(mode).create(path)?;
    let cur = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    let want = tightened(cur, mode);
    if want != cur {
        std::fs::set_permissions(path, Permissions::from_mode(want))?;
    }
    Ok(())
}

/// `cur` with the group and other bits `mode` lacks taken away.
pub fn tightened(cur: u32, mode: u32) -> u32 {
    cur & !(0o077 & !mode)
}

/// Creates (or truncates) `path` as an owner-only file.
pub fn create_file(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(OWNER_FILE)
        .open(path)?;
    // An existing file keeps its mode through open.
    f.set_permissions(Permissions::from_mode(OWNER_FILE))?;
    Ok(f)
}

/// Makes sure `path` exists as an owner-only file without touching its
/// contents (a database about to be opened by its library).
pub fn ensure_file(path: &Path) -> io::Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(OWNER_FILE)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(OWNER_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn dir_tightens_a_looser_existing_directory() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("root");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, Permissions::from_mode(0o777)).unwrap();
        dir(&d, PASS_THROUGH).unwrap();
        assert_eq!(mode(&d), 0o711);
        dir(&t.path().join("a/b"), OWNER_ONLY).unwrap();
        assert_eq!(mode(&t.path().join("a/b")), 0o700);
    }

    #[test]
    fn tightening_only_takes_away() {
        assert_eq!(tightened(0o755, OWNER_ONLY), 0o700);
        assert_eq!(tightened(0o600, OWNER_ONLY), 0o600);
        assert_eq!(tightened(0o1777, PASS_THROUGH), 0o1711);
        assert_eq!(tightened(0o700, PASS_THROUGH), 0o700);
    }

    #[test]
    fn files_are_owner_only_even_when_they_existed() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("db");
        std::fs::write(&p, b"keep").unwrap();
        std::fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        ensure_file(&p).unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"keep");
        let q = t.path().join("spec");
        create_file(&q).unwrap();
        assert_eq!(mode(&q), 0o600);
    }
}
