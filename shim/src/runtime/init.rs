//! What runs in the forked children of the built-in runtime: entering or
//! creating namespaces, building the root filesystem, dropping privileges
//! and finally executing the user's program.
//!
//! The shim is single-threaded, so these children may allocate and use the
//! standard library freely. They report to the shim over a SEQPACKET socket:
//! `p<pid>` (the grandchild's pid), `r` (ready), `e<message>` (failure);
//! the shim answers `c` (in its cgroup) and `s` (start). A successful exec
//! closes the socket (close-on-exec), which the shim reads as success.

use crate::stdio::ChildIo;
use crate::{Error, Result};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxNamespaceType, Mount, PosixRlimitType, Process, Spec};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Sends one message on the sync socket.
pub fn send(sock: &OwnedFd, msg: &str) {
    // Ignored: if the shim is gone there is nobody to tell, and a lost
    // message reads as EOF on its side, which it reports as a failure.
    let _ = nix::sys::socket::send(
        sock.as_raw_fd(),
        msg.as_bytes(),
        nix::sys::socket::MsgFlags::empty(),
    );
}

/// Sends a message with a descriptor attached (the terminal master).
pub fn send_fd(sock: &OwnedFd, msg: &str, fd: &OwnedFd) -> Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [std::io::IoSlice::new(msg.as_bytes())];
    let fds = [fd.as_raw_fd()];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::sys("send terminal to the shim", e))?;
    Ok(())
}

/// Receives one message and a descriptor, if one came with it.
pub fn recv_fd(sock: &OwnedFd) -> Result<(String, Option<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; 8192];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let (n, fd) = loop {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(Error::sys("read from the container process", e)),
            Ok(m) => {
                let mut fd = None;
                if let Ok(cms) = m.cmsgs() {
                    for c in cms {
                        if let ControlMessageOwned::ScmRights(fds) = c
                            && let Some(f) = fds.first()
                        {
                            // SAFETY: the kernel just gave us this descriptor.
                            fd = Some(unsafe { OwnedFd::from_raw_fd(*f) });
                        }
                    }
                }
                break (m.bytes, fd);
            }
        }
    };
    Ok((String::from_utf8_lossy(&buf[..n]).to_string(), fd))
}

/// Opens a terminal in the container's devpts, sends its master to the
/// shim, and returns the slave.
fn open_console(sock: &OwnedFd) -> Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("open /dev/ptmx in the container", e))?;
    nix::pty::grantpt(&master).map_err(|e| Error::sys("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| Error::sys("unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| Error::sys("ptsname", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open {name}"), e))?;
    // SAFETY: PtyMaster owns a valid descriptor; we take it over.
    let master = unsafe {
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
            master,
        ))
    };
    send_fd(sock, "m", &master)?;
    Ok(slave)
}

/// Receives one message; empty on EOF.
pub fn recv(sock: &OwnedFd) -> Result<String> {
    let mut buf = vec![0u8; 8192];
    let n = loop {
        match nix::sys::socket::recv(
            sock.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        ) {
            Err(nix::Error::EINTR) => continue,
            r => break r.map_err(|e| Error::sys("read from the container process", e))?,
        }
    };
    Ok(String::from_utf8_lossy(&buf[..n]).to_string())
}

fn expect(sock: &OwnedFd, want: &str) -> Result<()> {
    let m = recv(sock)?;
    if m != want {
        return Err(Error::internal(format!(
            "sync: expected {want:?}, got {m:?}"
        )));
    }
    Ok(())
}

fn ns_flag(t: LinuxNamespaceType) -> Result<CloneFlags> {
    Ok(match t {
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::User => {
            return Err(Error::unimplemented(
                "user namespaces are not supported by the built-in runtime yet: use runc (BinaryName)",
            ));
        }
        LinuxNamespaceType::Time => {
            return Err(Error::unimplemented(
                "time namespaces are not supported by the built-in runtime",
            ));
        }
    })
}

fn setns_path(path: &Path, flag: CloneFlags) -> Result<()> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("open namespace {}", path.display()), e))?;
    nix::sched::setns(f, flag)
        .map_err(|e| Error::sys(format!("join namespace {}", path.display()), e))
}

