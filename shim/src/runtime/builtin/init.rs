//! What runs in the forked children of the built-in runtime, in order:
//! the first child seals itself ([`seal`]: non-dumpable, only its own
//! descriptors left), sets the OOM score (and rlimits, for a user
//! namespace) as the shim could, enters or creates namespaces (a new user
//! namespace alone, mapped by the shim: see [`userns`]) and forks the
//! container's init (pid 1 of a new pid namespace); the init joins its
//! cgroup, becomes root in its user namespace if it has one, builds
//! its root filesystem (stopping before pivot_root for the create hooks),
//! connects stdio, applies hostname and sysctls, masks and read-only paths,
//! waits for start, runs startContainer hooks and executes. An exec's first child joins the running
//! container instead. Each step goes through [`Sys`] (see its modules);
//! this file is the sequence and the sync protocol ([`sync`]).
//!
//! The shim is single-threaded, so these children may allocate and use the
//! standard library freely.

use super::exec::{self, Prepared};
use super::hooks::{self, Kind};
use super::mounts::CgroupView;
use super::seccomp::Program;
use super::sync::Forked;
use super::sys::{Host, Sys};
use super::userns::{self, UserNs};
use super::{creds, namespaces, rootfs, sync, tty};
use crate::cgroup::Hierarchy;
use crate::stdio::ChildIo;
use crate::{Error, Result};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Leaves a forked child with `code`, without running the parent's
/// destructors a second time.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit only ends this process.
    unsafe { libc::_exit(code) }
}

/// What a child of the shim does before it joins or creates any of the
/// container's namespaces, so that nothing in the container can reach it
/// or what it holds until it executes the container's program (which
/// makes it dumpable again, as the program's own): non-dumpable first (its
/// /proc files then pass the ptrace access check only with CAP_SYS_PTRACE
/// in the host's user namespace; its children inherit that), then every
/// descriptor of the shim closed but `keep` (the sync socket, stdio, cgroup
/// files): no ttrpc connection, listening socket, shim.log or other
/// process's FIFO crosses over. runc's nsexec does the same.
pub fn seal(sys: &dyn Sys, keep: &[RawFd]) -> Result<()> {
    sys.set_dumpable(false)
        .map_err(|e| Error::io("make the container process non-dumpable", e))?;
    sys.close_fds_except(keep)
        .map_err(|e| Error::io("close the shim's descriptors", e))
}

/// Seals the first child of a create, sets what it must set as the shim
/// (see [`as_the_shim`]), then enters its namespaces; `map_user` has the
/// shim map a new user namespace.
fn enter_new(
    sys: &dyn Sys,
    keep: &[RawFd],
    plan: &namespaces::Plan,
    spec: &Spec,
    map_user: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    seal(sys, keep)?;
    as_the_shim(sys, spec, namespaces::enters_user(plan))?;
    namespaces::enter(sys, plan, map_user)
}

/// What runc sets from outside the container's user namespace, inherited
/// from here on: the OOM score (lowering it needs CAP_SYS_RESOURCE in the
/// host's user namespace; runc writes it before any namespace, for every
/// container) and, for a process that will be in a user namespace, its
/// rlimits (raising a hard limit needs the same; runc's parent sets them
/// with prlimit; the init sets them again, unchanged, later).
pub fn as_the_shim(sys: &dyn Sys, spec: &Spec, userns: bool) -> Result<()> {
    let Some(p) = spec.process() else {
        return Ok(());
    };
    set_oom_score_adj(sys, p.oom_score_adj())?;
    if userns {
        creds::apply_rlimits(sys, p)?;
    }
    Ok(())
}

/// Writes the process's own OOM score, if the spec sets one.
fn set_oom_score_adj(sys: &dyn Sys, adj: Option<i32>) -> Result<()> {
    match adj {
        Some(adj) => sys
            .write(Path::new("/proc/self/oom_score_adj"), &adj.to_string())
            .map_err(|e| Error::io("set oom_score_adj", e)),
        None => Ok(()),
    }
}

/// The running container an exec joins: its init, cgroup, user namespace
/// and the OOM score its spec gives every process (runc's nsexec writes it
/// for execs too).
pub struct Running {
    pub init_pid: u32,
    pub cgroups_path: String,
    pub user: Option<UserNs>,
    pub oom_score_adj: Option<i32>,
}

