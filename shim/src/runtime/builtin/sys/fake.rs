//! The recording [`Sys`] of the built-in runtime's unit tests.

use super::*;

/// Flag names joined by `|` (`-` for none), for recorded calls.
macro_rules! names {
    ($f:expr) => {{
        let v: Vec<&str> = $f.iter_names().map(|(n, _)| n).collect();
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join("|")
        }
    }};
}

/// A recording system for tests: each call is kept as one line
/// (`mount tmpfs /dev tmpfs MS_NOSUID|MS_STRICTATIME mode=755`), changes
/// nothing outside itself, and fails every call whose line starts with a
/// prefix it was told to fail.
#[derive(Default)]
pub struct Fake {
    pub calls: std::cell::RefCell<Vec<String>>,
    /// What [`Sys::kind`] answers; `mkdir_all` and `create_file` add to it.
    pub paths: std::cell::RefCell<std::collections::HashMap<std::path::PathBuf, Kind>>,
    fail: std::cell::RefCell<Vec<(String, i32)>>,
    pub caps: Vec<Capability>,
    /// What [`Sys::mount_flags`] answers per path (none if absent).
    pub mount_flags: std::cell::RefCell<std::collections::HashMap<std::path::PathBuf, MsFlags>>,
    /// File contents [`Sys::read_file`] answers.
    pub files: std::cell::RefCell<std::collections::HashMap<std::path::PathBuf, String>>,
    /// Modes [`Sys::mode`] answers; otherwise 0755 of the path's kind.
    pub modes: std::cell::RefCell<std::collections::HashMap<std::path::PathBuf, u32>>,
    /// The directory each descriptor from [`Sys::open_dir`] stands for.
    dirs: std::cell::RefCell<std::collections::HashMap<RawFd, std::path::PathBuf>>,
}

impl Fake {
    pub fn new() -> Fake {
        Fake {
            caps: caps::all().into_iter().collect(),
            ..Fake::default()
        }
    }

    /// Makes calls whose line starts with `prefix` fail with `errno`.
    pub fn fail(&self, prefix: &str, errno: i32) {
        self.fail.borrow_mut().push((prefix.into(), errno));
    }

    /// Pretends something is at `path`.
    pub fn with(&self, path: &str, kind: Kind) -> &Fake {
        self.paths.borrow_mut().insert(path.into(), kind);
        self
    }