/// The first child: enters/creates namespaces, forks the container's init
/// (so it is pid 1 of a new pid namespace), reports its pid and exits.
/// With `joins` (cgroup v1) the init joins its cgroup itself; otherwise
/// it waits for the shim to move it there ("c").
pub fn intermediate(
    spec: &Spec,
    rootfs: &Path,
    io: ChildIo,
    joins: Option<Vec<OwnedFd>>,
    sock: OwnedFd,
) -> i32 {
    match intermediate_inner(spec, rootfs, io, joins, &sock) {
        Ok(()) => 0,
        Err(e) => {
            send(&sock, &format!("e{e}"));
            1
        }
    }
}

fn intermediate_inner(
    spec: &Spec,
    rootfs: &Path,
    io: ChildIo,
    joins: Option<Vec<OwnedFd>>,
    sock: &OwnedFd,
) -> Result<()> {
    let mut new = CloneFlags::empty();
    let empty = Vec::new();
    let nss = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .unwrap_or(&empty);
    for ns in nss {
        let flag = ns_flag(ns.typ())?;
        if flag == CloneFlags::CLONE_NEWCGROUP {
            continue; // entered by init once it is in its cgroup
        }
        match ns.path() {
            Some(p) => setns_path(p, flag)?,
            None => new |= flag,
        }
    }
    nix::sched::unshare(new).map_err(|e| Error::sys("create namespaces", e))?;
    if fork_reporting_pid(sock, "fork the container init")? {
        let code = match init_main(spec, rootfs, io, joins, sock) {
            Ok(never) => match never {},
            Err(e) => {
                send(sock, &format!("e{e}"));
                1
            }
        };
        // SAFETY: leaving the forked child without running destructors twice.
        unsafe { libc::_exit(code) }
    }
    Ok(())
}

/// Forks (the caller is single-threaded); the parent sends `p<child pid>`
/// over `sock` and only then lets the child run on, so the shim always
/// reads the pid first, whatever the child sends next (`r`, `m`, `e…`).
/// True in the child.
fn fork_reporting_pid(sock: &OwnedFd, what: &str) -> Result<bool> {
    let (gate_r, gate_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("create pipe", e))?;
    // SAFETY: the caller is single-threaded (a fork of the shim).
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys(what, e))? {
        nix::unistd::ForkResult::Child => {
            drop(gate_w);
            // Returns at EOF: when the parent has sent the pid and closed its end.
            // Any result (EOF or an error) means the parent is done with it.
            let _ = nix::unistd::read(&gate_r, &mut [0u8; 1]);
            Ok(true)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(gate_r);
            send(sock, &format!("p{child}"));
            drop(gate_w);
            Ok(false)
        }
    }
}

/// Connects the process's stdio: the client's pipes, or a terminal made in
/// the container (whose master goes to the shim over `sock`).
fn setup_stdio(io: &ChildIo, sock: &OwnedFd, process: Option<&Process>) -> Result<()> {
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    let dup = |fd: &OwnedFd, to: i32| {
        // SAFETY: dup2 onto a standard descriptor.
        if unsafe { libc::dup2(fd.as_raw_fd(), to) } < 0 {
            return Err(Error::io("set up stdio", std::io::Error::last_os_error()));
        }
        Ok(())
    };
    if io.terminal {
        let slave = open_console(sock)?;
        // Sized before the program runs (like runc), so it never sees 0x0
        // while the client's first resize is on its way.
        if let Some(sz) = process.and_then(|p| p.console_size()) {
            let ws = crate::stdio::winsize(sz.width(), sz.height())?;
            // SAFETY: TIOCSWINSZ reads a winsize from the pointer we pass,
            // which outlives the call.
            if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
                return Err(Error::io(
                    "set the terminal size",
                    std::io::Error::last_os_error(),
                ));
            }
        }
        // SAFETY: make the terminal our controlling terminal.
        if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
            return Err(Error::io(
                "set controlling terminal",
                std::io::Error::last_os_error(),
            ));
        }
        for to in 0..3 {
            dup(&slave, to)?;
        }
        return Ok(());
    }
    if let Some(f) = &io.stdin {
        dup(f, 0)?;
    }
    if let Some(f) = &io.stdout {
        dup(f, 1)?;
    }
    if let Some(f) = &io.stderr {
        dup(f, 2)?;
    }
    Ok(())
}