/// The descriptors of a child's stdio.
fn io_fds(io: &ChildIo) -> Vec<RawFd> {
    [&io.stdin, &io.stdout, &io.stderr]
        .into_iter()
        .flatten()
        .map(|f| f.as_raw_fd())
        .collect()
}

/// Who the container is, for its hooks' state, and where its root is.
pub struct Target<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
}

/// The first child: enters/creates namespaces, forks the container's init
/// (so it is pid 1 of a new pid namespace), reports its pid and exits.
/// With `joins` (cgroup v1) the init joins its cgroup itself; otherwise
/// it waits for the shim to move it there ("c").
#[allow(clippy::too_many_arguments)]
pub fn intermediate(
    spec: &Spec,
    target: &Target,
    io: ChildIo,
    joins: Option<Vec<OwnedFd>>,
    shim_moves: bool,
    into: Option<OwnedFd>,
    seccomp: Option<&Program>,
    user: Option<&UserNs>,
    sock: OwnedFd,
) -> i32 {
    let r = (|| -> Result<()> {
        let plan = namespaces::plan(&namespaces::of(spec))?;
        let mut keep = vec![sock.as_raw_fd()];
        keep.extend(io_fds(&io));
        keep.extend(joins.iter().flatten().map(|f| f.as_raw_fd()));
        keep.extend(into.iter().map(|f| f.as_raw_fd()));
        // The shim writes the new user namespace's maps meanwhile.
        let mut map_user = || {
            sync::send(&sock, "u")?;
            sync::expect(&sock, "u")
        };
        enter_new(&Host, &keep, &plan, spec, &mut map_user)?;
        let forked = sync::fork_reporting_pid(&sock, "fork the container init", into.as_ref())?;
        if let Forked::Child { in_cgroup } = forked {
            drop(into);
            // Created inside its cgroup2 group, nobody needs to move it.
            let shim_moves = shim_moves && !in_cgroup;
            let Err(e) = init_main(
                &Host, spec, target, io, joins, shim_moves, seccomp, user, &sock,
            );
            sync::send_error(&sock, &e);
            exit_child(1);
        }
        Ok(())
    })();
    match r {
        Ok(()) => 0,
        Err(e) => {
            sync::send_error(&sock, &e);
            1
        }
    }
}

/// Hostname (in a new UTS namespace only), loopback up (in a new network
/// namespace only) and sysctls: what the init sets in its namespaces
/// before the program runs (the OOM score was set before them: see
/// [`as_the_shim`]).
pub fn configure(sys: &dyn Sys, spec: &Spec) -> Result<()> {
    let nss = namespaces::of(spec);
    let new_uts = nss
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Uts && n.path().is_none());
    if let Some(h) = spec.hostname()
        && new_uts
    {
        sys.sethostname(h)
            .map_err(|e| Error::io(format!("set hostname {h:?}"), e))?;
    }
    namespaces::loopback_up(sys, &nss)?;
    let sysctls = spec
        .linux()
        .as_ref()
        .and_then(|l| l.sysctl().clone())
        .unwrap_or_default();
    // Sorted: the spec's map has no order, the result should.
    let mut sysctls: Vec<_> = sysctls.into_iter().collect();
    sysctls.sort();
    for (k, v) in sysctls {
        let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        sys.write(&p, &v)
            .map_err(|e| Error::io(format!("sysctl {k}"), e))?;
    }
    Ok(())
}

