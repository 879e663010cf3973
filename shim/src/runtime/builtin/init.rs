//! What runs in the forked children of the built-in runtime, in order:
//! the first child seals itself ([`seal`]: non-dumpable, only its own
//! descriptors left), enters or creates namespaces and forks the container's
//! init (pid 1 of a new pid namespace); the init joins its cgroup, builds
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
use super::sync::Forked;
use super::sys::{Host, Sys};
use super::{namespaces, rootfs, sync, tty};
use crate::cgroup::Hierarchy;
use crate::stdio::ChildIo;
use crate::{Error, Result};
use libseccomp::ScmpFilterContext;
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

/// Seals the first child of a create, then enters its namespaces.
fn enter_new(sys: &dyn Sys, keep: &[RawFd], plan: &namespaces::Plan) -> Result<()> {
    seal(sys, keep)?;
    namespaces::enter(sys, plan)
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
    seccomp: Option<&ScmpFilterContext>,
    sock: OwnedFd,
) -> i32 {
    let r = (|| -> Result<()> {
        let plan = namespaces::plan(&namespaces::of(spec))?;
        let mut keep = vec![sock.as_raw_fd()];
        keep.extend(io_fds(&io));
        keep.extend(joins.iter().flatten().map(|f| f.as_raw_fd()));
        keep.extend(into.iter().map(|f| f.as_raw_fd()));
        enter_new(&Host, &keep, &plan)?;
        let forked = sync::fork_reporting_pid(&sock, "fork the container init", into.as_ref())?;
        if let Forked::Child { in_cgroup } = forked {
            drop(into);
            // Created inside its cgroup2 group, nobody needs to move it.
            let shim_moves = shim_moves && !in_cgroup;
            let Err(e) = init_main(&Host, spec, target, io, joins, shim_moves, seccomp, &sock);
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
/// namespace only), sysctls and the OOM score:
/// what the init sets in its namespaces before the program runs.
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
    if let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        sys.write(Path::new("/proc/self/oom_score_adj"), &adj.to_string())
            .map_err(|e| Error::io("set oom_score_adj", e))?;
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
    seccomp: Option<&ScmpFilterContext>,
    sock: &OwnedFd,
) -> Result<std::convert::Infallible> {
    let nss = namespaces::of(spec);
    let has = |t: LinuxNamespaceType| nss.iter().find(|n| n.typ() == t);
    // In the cgroup before anything of the container's own runs.
    if let Some(files) = joins {
        crate::cgroup::join_self(&files)?;
    }
    // When the shim moves us (the cgroup2 part, see Cgroup::shim_moves),
    // that costs it an RCU grace period; build the root filesystem
    // meanwhile unless a cgroup namespace must be made from inside the
    // cgroup first.
    let cgroupns = has(LinuxNamespaceType::Cgroup);
    // The shim's hooks before pivot_root need the sync socket while we are
    // still building; take its cgroup answer first so the two cannot cross
    // (runc runs those hooks once the process is in its cgroup, too).
    let shim_hooks = hooks::shim_runs_before_pivot(spec);
    let moved_early = shim_moves && (cgroupns.is_some() || shim_hooks);
    if moved_early {
        sync::expect(sock, "c")?;
    }
    if let Some(cg) = cgroupns {
        match cg.path() {
            Some(p) => namespaces::join(sys, p, CloneFlags::CLONE_NEWCGROUP)?,
            None => sys
                .unshare(CloneFlags::CLONE_NEWCGROUP)
                .map_err(|e| Error::io("create cgroup namespace", e))?,
        }
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
    let prepared: Prepared = exec::prepare(sys, process, seccomp)?;
    if shim_moves && !moved_early {
        sync::expect(sock, "c")?;
    }
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
/// (while the host's cgroupfs is still its view), then joins `nss` in
/// order: the mount namespace last, so every path is the host's /proc.
fn join_running(
    sys: &dyn Sys,
    keep: &[RawFd],
    nss: &[(PathBuf, CloneFlags)],
    join_cgroup: impl FnOnce() -> Result<()>,
) -> Result<()> {
    seal(sys, keep)?;
    join_cgroup()?;
    for (path, flag) in nss {
        namespaces::join(sys, path, *flag)?;
    }
    Ok(())
}

/// The first child of an exec: joins the container's namespaces and cgroup,
/// forks the process (so it is in the pid namespace), reports its pid.
pub fn exec_intermediate(
    init_pid: u32,
    cgroups_path: &str,
    process: &oci_spec::runtime::Process,
    seccomp: Option<&ScmpFilterContext>,
    io: ChildIo,
    sock: OwnedFd,
) -> i32 {
    let r = (|| -> Result<()> {
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
        join_running(&Host, &keep, &nss, join_cgroup)?;
        if let Forked::Child { .. } = sync::fork_reporting_pid(&sock, "fork exec process", None)? {
            let r = (|| -> Result<std::convert::Infallible> {
                tty::setup_stdio(&io, &sock, Some(process), None)?;
                let p = exec::prepare(&Host, process, seccomp)?;
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
    fn hostname_only_in_a_new_uts_namespace_then_sysctls_and_oom_score() {
        let sys = Fake::new();
        configure(&sys, &spec(None)).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "sethostname box",
                "write /proc/sys/kernel/shm_rmid_forced 1",
                "write /proc/sys/net/ipv4/ip_forward 1",
                "write /proc/self/oom_score_adj -500",
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
        enter_new(&sys, &[9, 4], &plan).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "dumpable false",
                "close_fds_except [4, 9]",
                "setns /var/run/netns/x CLONE_NEWNET",
                "unshare CLONE_NEWPID",
            ]
        );
        // A seal that fails enters nothing.
        for step in ["dumpable", "close_fds_except"] {
            let sys = Fake::new();
            sys.fail(step, libc::EPERM);
            assert!(enter_new(&sys, &[4], &plan).is_err());
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
        join_running(&sys, &[5, 3, 6], &nss, cgroup).unwrap();
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
        let e = join_running(&sys, &[3], &nss, || panic!("joined a cgroup unsealed")).unwrap_err();
        assert_eq!(e.message(), "close the shim's descriptors");
        assert!(sys.calls_of("setns").is_empty());
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