/// The container's init: builds its world, waits for start, executes.
fn init_main(
    spec: &Spec,
    rootfs: &Path,
    io: ChildIo,
    joins: Option<Vec<OwnedFd>>,
    sock: &OwnedFd,
) -> Result<std::convert::Infallible> {
    let linux = spec.linux().clone().unwrap_or_default();
    let nss = linux.namespaces().clone().unwrap_or_default();
    let has = |t: LinuxNamespaceType| nss.iter().find(|n| n.typ() == t);
    // In the cgroup before anything of the container's own runs.
    let joined = match joins {
        Some(files) => {
            crate::cgroup::join_self(&files)?;
            true
        }
        None => false,
    };
    // When the shim moves us (cgroup v2), that costs it an RCU grace
    // period; build the root filesystem meanwhile unless a cgroup
    // namespace must be made from inside the cgroup first.
    let cgroupns = has(LinuxNamespaceType::Cgroup);
    if cgroupns.is_some() && !joined {
        expect(sock, "c")?;
    }
    if let Some(cg) = cgroupns {
        match cg.path() {
            Some(p) => setns_path(p, CloneFlags::CLONE_NEWCGROUP)?,
            None => nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
                .map_err(|e| Error::sys("create cgroup namespace", e))?,
        }
    }
    if has(LinuxNamespaceType::Mount).is_none() {
        return Err(Error::unimplemented(
            "the built-in runtime needs a mount namespace: add one to the spec",
        ));
    }
    let cgroups_path = linux
        .cgroups_path()
        .clone()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    setup_rootfs(spec, rootfs, &cgroups_path)?;
    // After pivot_root, so a terminal is made in the container's devpts.
    setup_stdio(&io, sock, spec.process().as_ref())?;
    drop(io);
    if let Some(h) = spec.hostname()
        && has(LinuxNamespaceType::Uts).is_some_and(|n| n.path().is_none())
    {
        nix::unistd::sethostname(h).map_err(|e| Error::sys("set hostname", e))?;
    }
    for (k, v) in linux.sysctl().clone().unwrap_or_default() {
        let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&p, v).map_err(|e| Error::io(format!("sysctl {k}"), e))?;
    }
    let process = spec
        .process()
        .clone()
        .ok_or_else(|| Error::invalid("the spec has no process"))?;
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| Error::io("set oom_score_adj", e))?;
    }
    let prepared = prepare_process(&process)?;
    if cgroupns.is_none() && !joined {
        expect(sock, "c")?;
    }
    send(sock, "r");
    expect(sock, "s")?;
    Err(exec(&prepared))
}

/// Everything needed to exec, resolved before privileges are dropped.
struct Prepared {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("{s:?} contains a NUL byte")))
}

