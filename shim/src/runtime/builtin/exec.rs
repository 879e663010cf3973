//! The last steps of a container process: its working directory, its
//! program found on its `PATH`, its limits and identity (see [`creds`]),
//! its AppArmor profile (see [`apparmor`]), then `execve` with nothing but
//! stdio inherited.

use super::seccomp::{self, Program};
use super::sys::Sys;
use super::{apparmor, creds};
use crate::{Error, Result};
use oci_spec::runtime::Process;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Used when the process's environment has no `PATH` (runc's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to exec, resolved before privileges are dropped.
#[derive(Debug)]
pub struct Prepared {
    pub path: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("{s:?} contains a NUL byte")))
}

/// Whether `p` may be run, by its mode as Go's `exec.LookPath` (runc's)
/// judges: not a directory, some execute bit set.
fn executable(sys: &dyn Sys, p: &Path) -> std::io::Result<()> {
    match sys.mode(p) {
        None => Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
        Some(m) if m & libc::S_IFMT != libc::S_IFDIR && m & 0o111 != 0 => Ok(()),
        Some(_) => Err(std::io::Error::from_raw_os_error(libc::EACCES)),
    }
}

/// Looks a program up on the process's `PATH` (inside the container) as
/// runc does: a name with a slash is taken as it is, but must be
/// executable too.
pub fn find_program(sys: &dyn Sys, prog: &str, env: &[String]) -> Result<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        executable(sys, &p).map_err(|e| Error::io(format!("exec: {prog:?}"), e))?;
        return Ok(p);
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        // An empty entry is the working directory.
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(prog);
        if executable(sys, &p).is_ok() {
            return Ok(p);
        }
    }
    Err(Error::not_found(format!(
        "exec: {prog:?}: executable file not found in $PATH"
    )))
}

/// The home directory of `uid` in the container's /etc/passwd; `/`
/// without an entry (or without the file), as runc.
pub fn home_of(sys: &dyn Sys, uid: u32) -> Result<String> {
    let passwd = Path::new("/etc/passwd");
    let text = match sys.read_file(passwd) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok("/".into()),
        Err(e) => return Err(Error::io("read the container's /etc/passwd", e)),
    };
    let uid = uid.to_string();
    Ok(text
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[2] == uid)
        .map_or_else(|| "/".into(), |f| f[5].to_string()))
}

/// Applies the process's limits, identity and capabilities, and finds its
/// program, then loads `seccomp` (the container's filter, see
/// [`super::seccomp`]; a listener descriptor goes to the shim over the
/// sync socket given with it). Used by both init and exec processes.
pub fn prepare(
    sys: &dyn Sys,
    p: &Process,
    seccomp: Option<(&Program, &OwnedFd)>,
) -> Result<Prepared> {
    creds::check_supported(p)?;
    creds::apply_rlimits(sys, p)?;
    let mut env: Vec<String> = p.env().clone().unwrap_or_default();
    let args = p.args().clone().unwrap_or_default();
    let Some(prog) = args.first() else {
        return Err(Error::invalid("the process has no args: nothing to run"));
    };
    let cargs = args.iter().map(|a| cstr(a)).collect::<Result<_>>()?;
    let cwd = p.cwd();
    sys.chdir(cwd)
        .map_err(|e| Error::io(format!("chdir to {}", cwd.display()), e))?;
    // runc gives a process without HOME its user's (read before the user
    // switch, which may lose access to /etc/passwd).
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(sys, p.user().uid())?));
    }
    let nnp = p.no_new_privileges().unwrap_or(false);
    let load = |(f, sock): (&Program, &OwnedFd)| {
        let notify = sys
            .seccomp_load(f)
            .map_err(|e| Error::io("load the seccomp filter", e))?;
        // At once, before any other call the profile could notify (runc).
        seccomp::hand_over(sock, notify)
    };
    // Without no_new_privs only CAP_SYS_ADMIN may load a filter: before
    // the identity and capabilities change, as runc.
    if let Some(f) = seccomp.filter(|_| !nnp) {
        load(f)?;
    }
    // Identity and capabilities last: they may take away what came before.
    creds::apply_bounding(sys, p)?;
    creds::apply_ids(sys, p)?;
    creds::apply_caps(sys, p)?;
    // A uid or gid change resets the flag to fs.suid_dumpable, which may
    // be 1: non-dumpable again until the program's execve (runc does too).
    sys.set_dumpable(false)
        .map_err(|e| Error::io("make the container process non-dumpable", e))?;
    // Where runc's exec applies it (its init does so a little earlier, as
    // root; the profile only takes hold at execve either way).
    apparmor::apply(sys, p.apparmor_profile().as_deref())?;
    // As the container's user, before the process reports ready: what
    // cannot run fails the create (or the exec's start), not a later
    // Start, as runc.
    let path = find_program(sys, prog, &env)?;
    sys.eaccess_exec(&path)
        .map_err(|e| Error::io(format!("exec: {prog:?}"), e))?;
    creds::apply_no_new_privs(sys, p)?;
    // Last, so no setup call needs the profile's permission (runc too).
    if let Some(f) = seccomp.filter(|_| nnp) {
        load(f)?;
    }
    Ok(Prepared {
        path: cstr(&path.display().to_string())?,
        args: cargs,
        env: env.iter().map(|e| cstr(e)).collect::<Result<_>>()?,
    })
}