/// The container's init: builds its world, waits for start, executes.
// What the init carries across the fork, one argument each.
#[allow(clippy::too_many_arguments)]
fn init_main(
    sys: &dyn Sys,
    spec: &Spec,
    target: &Target,
    io: ChildIo,
    joins: Option<Vec<OwnedFd>>,
    shim_moves: bool,
    seccomp: Option<&Program>,
    user: Option<&UserNs>,
    sock: &OwnedFd,
) -> Result<std::convert::Infallible> {
    let nss = namespaces::of(spec);
    let has = |t: LinuxNamespaceType| nss.iter().find(|n| n.typ() == t);
    // In the cgroup before anything of the container's own runs.
    if let Some(files) = joins {
        crate::cgroup::join_self(&files)?;
    }
    if let Some(u) = user {
        userns::become_root(sys, u)?;
    }
    // When the shim moves us (the cgroup2 part, see Cgroup::shim_moves),
    // that costs it an RCU grace period; build the root filesystem
    // meanwhile unless a cgroup namespace must be made from inside the
    // cgroup first (one given by path was joined with the others).
    let cgroupns = has(LinuxNamespaceType::Cgroup).filter(|n| n.path().is_none());
    // The shim's hooks before pivot_root need the sync socket while we are
    // still building; take its cgroup answer first so the two cannot cross
    // (runc runs those hooks once the process is in its cgroup, too).
    let shim_hooks = hooks::shim_runs_before_pivot(spec);
    let moved_early = shim_moves && (cgroupns.is_some() || shim_hooks);
    if moved_early {
        sync::expect(sock, "c")?;
    }
    if cgroupns.is_some() {
        sys.unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| Error::io("create cgroup namespace", e))?;
    }
    if has(LinuxNamespaceType::Mount).is_none() {
        return Err(Error::unimplemented(
            "the built-in runtime needs a mount namespace: add one to the spec",
        ));
    }
    let cgroups_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let hierarchy = Hierarchy::detect();
    let view = CgroupView {
        hierarchy: &hierarchy,
        path: &cgroups_path,
    };
    // Our own pid, as runc gives the hooks the init runs itself.
    let state = |status: &str| {
        hooks::state_json(spec, target.id, target.bundle, status, std::process::id())
    };
    // As runc: prestart/createRuntime (the shim) then createContainer (us,
    // in the container's namespaces) once the mounts are made, before
    // pivot_root, so the hooks still see the host's paths.
    let mut before_pivot = || -> Result<()> {
        if shim_hooks {
            sync::send(sock, "h")?;
            sync::expect(sock, "h")?;
        }
        let create = hooks::of(spec, Kind::CreateContainer);
        if create.is_empty() {
            return Ok(());
        }
        hooks::run_all(Kind::CreateContainer, &create, &state("creating"))
    };
    rootfs::setup(sys, spec, target.rootfs, &view, &mut before_pivot)?;
    // After pivot_root, so a terminal is made in the container's devpts.
    tty::setup_stdio(&io, sock, spec.process().as_ref(), Some(sys))?;
    drop(io);
    configure(sys, spec)?;
    rootfs::finish(sys, spec)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::invalid("the spec has no process"))?;
    // Before the filter: handing over a listener descriptor expects the
    // shim's next message to be its answer.
    if shim_moves && !moved_early {
        sync::expect(sock, "c")?;
    }
    let prepared: Prepared = exec::prepare(sys, process, seccomp.map(|p| (p, sock)))?;
    sync::send(sock, "r")?;
    sync::expect(sock, "s")?;
    // Last thing before the program, in the container, as runc does.
    let start = hooks::of(spec, Kind::StartContainer);
    if !start.is_empty() {
        hooks::run_all(Kind::StartContainer, &start, &state("created"))?;
    }
    Err(exec::exec(&prepared))
}

/// Seals the first child of an exec, puts it in the container's cgroup
/// (while the host's cgroupfs is still its view), sets the process's
/// rlimits if it is to join a user namespace (see [`as_the_shim`]), then
/// joins `nss` in order: the user namespace first, the mount namespace
/// last, so every path is the host's /proc.
fn join_running(
    sys: &dyn Sys,
    keep: &[RawFd],
    nss: &[(PathBuf, CloneFlags)],
    process: &oci_spec::runtime::Process,
    join_cgroup: impl FnOnce() -> Result<()>,
) -> Result<()> {
    seal(sys, keep)?;
    join_cgroup()?;
    if nss.iter().any(|(_, f)| *f == CloneFlags::CLONE_NEWUSER) {
        creds::apply_rlimits(sys, process)?;
    }
    for (path, flag) in nss {
        namespaces::join(sys, path, *flag)?;
    }
    Ok(())
}