/// Applies the process's limits, identity and capabilities, and finds its
/// program. Used by both init and exec processes.
fn prepare_process(p: &Process) -> Result<Prepared> {
    if p.apparmor_profile()
        .as_deref()
        .is_some_and(|s| !s.is_empty())
        || p.selinux_label().as_deref().is_some_and(|s| !s.is_empty())
    {
        return Err(Error::unimplemented(
            "AppArmor/SELinux labels are not supported by the built-in runtime: use runc (BinaryName)",
        ));
    }
    for r in p.rlimits().clone().unwrap_or_default() {
        let res = rlimit_resource(r.typ());
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit reads the rlimit we pass, which outlives the call.
        if unsafe { libc::setrlimit(res, &lim) } < 0 {
            return Err(Error::io(
                format!("set rlimit {}", r.typ()),
                std::io::Error::last_os_error(),
            ));
        }
    }
    let env: Vec<String> = p.env().clone().unwrap_or_default();
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::invalid("the process has no args: nothing to run"));
    }
    let cwd = p.cwd();
    nix::unistd::chdir(cwd).map_err(|e| Error::sys(format!("chdir to {}", cwd.display()), e))?;
    let path = find_program(&args[0], &env)?;
    // Identity and capabilities last: they may take away what came before.
    let caps_spec = p.capabilities().clone();
    if let Some(c) = &caps_spec
        && let Some(bounding) = c.bounding()
    {
        // Only what this kernel knows: dropping a capability it does not
        // know fails, and it could not be held anyway.
        for cap in caps::runtime::thread_all_supported() {
            if !bounding.iter().any(|b| to_caps(b) == Some(cap)) {
                caps::drop(None, caps::CapSet::Bounding, cap).map_err(|e| {
                    Error::internal(format!("drop {cap} from the bounding set: {e}"))
                })?;
            }
        }
    }
    let user = p.user();
    let gids: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(nix::unistd::Gid::from_raw)
        .collect();
    set_keepcaps(true)?;
    nix::unistd::setgroups(&gids).map_err(|e| Error::sys("set supplementary groups", e))?;
    let gid = nix::unistd::Gid::from_raw(user.gid());
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| Error::sys(format!("set gid {gid}"), e))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| Error::sys(format!("set uid {uid}"), e))?;
    set_keepcaps(false)?;
    if let Some(c) = &caps_spec {
        let set = |s: &Option<oci_spec::runtime::Capabilities>| -> caps::CapsHashSet {
            s.as_ref()
                .map(|v| v.iter().filter_map(to_caps).collect())
                .unwrap_or_default()
        };
        let (eff, perm, inh, amb) = (
            set(c.effective()),
            set(c.permitted()),
            set(c.inheritable()),
            set(c.ambient()),
        );
        // Effective must stay within permitted at every step: shrink it first.
        caps::set(None, caps::CapSet::Effective, &eff)
            .map_err(|e| Error::internal(format!("set effective capabilities: {e}")))?;
        caps::set(None, caps::CapSet::Permitted, &perm)
            .map_err(|e| Error::internal(format!("set permitted capabilities: {e}")))?;
        caps::set(None, caps::CapSet::Inheritable, &inh)
            .map_err(|e| Error::internal(format!("set inheritable capabilities: {e}")))?;
        for a in amb {
            caps::raise(None, caps::CapSet::Ambient, a)
                .map_err(|e| Error::internal(format!("raise ambient capability {a}: {e}")))?;
        }
    }
    if p.no_new_privileges().unwrap_or(false) {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes only integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(Error::io(
                "set no_new_privs",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(Prepared {
        path: cstr(&path.display().to_string())?,
        args: args.iter().map(|a| cstr(a)).collect::<Result<_>>()?,
        env: env.iter().map(|e| cstr(e)).collect::<Result<_>>()?,
    })
}

/// Keeps (or stops keeping) the permitted capabilities across the uid change.
fn set_keepcaps(on: bool) -> Result<()> {
    // SAFETY: PR_SET_KEEPCAPS takes only integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, libc::c_ulong::from(on), 0, 0, 0) } < 0 {
        return Err(Error::io(
            "set keep-capabilities",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
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

fn exec(p: &Prepared) -> Error {
    // Nothing but stdio crosses into the container: descriptors the shim
    // (or whoever started berthd) left open without close-on-exec get it
    // now, as runc does.
    if let Err(e) = cloexec_from_3() {
        return e;
    }
    match nix::unistd::execve(&p.path, &p.args, &p.env) {
        Err(e) => Error::sys(format!("exec {:?}", p.path), e),
        Ok(never) => match never {},
    }
}

fn to_caps(c: &oci_spec::runtime::Capability) -> Option<caps::Capability> {
    // oci-spec displays AUDIT_CONTROL, caps CAP_AUDIT_CONTROL.
    let name = format!("CAP_{c}");
    caps::all().into_iter().find(|k| k.to_string() == name)
}

/// The kernel's resource for an OCI rlimit type, named one by one so a
/// type added to oci-spec fails to compile here instead of at run time.
fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType as T;
    match t {
        T::RlimitCpu => libc::RLIMIT_CPU,
        T::RlimitFsize => libc::RLIMIT_FSIZE,
        T::RlimitData => libc::RLIMIT_DATA,
        T::RlimitStack => libc::RLIMIT_STACK,
        T::RlimitCore => libc::RLIMIT_CORE,
        T::RlimitRss => libc::RLIMIT_RSS,
        T::RlimitNproc => libc::RLIMIT_NPROC,
        T::RlimitNofile => libc::RLIMIT_NOFILE,
        T::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        T::RlimitAs => libc::RLIMIT_AS,
        T::RlimitLocks => libc::RLIMIT_LOCKS,
        T::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        T::RlimitNice => libc::RLIMIT_NICE,
        T::RlimitRtprio => libc::RLIMIT_RTPRIO,
        T::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Looks a program up on the process's `PATH` (inside the container).
fn find_program(prog: &str, env: &[String]) -> Result<PathBuf> {
    if prog.contains('/') {
        return Ok(PathBuf::from(prog));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':') {
        let p = Path::new(dir).join(prog);
        if let Ok(m) = std::fs::metadata(&p)
            && m.is_file()
        {
            return Ok(p);
        }
    }
    Err(Error::not_found(format!(
        "exec: {prog:?}: executable file not found in $PATH"
    )))
}

/// Joins `path` to `root`, resolving symlinks as if `root` were `/`, so the
/// result never leaves `root`.
pub fn secure_join(root: &Path, path: &Path) -> PathBuf {
    let mut parts: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            parts.pop();
            continue;
        }
        let mut cand = root.to_path_buf();
        cand.extend(parts.iter());
        cand.push(&c);
        match std::fs::read_link(&cand) {
            Ok(target) if links < 255 => {
                links += 1;
                if target.is_absolute() {
                    parts.clear();
                }
                for tc in target.components().rev() {
                    match tc {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => parts.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(parts);
    out
}

fn mkdir_p(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p)
        .map_err(|e| Error::io(format!("create mount point {}", p.display()), e))
}

fn mount_one(rootfs: &Path, m: &Mount, cgroups_path: &str) -> Result<()> {
    let dest = secure_join(rootfs, m.destination());
    let opts = m.options().clone().unwrap_or_default();
    let parsed = berth_mount::parse_options(&opts);
    let flags = parsed.flags;
    let data = if parsed.loop_device {
        // runc has no `loop` (containerd's rootfs mounts do): it reaches
        // the filesystem as data, in place, as it always did here.
        opts.iter()
            .filter(|o| *o == "loop" || !berth_mount::parse_options(&[o]).data.is_empty())
            .cloned()
            .collect()
    } else {
        parsed.data
    };
    let typ = m.typ().clone().unwrap_or_else(|| "none".into());
    let src = m
        .source()
        .clone()
        .map(|s| s.display().to_string())
        .unwrap_or_else(|| typ.clone());
    let what = |e| {
        Error::sys(
            format!("mount {typ} {src} on {}", m.destination().display()),
            e,
        )
    };
    if typ == "bind" || flags.contains(MsFlags::MS_BIND) {
        let is_dir = std::fs::metadata(&src)
            .map(|md| md.is_dir())
            .unwrap_or(true);
        if is_dir {
            mkdir_p(&dest)?;
        } else {
            if let Some(parent) = dest.parent() {
                mkdir_p(parent)?;
            }
            if !dest.exists() {
                std::fs::File::create(&dest)
                    .map_err(|e| Error::io(format!("create {}", dest.display()), e))?;
            }
        }
        mount(
            Some(src.as_str()),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND | (flags & MsFlags::MS_REC),
            None::<&str>,
        )
        .map_err(what)?;
        let rest = flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !rest.is_empty() {
            mount(
                None::<&str>,
                &dest,
                None::<&str>,
                rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None::<&str>,
            )
            .map_err(what)?;
        }
    } else if typ == "cgroup" {
        mount_cgroup(&dest, flags, cgroups_path)?;
    } else {
        mkdir_p(&dest)?;
        let d = data.join(",");
        mount(
            Some(src.as_str()),
            &dest,
            Some(typ.as_str()),
            flags,
            (!d.is_empty()).then_some(d.as_str()),
        )
        .map_err(what)?;
    }
    // One call per propagation change, in order, as runc does: mount(2)
    // takes a single propagation type per call.
    for p in parsed.propagation {
        mount(None::<&str>, &dest, None::<&str>, p, None::<&str>).map_err(what)?;
    }
    Ok(())
}

/// A cgroup v1 mount: a tmpfs with the container's own cgroup of each
/// controller bound in (v2: the container's unified cgroup).
fn mount_cgroup(dest: &Path, flags: MsFlags, cgroups_path: &str) -> Result<()> {
    mkdir_p(dest)?;
    let rel = cgroups_path.trim_start_matches('/');
    if cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
        let src = Path::new("/sys/fs/cgroup").join(rel);
        mount(
            Some(&src),
            dest,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::sys("bind cgroup", e))?;
    } else {
        mount(
            Some("tmpfs"),
            dest,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=755"),
        )
        .map_err(|e| Error::sys("mount cgroup tmpfs", e))?;
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let name = e.file_name();
                let host = e.path().join(rel);
                if e.path().is_symlink() || !host.is_dir() {
                    continue;
                }
                let d = dest.join(&name);
                mkdir_p(&d)?;
                mount(
                    Some(&host),
                    &d,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|err| {
                    Error::sys(format!("bind cgroup {}", name.to_string_lossy()), err)
                })?;
                remount_locked_down(&d).map_err(|err| {
                    Error::sys(format!("remount cgroup {}", name.to_string_lossy()), err)
                })?;
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        remount_locked_down(dest)
            .map_err(|e| Error::sys(format!("remount {} read-only", dest.display()), e))?;
    }
    Ok(())
}

/// Makes one mount read-only, nosuid, nodev, noexec. MS_BIND: this mount
/// only, never the superblock (v2's is the host's cgroup2).
fn remount_locked_down(p: &Path) -> nix::Result<()> {
    mount(
        None::<&str>,
        p,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
}

const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// A device's major or minor number; a negative one is a broken spec.
fn device_number(n: i64, what: &str, path: &Path) -> Result<u64> {
    u64::try_from(n)
        .map_err(|_| Error::invalid(format!("device {}: {what} number {n}", path.display())))
}

fn setup_dev(rootfs: &Path, spec: &Spec) -> Result<()> {
    let dev = rootfs.join("dev");
    mkdir_p(&dev)?;
    let make = |p: &Path, kind: SFlag, mode: u32, maj: u64, min: u64| -> Result<()> {
        // Usually absent; if it cannot be removed, mknod says why.
        let _ = std::fs::remove_file(p);
        nix::sys::stat::mknod(
            p,
            kind,
            Mode::from_bits_truncate(mode),
            nix::sys::stat::makedev(maj, min),
        )
        .map_err(|e| Error::sys(format!("create device {}", p.display()), e))
    };
    for (name, maj, min) in DEFAULT_DEVICES {
        make(&dev.join(name), SFlag::S_IFCHR, 0o666, *maj, *min)?;
        // mknod honours the umask; set the mode it should have.
        let p = dev.join(name);
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .map_err(|e| Error::io(format!("chmod {}", p.display()), e))?;
    }
    if let Some(devs) = spec.linux().as_ref().and_then(|l| l.devices().clone()) {
        for d in devs {
            let p = secure_join(rootfs, d.path());
            if let Some(parent) = p.parent() {
                mkdir_p(parent)?;
            }
            let kind = match d.typ().as_str() {
                "b" => SFlag::S_IFBLK,
                "p" => SFlag::S_IFIFO,
                _ => SFlag::S_IFCHR,
            };
            make(
                &p,
                kind,
                d.file_mode().unwrap_or(0o666),
                device_number(d.major(), "major", d.path())?,
                device_number(d.minor(), "minor", d.path())?,
            )?;
            std::os::unix::fs::chown(&p, d.uid(), d.gid())
                .map_err(|e| Error::io(format!("chown {}", p.display()), e))?;
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let p = dev.join(link);
        if p.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(target, &p)
                .map_err(|e| Error::io(format!("symlink {}", p.display()), e))?;
        }
    }
    Ok(())
}

fn setup_rootfs(spec: &Spec, rootfs: &Path, cgroups_path: &str) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let prop = match linux.rootfs_propagation().as_deref() {
        Some("shared") | Some("rshared") => MsFlags::MS_SHARED,
        Some("private") | Some("rprivate") => MsFlags::MS_PRIVATE,
        _ => MsFlags::MS_SLAVE,
    };
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        prop | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("set mount propagation", e))?;
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys(format!("bind rootfs {}", rootfs.display()), e))?;
    let mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount_one(rootfs, m, cgroups_path)?;
    }
    // Device nodes unless the host's /dev is bound in.
    let dev_bound = mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("bind"));
    if !dev_bound {
        setup_dev(rootfs, spec)?;
    }
    nix::unistd::chdir(rootfs).map_err(|e| Error::sys("chdir rootfs", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| Error::sys("pivot_root", e))?;
    // The old root is now stacked on the new one: detach it.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make old root a slave", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::sys("detach old root", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir /", e))?;
    for p in linux.masked_paths().clone().unwrap_or_default() {
        let path = Path::new(&p);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                mount(
                    Some("tmpfs"),
                    path,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(|e| Error::sys(format!("mask {p}"), e))?;
            }
            Ok(_) => {
                mount(
                    Some("/dev/null"),
                    path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| Error::sys(format!("mask {p}"), e))?;
            }
            Err(_) => {}
        }
    }
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        let path = Path::new(&p);
        if !path.exists() {
            continue;
        }
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::sys(format!("make {p} read-only"), e))?;
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::sys(format!("make {p} read-only"), e))?;
    }
    if spec
        .root()
        .as_ref()
        .is_some_and(|r| r.readonly().unwrap_or(false))
    {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| Error::sys("make rootfs read-only", e))?;
    }
    Ok(())
}