    /// The recorded calls whose line starts with `prefix`.
    pub fn calls_of(&self, prefix: &str) -> Vec<String> {
        self.calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn record(&self, line: String) -> io::Result<()> {
        let fail = self
            .fail
            .borrow()
            .iter()
            .find(|(p, _)| line.starts_with(p.as_str()))
            .map(|(_, e)| *e);
        self.calls.borrow_mut().push(line);
        match fail {
            Some(e) => Err(io::Error::from_raw_os_error(e)),
            None => Ok(()),
        }
    }
}

impl Sys for Fake {
    fn mount(
        &self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        let src = src.map_or("-".into(), |s| s.display().to_string());
        self.record(format!(
            "mount {src} {} {} {} {}",
            target.display(),
            fstype.unwrap_or("-"),
            names!(flags),
            data.unwrap_or("-")
        ))
    }
    fn mount_setattr_recursive(&self, target: &Path, attrs: RecursiveAttrs) -> io::Result<()> {
        self.record(format!(
            "mount_setattr {} set={:#x} clear={:#x}",
            target.display(),
            attrs.set,
            attrs.clear
        ))
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        self.record(format!("umount {} {}", target.display(), names!(flags)))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.record(format!(
            "pivot_root {} {}",
            new_root.display(),
            put_old.display()
        ))
    }
    fn chdir(&self, dir: &Path) -> io::Result<()> {
        self.record(format!("chdir {}", dir.display()))
    }
    fn open_dir(&self, dir: &Path) -> io::Result<OwnedFd> {
        self.record(format!("open_dir {}", dir.display()))?;
        // A real descriptor (of a directory that is always there), so the
        // caller holds what it would; `fchdir` names the path it stood for.
        let fd = OwnedFd::from(std::fs::File::open("/")?);
        self.dirs
            .borrow_mut()
            .insert(fd.as_raw_fd(), dir.to_path_buf());
        Ok(fd)
    }
    fn fchdir(&self, dir: &OwnedFd) -> io::Result<()> {
        let path = self.dirs.borrow().get(&dir.as_raw_fd()).cloned();
        let path = path.map_or("?".into(), |p| p.display().to_string());
        self.record(format!("fchdir {path}"))
    }
    fn kind(&self, path: &Path) -> Option<Kind> {
        self.paths.borrow().get(path).copied()
    }
    fn mkdir_all(&self, dir: &Path) -> io::Result<()> {
        self.paths.borrow_mut().insert(dir.into(), Kind::Dir);
        self.record(format!("mkdir {}", dir.display()))
    }
    fn create_file(&self, path: &Path) -> io::Result<()> {
        self.paths.borrow_mut().insert(path.into(), Kind::File);
        self.record(format!("create {}", path.display()))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.record(format!("rm {}", path.display()))
    }
    fn mknod(&self, path: &Path, kind: SFlag, mode: u32, dev: u64) -> io::Result<()> {
        let (maj, min) = (libc::major(dev), libc::minor(dev));
        self.record(format!(
            "mknod {} {} {mode:o} {maj}:{min}",
            path.display(),
            names!(kind)
        ))
    }
    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(format!("chmod {} {mode:o}", path.display()))
    }
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.record(format!("chown {} {uid}:{gid}", path.display()))
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(format!("symlink {} {}", link.display(), target.display()))
    }
    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        self.record(format!("write {} {data}", path.display()))
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(format!("sethostname {name}"))
    }
    fn link_up(&self, name: &str) -> io::Result<()> {
        self.record(format!("link_up {name}"))
    }
    fn setns(&self, path: &Path, flag: CloneFlags) -> io::Result<()> {
        self.record(format!("setns {} {}", path.display(), names!(flag)))
    }
    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        self.record(format!("unshare {}", names!(flags)))
    }
    fn setrlimit(
        &self,
        resource: libc::__rlimit_resource_t,
        soft: u64,
        hard: u64,
    ) -> io::Result<()> {
        self.record(format!("setrlimit {resource} {soft} {hard}"))
    }
    fn supported_caps(&self) -> Vec<Capability> {
        self.caps.clone()
    }
    fn drop_bounding(&self, cap: Capability) -> io::Result<()> {
        self.record(format!("drop_bounding {cap}"))
    }
    fn set_caps(&self, set: CapSet, caps: &CapsHashSet) -> io::Result<()> {
        let mut v: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        v.sort();
        self.record(format!("set_caps {set:?} {}", v.join(",")))
    }
    fn raise_ambient(&self, cap: Capability) -> io::Result<()> {
        self.record(format!("raise_ambient {cap}"))
    }
    fn setgroups(&self, gids: &[u32]) -> io::Result<()> {
        self.record(format!("setgroups {gids:?}"))
    }
    fn setresgid(&self, gid: u32) -> io::Result<()> {
        self.record(format!("setresgid {gid}"))
    }
    fn setresuid(&self, uid: u32) -> io::Result<()> {
        self.record(format!("setresuid {uid}"))
    }
    fn keep_caps(&self, on: bool) -> io::Result<()> {
        self.record(format!("keep_caps {on}"))
    }
    fn no_new_privs(&self) -> io::Result<()> {
        self.record("no_new_privs".into())
    }
    fn mount_flags(&self, path: &Path) -> io::Result<MsFlags> {
        Ok(self
            .mount_flags
            .borrow()
            .get(path)
            .copied()
            .unwrap_or(MsFlags::empty()))
    }
    fn read_file(&self, path: &Path) -> io::Result<String> {
        self.files
            .borrow()
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn mode(&self, path: &Path) -> Option<u32> {
        if let Some(m) = self.modes.borrow().get(path) {
            return Some(*m);
        }
        self.kind(path).map(|k| match k {
            Kind::Dir => libc::S_IFDIR | 0o755,
            Kind::File => libc::S_IFREG | 0o755,
        })
    }
    fn eaccess_exec(&self, path: &Path) -> io::Result<()> {
        self.record(format!("eaccess {}", path.display()))
    }
    fn set_dumpable(&self, on: bool) -> io::Result<()> {
        self.record(format!("dumpable {on}"))
    }
    fn seccomp_load(&self, _: &super::super::seccomp::Program) -> super::super::seccomp::Loaded {
        self.record("seccomp".into()).map(|()| None)
    }
    fn close_fds_except(&self, keep: &[RawFd]) -> io::Result<()> {
        let mut v = keep.to_vec();
        v.sort_unstable();
        self.record(format!("close_fds_except {v:?}"))
    }
}
