//! Copying between the host and a container's root file system without
//! ever leaving it: every container path is resolved by the kernel with
//! `openat2(RESOLVE_IN_ROOT)` (absolute symlinks and `..` stay inside the
//! root), and trees are walked by file descriptor with `O_NOFOLLOW`, so a
//! symlink inside the container is copied as a link, never followed to a
//! host path. The host side is the caller's and is used by path.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fchmod, fstatat, futimens, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A failure with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{path}: {source}")]
    Sys { path: String, source: Errno },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

type Result<T, E = CopyError> = std::result::Result<T, E>;

fn sys(path: impl std::fmt::Display) -> impl FnOnce(Errno) -> CopyError {
    move |source| CopyError::Sys {
        path: path.to_string(),
        source,
    }
}

fn io(path: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> CopyError {
    move |source| CopyError::Io {
        path: path.to_string(),
        source,
    }
}

/// A container's root directory.
pub struct Root {
    fd: OwnedFd,
}

/// What a container path names, seen without following its last component.
pub enum Kind {
    Dir,
    Other,
    Missing,
}

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

/// Splits a container path into its parent and last component (`.` for
/// the root itself).
pub fn split(path: &str) -> (String, String) {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return ("/".into(), ".".into());
    }
    match trimmed.rsplit_once('/') {
        Some(("", name)) => ("/".into(), name.into()),
        Some((dir, name)) => (dir.into(), name.into()),
        None => (".".into(), trimmed.into()),
    }
}

impl Root {
    pub fn open(dir: &Path) -> Result<Root> {
        let fd = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(sys(dir.display()))?;
        Ok(Root { fd })
    }