/// The first child of an exec: joins the container's namespaces and cgroup,
/// forks the process (so it is in the pid namespace), reports its pid.
pub fn exec_intermediate(
    init_pid: u32,
    cgroups_path: &str,
    process: &Process,
    io: ChildIo,
    sock: OwnedFd,
) -> i32 {
    let r = (|| -> Result<()> {
        // Open every namespace first: after joining the mount namespace,
        // /proc is the container's.
        let mut fds = Vec::new();
        for (name, flag) in [
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("net", CloneFlags::CLONE_NEWNET),
            ("pid", CloneFlags::CLONE_NEWPID),
            ("cgroup", CloneFlags::CLONE_NEWCGROUP),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ] {
            let theirs = format!("/proc/{init_pid}/ns/{name}");
            let same = std::fs::read_link(&theirs).ok()
                == std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
            if same {
                continue;
            }
            let f =
                std::fs::File::open(&theirs).map_err(|e| Error::io(format!("open {theirs}"), e))?;
            fds.push((f, flag, name));
        }
        if !cgroups_path.is_empty() {
            // As the init does (see Cgroup::self_join_files): this process
            // is single-threaded, so it can move itself without the
            // kernel's global lock on cgroup v1.
            let cg = crate::cgroup::Cgroup::load(cgroups_path);
            match cg.self_join_files()? {
                Some(files) => crate::cgroup::join_self(&files)?,
                None => cg.add(std::process::id())?,
            }
        }
        for (f, flag, name) in fds {
            nix::sched::setns(f, flag)
                .map_err(|e| Error::sys(format!("join the container's {name} namespace"), e))?;
        }
        if fork_reporting_pid(&sock, "fork exec process")? {
            let e = (|| -> Result<std::convert::Infallible> {
                setup_stdio(&io, &sock, Some(process))?;
                let p = prepare_process(process)?;
                Err(exec(&p))
            })();
            let Err(e) = e;
            send(&sock, &format!("e{e}"));
            // SAFETY: leave the forked child.
            unsafe { libc::_exit(1) }
        }
        Ok(())
    })();
    match r {
        Ok(()) => 0,
        Err(e) => {
            send(&sock, &format!("e{e}"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_stays_inside() {
        let d = tempfile_dir();
        std::os::unix::fs::symlink("/etc", d.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", d.join("up")).unwrap();
        assert_eq!(
            secure_join(&d, Path::new("/abs/passwd")),
            d.join("etc/passwd")
        );
        assert_eq!(secure_join(&d, Path::new("up/x")), d.join("x"));
        assert_eq!(secure_join(&d, Path::new("../../a/./b")), d.join("a/b"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-sj-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn programs_and_limits() {
        assert_eq!(
            find_program("/bin/x", &[]).unwrap(),
            PathBuf::from("/bin/x")
        );
        assert!(find_program("definitely-not-here", &["PATH=/nonexistent".into()]).is_err());
        assert_eq!(
            rlimit_resource(PosixRlimitType::RlimitNofile),
            libc::RLIMIT_NOFILE
        );
    }
}