/// The first child of an exec: joins the container's namespaces and cgroup,
/// forks the process (so it is in the pid namespace), reports its pid.
pub fn exec_intermediate(
    c: &Running,
    process: &oci_spec::runtime::Process,
    seccomp: Option<&Program>,
    io: ChildIo,
    sock: OwnedFd,
) -> i32 {
    let (init_pid, cgroups_path, user) = (c.init_pid, c.cgroups_path.as_str(), c.user.as_ref());
    let r = (|| -> Result<()> {
        set_oom_score_adj(&Host, c.oom_score_adj)?;
        let mut keep = vec![sock.as_raw_fd()];
        keep.extend(io_fds(&io));
        // Only the namespaces that differ from the shim's.
        let mut nss = Vec::new();
        for (name, flag) in namespaces::EXEC_ORDER {
            let theirs = format!("/proc/{init_pid}/ns/{name}");
            let same = std::fs::read_link(&theirs).ok()
                == std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
            if !same {
                nss.push((PathBuf::from(theirs), flag));
            }
        }
        let join_cgroup = || -> Result<()> {
            if cgroups_path.is_empty() {
                return Ok(());
            }
            // As the init does (see Cgroup::self_join_files): this process
            // is single-threaded, so it can move itself without the
            // kernel's global lock on cgroup v1.
            let cg = Hierarchy::detect().open(cgroups_path);
            match cg.self_join_files()? {
                Some(files) => {
                    crate::cgroup::join_self(&files)?;
                    // The unified group of a hybrid host, by pid.
                    cg.shim_move(std::process::id())
                }
                None => cg.add(std::process::id()),
            }
        };
        join_running(&Host, &keep, &nss, process, join_cgroup)?;
        let joined_user = nss.iter().any(|(_, f)| *f == CloneFlags::CLONE_NEWUSER);
        if let Forked::Child { .. } = sync::fork_reporting_pid(&sock, "fork exec process", None)? {
            let r = (|| -> Result<std::convert::Infallible> {
                // As the init: root inside before its terminal is made.
                if let Some(u) = user.filter(|_| joined_user) {
                    userns::become_root(&Host, u)?;
                }
                tty::setup_stdio(&io, &sock, Some(process), None)?;
                let p = exec::prepare(&Host, process, seccomp.map(|p| (p, &sock)))?;
                Err(exec::exec(&p))
            })();
            let Err(e) = r;
            sync::send_error(&sock, &e);
            exit_child(1);
        }
        Ok(())
    })();
    match r {
        Ok(()) => 0,
        Err(e) => {
            sync::send_error(&sock, &e);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sys::Fake;
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, ProcessBuilder, SpecBuilder};

    fn spec(uts_path: Option<&str>) -> Spec {
        let mut uts = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Uts);
        if let Some(p) = uts_path {
            uts = uts.path(p);
        }
        SpecBuilder::default()
            .hostname("box")
            .process(
                ProcessBuilder::default()
                    .oom_score_adj(-500)
                    .build()
                    .unwrap(),
            )
            .linux(
                LinuxBuilder::default()
                    .namespaces(vec![uts.build().unwrap()])
                    .sysctl(
                        [
                            ("net.ipv4.ip_forward".to_string(), "1".to_string()),
                            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
                        ]
                        .into_iter()
                        .collect::<std::collections::HashMap<_, _>>(),
                    )
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn hostname_only_in_a_new_uts_namespace_then_sysctls() {
        let sys = Fake::new();
        configure(&sys, &spec(None)).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "sethostname box",
                "write /proc/sys/kernel/shm_rmid_forced 1",
                "write /proc/sys/net/ipv4/ip_forward 1",
            ]
        );
        let sys = Fake::new();
        configure(&sys, &spec(Some("/proc/1/ns/uts"))).unwrap();
        assert!(sys.calls_of("sethostname").is_empty());
    }

    #[test]
    fn a_create_is_sealed_before_it_enters_any_namespace() {
        let nss = [
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path("/var/run/netns/x")
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Pid)
                .build()
                .unwrap(),
        ];
        let plan = namespaces::plan(&nss).unwrap();
        let sys = Fake::new();
        let s = spec(None);
        let mut no_map = || -> Result<()> { panic!("no user namespace to map") };
        enter_new(&sys, &[9, 4], &plan, &s, &mut no_map).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "dumpable false",
                "close_fds_except [4, 9]",
                // As runc, before any namespace: inherited from here on.
                "write /proc/self/oom_score_adj -500",
                "setns /var/run/netns/x CLONE_NEWNET",
                "unshare CLONE_NEWPID",
            ]
        );
        // A seal that fails enters nothing.
        for step in ["dumpable", "close_fds_except"] {
            let sys = Fake::new();
            sys.fail(step, libc::EPERM);
            assert!(enter_new(&sys, &[4], &plan, &s, &mut no_map).is_err());
            assert!(sys.calls_of("setns").is_empty(), "{step}");
            assert!(sys.calls_of("unshare").is_empty(), "{step}");
        }
    }

    #[test]
    fn an_exec_is_sealed_before_its_cgroup_and_namespaces() {
        let nss = vec![
            (PathBuf::from("/proc/7/ns/pid"), CloneFlags::CLONE_NEWPID),
            (PathBuf::from("/proc/7/ns/mnt"), CloneFlags::CLONE_NEWNS),
        ];
        let sys = Fake::new();
        let cgroup = || {
            sys.calls.borrow_mut().push("join cgroup".into());
            Ok(())
        };
        let process = ProcessBuilder::default().build().unwrap();
        join_running(&sys, &[5, 3, 6], &nss, &process, cgroup).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "dumpable false",
                "close_fds_except [3, 5, 6]",
                "join cgroup",
                "setns /proc/7/ns/pid CLONE_NEWPID",
                "setns /proc/7/ns/mnt CLONE_NEWNS",
            ]
        );
        let sys = Fake::new();
        sys.fail("close_fds_except", libc::EMFILE);
        let e = join_running(&sys, &[3], &nss, &process, || {
            panic!("joined a cgroup unsealed")
        })
        .unwrap_err();
        assert_eq!(e.message(), "close the shim's descriptors");
        assert!(sys.calls_of("setns").is_empty());
    }

    #[test]
    fn an_exec_into_a_user_namespace_sets_its_rlimits_before_joining() {
        let nss = vec![
            (PathBuf::from("/proc/7/ns/user"), CloneFlags::CLONE_NEWUSER),
            (PathBuf::from("/proc/7/ns/mnt"), CloneFlags::CLONE_NEWNS),
        ];
        let process = ProcessBuilder::default().build().unwrap();
        let sys = Fake::new();
        join_running(&sys, &[3], &nss, &process, || Ok(())).unwrap();
        let calls = sys.calls.borrow().clone();
        assert_eq!(
            calls[2..],
            [
                format!("setrlimit {} 1024 1024", libc::RLIMIT_NOFILE),
                "setns /proc/7/ns/user CLONE_NEWUSER".to_string(),
                "setns /proc/7/ns/mnt CLONE_NEWNS".to_string(),
            ]
        );
    }

    fn userns_spec() -> Spec {
        let ns = |t| LinuxNamespaceBuilder::default().typ(t).build().unwrap();
        let mut s = spec(None);
        let mut l = s.linux().clone().unwrap();
        l.set_namespaces(Some(vec![
            ns(LinuxNamespaceType::User),
            ns(LinuxNamespaceType::Pid),
            ns(LinuxNamespaceType::Mount),
        ]));
        s.set_linux(Some(l));
        s
    }

    #[test]
    fn a_create_with_a_user_namespace_sets_limits_then_has_it_mapped_first() {
        let s = userns_spec();
        let plan = namespaces::plan(&namespaces::of(&s)).unwrap();
        let sys = Fake::new();
        let mut map = || -> Result<()> {
            sys.calls.borrow_mut().push("shim maps".into());
            Ok(())
        };
        enter_new(&sys, &[3], &plan, &s, &mut map).unwrap();
        assert_eq!(
            sys.calls.borrow()[2..],
            [
                "write /proc/self/oom_score_adj -500".to_string(),
                // Raising a hard limit needs the host's CAP_SYS_RESOURCE.
                format!("setrlimit {} 1024 1024", libc::RLIMIT_NOFILE),
                "unshare CLONE_NEWUSER".to_string(),
                "shim maps".to_string(),
                "unshare CLONE_NEWNS|CLONE_NEWPID".to_string(),
            ]
        );
        // Without a user namespace the init sets them, as before.
        let sys = Fake::new();
        as_the_shim(&sys, &s, false).unwrap();
        assert!(sys.calls_of("setrlimit").is_empty());
        let sys = Fake::new();
        sys.fail("write /proc/self/oom_score_adj", libc::EACCES);
        let e = as_the_shim(&sys, &s, true).unwrap_err();
        assert_eq!(e.message(), "set oom_score_adj");
    }

    #[test]
    fn a_failed_sysctl_fails_the_create() {
        let sys = Fake::new();
        sys.fail("write /proc/sys/net", libc::EROFS);
        let e = configure(&sys, &spec(None)).unwrap_err();
        assert_eq!(e.message(), "sysctl net.ipv4.ip_forward");
        assert!(sys.calls_of("write /proc/self").is_empty());
    }
}