    /// Opens `path` inside the root; symlinks (also absolute ones) and
    /// `..` resolve as if the root were `/`.
    fn open_in(&self, path: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
        let rel = path.trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        openat2(
            &self.fd,
            rel,
            OpenHow::new()
                .flags(flags | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
        )
    }

    fn dir(&self, path: &str) -> Result<OwnedFd> {
        self.open_in(path, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(sys(path))
    }

    /// What `path` is, following symlinks inside the root.
    pub fn kind(&self, path: &str) -> Result<Kind> {
        match self.open_in(path, OFlag::O_PATH) {
            Ok(fd) => {
                let st = nix::sys::stat::fstat(&fd).map_err(sys(path))?;
                Ok(if kind_of(&st) == SFlag::S_IFDIR {
                    Kind::Dir
                } else {
                    Kind::Other
                })
            }
            Err(Errno::ENOENT) => Ok(Kind::Missing),
            Err(e) => Err(sys(path)(e)),
        }
    }

    /// Copies container `src` to host path `dest` (created; an existing
    /// directory there is merged into). With `contents`, a directory's
    /// entries are copied into `dest` instead of the directory.
    pub fn copy_out(&self, src: &str, dest: &Path) -> Result<()> {
        let (parent, name) = split(src);
        let pfd = self.dir(&parent)?;
        // The root itself, or a path ending in "/." : follow into it.
        if name == "." {
            let fd = self.dir(src)?;
            return out_entry(&fd, ".", dest, src);
        }
        out_entry(&pfd, &name, dest, src)
    }

    /// Copies host `src` into the container as `dest_dir`/`name`.
    pub fn copy_in(&self, src: &Path, dest_dir: &str, name: &OsStr) -> Result<()> {
        let dfd = self.dir(dest_dir)?;
        in_entry(
            src,
            &dfd,
            name,
            &format!("{dest_dir}/{}", name.to_string_lossy()),
        )
    }
}

fn out_entry(pfd: &OwnedFd, name: &str, dest: &Path, shown: &str) -> Result<()> {
    let st = fstatat(pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(sys(shown))?;
    let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
    let (atime, mtime) = times(&st);
    match kind_of(&st) {
        SFlag::S_IFDIR => {
            let fd = openat(
                pfd,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(sys(shown))?;
            match std::fs::create_dir(dest) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dest.is_dir() => {}
                r => r.map_err(io(dest.display()))?,
            }
            let mut d =
                nix::dir::Dir::from_fd(fd.try_clone().map_err(io(shown))?).map_err(sys(shown))?;
            let names: Vec<Vec<u8>> = d
                .iter()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_bytes().to_vec())
                .filter(|n| n != b"." && n != b"..")
                .collect();
            for n in names {
                let os = OsStr::from_bytes(&n);
                let child = os.to_str().ok_or_else(|| {
                    CopyError::Usage(format!("{shown}: a name is not UTF-8: {os:?}"))
                })?;
                out_entry(&fd, child, &dest.join(os), &format!("{shown}/{child}"))?;
            }
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode.bits()))
                .map_err(io(dest.display()))?;
            utimensat(
                nix::fcntl::AT_FDCWD,
                dest,
                &atime,
                &mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(sys(dest.display()))?;
        }
        SFlag::S_IFREG => {
            let fd = openat(
                pfd,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(sys(shown))?;
            replace_host(dest)?;
            let mut out = File::create(dest).map_err(io(dest.display()))?;
            std::io::copy(&mut File::from(fd), &mut out).map_err(io(shown))?;
            fchmod(&out, mode).map_err(sys(dest.display()))?;
            futimens(&out, &atime, &mtime).map_err(sys(dest.display()))?;
        }
        SFlag::S_IFLNK => {
            let target = readlinkat(pfd, name).map_err(sys(shown))?;
            replace_host(dest)?;
            std::os::unix::fs::symlink(&target, dest).map_err(io(dest.display()))?;
        }
        k @ (SFlag::S_IFIFO | SFlag::S_IFCHR | SFlag::S_IFBLK) => {
            replace_host(dest)?;
            nix::sys::stat::mknod(dest, k, mode, st.st_rdev).map_err(sys(dest.display()))?;
        }
        _ => eprintln!("berthctl: {shown}: a socket is not copied"),
    }
    Ok(())
}

/// Removes a non-directory at `dest` so it can be written anew.
fn replace_host(dest: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => Err(CopyError::Usage(format!(
            "cannot overwrite directory {} with a non-directory",
            dest.display()
        ))),
        Ok(_) => std::fs::remove_file(dest).map_err(io(dest.display())),
        Err(_) => Ok(()),
    }
}

/// Removes a non-directory `name` under `dfd` (a link is never followed).
fn replace_in(dfd: &OwnedFd, name: &OsStr, shown: &str) -> Result<()> {
    match fstatat(dfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if kind_of(&st) == SFlag::S_IFDIR => Err(CopyError::Usage(format!(
            "cannot overwrite directory {shown} with a non-directory"
        ))),
        Ok(_) => unlinkat(dfd, name, UnlinkatFlags::NoRemoveDir).map_err(sys(shown)),
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(sys(shown)(e)),
    }
}

fn in_entry(src: &Path, dfd: &OwnedFd, name: &OsStr, shown: &str) -> Result<()> {
    let m = std::fs::symlink_metadata(src).map_err(io(src.display()))?;
    let mode = Mode::from_bits_truncate(m.mode() & 0o7777);
    let mtime = TimeSpec::new(m.mtime(), m.mtime_nsec());
    let atime = TimeSpec::new(m.atime(), m.atime_nsec());
    let ft = m.file_type();
    if ft.is_dir() {
        // An existing directory is merged into; a link or file there is
        // replaced, so the walk below never leaves the tree it made.
        let existing = fstatat(dfd, name, AtFlags::AT_SYMLINK_NOFOLLOW);
        match existing {
            Ok(st) if kind_of(&st) == SFlag::S_IFDIR => {}
            Ok(_) => {
                unlinkat(dfd, name, UnlinkatFlags::NoRemoveDir).map_err(sys(shown))?;
                mkdirat(dfd, name, Mode::from_bits_truncate(0o700)).map_err(sys(shown))?;
            }
            Err(Errno::ENOENT) => {
                mkdirat(dfd, name, Mode::from_bits_truncate(0o700)).map_err(sys(shown))?
            }
            Err(e) => return Err(sys(shown)(e)),
        }
        let fd = openat(
            dfd,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys(shown))?;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(src)
            .map_err(io(src.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(io(src.display()))?;
        entries.sort();
        for p in entries {
            let n = p.file_name().unwrap_or_default().to_owned();
            in_entry(&p, &fd, &n, &format!("{shown}/{}", n.to_string_lossy()))?;
        }
        fchmod(&fd, mode).map_err(sys(shown))?;
        futimens(&fd, &atime, &mtime).map_err(sys(shown))?;
    } else if ft.is_file() {
        let mut input = File::open(src).map_err(io(src.display()))?;
        replace_in(dfd, name, shown)?;
        let fd = openat(
            dfd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(sys(shown))?;
        let mut out = File::from(fd);
        std::io::copy(&mut input, &mut out).map_err(io(shown))?;
        fchmod(&out, mode).map_err(sys(shown))?;
        futimens(&out, &atime, &mtime).map_err(sys(shown))?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(io(src.display()))?;
        replace_in(dfd, name, shown)?;
        symlinkat(&target, dfd, name).map_err(sys(shown))?;
    } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
        let k = if ft.is_fifo() {
            SFlag::S_IFIFO
        } else if ft.is_char_device() {
            SFlag::S_IFCHR
        } else {
            SFlag::S_IFBLK
        };
        replace_in(dfd, name, shown)?;
        mknodat(dfd, name, k, mode, m.rdev()).map_err(sys(shown))?;
    } else {
        eprintln!("berthctl: {}: a socket is not copied", src.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_container_paths() {
        assert_eq!(split("/"), ("/".into(), ".".into()));
        assert_eq!(split("/etc"), ("/".into(), "etc".into()));
        assert_eq!(split("/etc/passwd"), ("/etc".into(), "passwd".into()));
        assert_eq!(split("/etc/"), ("/".into(), "etc".into()));
        assert_eq!(split("/a/."), ("/a".into(), ".".into()));
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/hostname"), "inside").unwrap();
        std::os::unix::fs::symlink("/", r.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("up")).unwrap();
        let out = tempfile::tempdir().unwrap();
        let root = Root::open(r).unwrap();
        for (i, p) in ["/escape/etc/hostname", "/up/hostname", "/../etc/hostname"]
            .iter()
            .enumerate()
        {
            let dest = out.path().join(format!("h{i}"));
            root.copy_out(p, &dest).unwrap();
            assert_eq!(std::fs::read_to_string(&dest).unwrap(), "inside", "{p}");
        }
        // The link itself is copied as a link.
        root.copy_out("/escape", &out.path().join("l")).unwrap();
        assert_eq!(
            std::fs::read_link(out.path().join("l")).unwrap(),
            Path::new("/")
        );
        // Writing through a link lands inside the root too.
        let src = out.path().join("h0");
        root.copy_in(&src, "/escape/etc", OsStr::new("new"))
            .unwrap();
        assert!(r.join("etc/new").exists());
    }

    #[test]
    fn trees_keep_modes_and_links() {
        let host = tempfile::tempdir().unwrap();
        let src = host.path().join("tree");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/x"), "x").unwrap();
        std::fs::set_permissions(src.join("sub/x"), std::fs::Permissions::from_mode(0o751))
            .unwrap();
        std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o710)).unwrap();
        std::os::unix::fs::symlink("sub/x", src.join("lnk")).unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        let root = Root::open(root_dir.path()).unwrap();
        root.copy_in(&src, "/", OsStr::new("t")).unwrap();
        let t = root_dir.path().join("t");
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&t.join("sub/x")), 0o751);
        assert_eq!(mode(&t.join("sub")), 0o710);
        assert_eq!(
            std::fs::read_link(t.join("lnk")).unwrap(),
            Path::new("sub/x")
        );
        // And back out.
        let back = host.path().join("back");
        root.copy_out("/t", &back).unwrap();
        assert_eq!(mode(&back.join("sub/x")), 0o751);
        assert_eq!(std::fs::read_to_string(back.join("sub/x")).unwrap(), "x");
        // A file over a directory is refused with a message.
        let e = root
            .copy_in(&src.join("sub/x"), "/t", OsStr::new("sub"))
            .unwrap_err();
        assert!(e.to_string().contains("cannot overwrite directory"), "{e}");
    }
}