/// Marks every descriptor above stderr close-on-exec.
fn cloexec_from_3() -> Result<()> {
    // SAFETY: close_range only sets flags on this process's descriptors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC: one descriptor at a
    // time, as runc does. Collected first: the listing holds one open.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| Error::io("list open descriptors", e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD only sets a flag; a descriptor that closed since
        // the listing (the listing's own) fails with EBADF, skipped below.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBADF) {
                return Err(Error::io(format!("set close-on-exec on fd {fd}"), e));
            }
        }
    }
    Ok(())
}

/// Every signal back to its default action and unblocked: ignored
/// dispositions and the mask survive execve, and the shim inherits them
/// from whoever started berthd (a shell's background job ignores SIGQUIT
/// and SIGINT), while a container must start clean (runc's Go runtime
/// handles, and so resets, every signal).
fn reset_signals() {
    /// The kernel's `struct sigaction` (libc's wrappers refuse the
    /// real-time signals they reserve, which a parent may have ignored).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: rt_sigaction reads `dfl`, which outlives the call,
            // and writes nothing (no old action asked for).
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
    }
    // SAFETY: an empty set, filled by sigemptyset, installed as the mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Executes the prepared program; returns only its failure.
pub fn exec(p: &Prepared) -> Error {
    // Nothing but stdio crosses into the container: descriptors the shim
    // (or whoever started berthd) left open without close-on-exec get it
    // now, as runc does.
    if let Err(e) = cloexec_from_3() {
        return e;
    }
    reset_signals();
    match nix::unistd::execve(&p.path, &p.args, &p.env) {
        Err(e) => Error::sys(format!("exec {:?}", p.path), e),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::super::sys::{Fake, Kind};
    use super::*;
    use oci_spec::runtime::ProcessBuilder;

    fn process(args: &[&str], env: &[&str]) -> Process {
        ProcessBuilder::default()
            .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .env(env.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .cwd("/work")
            .build()
            .unwrap()
    }

    #[test]
    fn program_lookup_follows_the_process_path() {
        let sys = Fake::new();
        sys.with("/opt/bin/tool", Kind::File)
            .with("/usr/bin/tool", Kind::File)
            .with("/bin/sh", Kind::File)
            .with("/usr/local/bin/sh", Kind::Dir)
            .with("./rel/x", Kind::File);
        assert_eq!(
            find_program(&sys, "tool", &["PATH=/nope:/opt/bin:/usr/bin".into()]).unwrap(),
            PathBuf::from("/opt/bin/tool")
        );
        // Without PATH, the default; a directory of that name is skipped.
        assert_eq!(
            find_program(&sys, "sh", &[]).unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            find_program(&sys, "./rel/x", &[]).unwrap(),
            PathBuf::from("./rel/x")
        );
        let e = find_program(&sys, "tool", &["PATH=/nope".into()]).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::NotFound);
        assert!(e.message().contains("executable file not found"), "{e}");
    }

    #[test]
    fn program_lookup_needs_an_executable_file() {
        let sys = Fake::new();
        sys.with("/etc/passwd", Kind::File)
            .with("/a/tool", Kind::File)
            .with("/b/tool", Kind::File);
        sys.modes.borrow_mut().extend([
            ("/etc/passwd".into(), libc::S_IFREG | 0o644),
            ("/a/tool".into(), libc::S_IFREG | 0o600),
        ]);
        // Not executable: refused, with runc's gist.
        let e = find_program(&sys, "/etc/passwd", &[]).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::PermissionDenied);
        assert!(e.chain().contains("Permission denied"), "{}", e.chain());
        let e = find_program(&sys, "/nope/x", &[]).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::NotFound);
        // On PATH a non-executable one is skipped; a directory is no program.
        assert_eq!(
            find_program(&sys, "tool", &["PATH=/a:/b".into()]).unwrap(),
            PathBuf::from("/b/tool")
        );
        let e = find_program(&sys, "/a", &[]);
        assert!(e.is_err());
    }

    #[test]
    fn home_comes_from_the_containers_passwd_unless_set() {
        let sys = Fake::new();
        sys.with("/bin/sh", Kind::File);
        sys.files.borrow_mut().insert(
            "/etc/passwd".into(),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n".into(),
        );
        let env = |p: &Prepared| -> Vec<String> {
            p.env
                .iter()
                .map(|e| e.to_str().unwrap().to_string())
                .collect()
        };
        let p = prepare(&sys, &process(&["sh"], &["A=1"]), None).unwrap();
        assert_eq!(env(&p), vec!["A=1", "HOME=/root"]);
        let p = prepare(&sys, &process(&["sh"], &["HOME=/x"]), None).unwrap();
        assert_eq!(env(&p), vec!["HOME=/x"]);
        let mut nobody = process(&["sh"], &[]);
        nobody.set_user(
            oci_spec::runtime::UserBuilder::default()
                .uid(65534u32)
                .gid(65534u32)
                .build()
                .unwrap(),
        );
        assert_eq!(
            env(&prepare(&sys, &nobody, None).unwrap()),
            vec!["HOME=/home"]
        );
        // No entry, or no passwd at all: "/".
        assert_eq!(home_of(&sys, 1000).unwrap(), "/");
        assert_eq!(home_of(&Fake::new(), 0).unwrap(), "/");
    }

    #[test]
    fn program_is_checked_as_the_user_before_ready() {
        let sys = Fake::new();
        sys.with("/bin/sh", Kind::File);
        prepare(&sys, &process(&["sh"], &[]), None).unwrap();
        let calls = sys.calls.borrow().clone();
        let at = |prefix: &str| calls.iter().position(|c| c.starts_with(prefix)).unwrap();
        assert!(at("setresuid") < at("eaccess /bin/sh"));
        let sys = Fake::new();
        sys.with("/bin/sh", Kind::File);
        sys.fail("eaccess", libc::EACCES);
        let e = prepare(&sys, &process(&["sh"], &[]), None).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::PermissionDenied);
        assert_eq!(e.message(), "exec: \"sh\"");
    }

    #[test]
    fn prepare_chdirs_before_lookup_and_drops_privileges_last() {
        let sys = Fake::new();
        sys.with("/bin/sh", Kind::File);
        let p = prepare(&sys, &process(&["sh", "-c", "true"], &["A=1"]), None).unwrap();
        assert_eq!(p.path.to_str().unwrap(), "/bin/sh");
        assert_eq!(p.args.len(), 3);
        assert_eq!(p.env[0].to_str().unwrap(), "A=1");
        assert_eq!(p.env[1].to_str().unwrap(), "HOME=/");
        let calls = sys.calls.borrow();
        let at = |prefix: &str| calls.iter().position(|c| c.starts_with(prefix)).unwrap();
        // The builder's default rlimit (NOFILE) is applied first.
        assert!(at("setrlimit") < at("chdir /work"));
        assert!(at("chdir /work") < at("setgroups"));
        assert!(at("setresgid 0") < at("setresuid 0"));
        assert!(at("setresuid 0") < at("dumpable false"));
        assert!(at("dumpable false") < at("eaccess"));
        // oci-spec's default process has no_new_privileges: last of all.
        assert_eq!(calls.last().unwrap(), "no_new_privs");
    }

    #[test]
    fn the_apparmor_profile_is_written_as_the_user_before_the_lookup() {
        let sys = Fake::new();
        sys.with("/bin/sh", Kind::File);
        let mut p = process(&["sh"], &[]);
        p.set_apparmor_profile(Some("docker-default".into()));
        prepare(&sys, &p, None).unwrap();
        let calls = sys.calls.borrow().clone();
        let at = |prefix: &str| calls.iter().position(|c| c.starts_with(prefix)).unwrap();
        let aa = at("write /proc/self/attr");
        assert_eq!(calls[aa], "write /proc/self/attr/exec exec docker-default");
        assert!(at("setresuid") < aa);
        assert!(at("dumpable false") < aa);
        assert!(aa < at("eaccess /bin/sh"));
        assert!(aa < at("no_new_privs"));
        // Refused (no AppArmor on the host): the process fails before
        // its program is even looked up.
        let sys = Fake::new();
        sys.with("/bin/sh", Kind::File);
        sys.fail("write /proc/self/attr", libc::EINVAL);
        let e = prepare(&sys, &p, None).unwrap_err();
        assert!(e.message().contains("process.apparmorProfile"), "{e}");
        assert!(sys.calls_of("eaccess").is_empty());
        // Without a profile nothing is written.
        let sys = Fake::new();
        sys.with("/bin/sh", Kind::File);
        prepare(&sys, &process(&["sh"], &[]), None).unwrap();
        assert!(sys.calls_of("write /proc/self/attr").is_empty());
    }

    #[test]
    fn prepare_refuses_empty_args_nul_bytes_and_failed_chdir() {
        let sys = Fake::new();
        let e = prepare(&sys, &process(&[], &[]), None).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::InvalidArgument);
        let e = prepare(&sys, &process(&["/bin/a\0b"], &[]), None).unwrap_err();
        assert!(e.message().contains("NUL"), "{e}");
        sys.fail("chdir", libc::ENOENT);
        let e = prepare(&sys, &process(&["/bin/sh"], &[]), None).unwrap_err();
        assert_eq!(e.message(), "chdir to /work");
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::NotFound);
    }

    #[test]
    fn seccomp_loads_last_with_no_new_privs_else_before_dropping_caps() {
        let prog = Program {
            filter: vec![],
            flags: 0,
        };
        let (sock, _shim) = super::super::sync::pair().unwrap();
        let f = (&prog, &sock);
        let sys = Fake::new();
        sys.with("/bin/sh", Kind::File);
        prepare(&sys, &process(&["sh"], &[]), Some(f)).unwrap();
        let calls = sys.calls.borrow().clone();
        assert_eq!(calls[calls.len() - 2..], ["no_new_privs", "seccomp"]);
        let sys = Fake::new();
        sys.with("/bin/sh", Kind::File);
        let mut p = process(&["sh"], &[]);
        p.set_no_new_privileges(Some(false));
        prepare(&sys, &p, Some(f)).unwrap();
        let calls = sys.calls.borrow().clone();
        let at = |prefix: &str| calls.iter().position(|c| c.starts_with(prefix)).unwrap();
        assert!(at("seccomp") < at("setgroups"), "{calls:?}");
        assert!(!calls.iter().any(|c| c == "no_new_privs"));
        // A failed load fails the process.
        sys.fail("seccomp", libc::EPERM);
        assert!(prepare(&sys, &p, Some(f)).is_err());
    }
}
