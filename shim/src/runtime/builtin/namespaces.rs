//! Which namespaces a container process joins and which it creates: the
//! spec's list for a new container, the init's for an exec.

use super::sys::Sys;
use crate::{Error, Result};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};
use std::path::{Path, PathBuf};

/// The clone flag of a namespace type the built-in runtime supports.
pub fn flag(t: LinuxNamespaceType) -> Result<CloneFlags> {
    Ok(match t {
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Time => {
            return Err(Error::unimplemented(
                "time namespaces are not supported by the built-in runtime",
            ));
        }
    })
}

/// The namespaces of a spec.
pub fn of(spec: &Spec) -> Vec<LinuxNamespace> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
}

/// What the first child does before forking the init: namespaces to join
/// (by path, in [`JOIN_ORDER`]), whether to make a user namespace (alone,
/// first, so it owns the others; see [`super::userns`]), and the other
/// namespaces to create. A new cgroup namespace is left out: the init makes
/// it once it is in its cgroup.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub join: Vec<(PathBuf, CloneFlags)>,
    pub new_user: bool,
    pub create: CloneFlags,
}

/// The order joins happen in, as runc's: the user namespace first (its
/// capabilities are what the other joins are checked against), the mount
/// namespace last (every path is still the shim's until then; runc opens
/// them all first for the same reason).
pub const JOIN_ORDER: [CloneFlags; 7] = [
    CloneFlags::CLONE_NEWUSER,
    CloneFlags::CLONE_NEWIPC,
    CloneFlags::CLONE_NEWUTS,
    CloneFlags::CLONE_NEWNET,
    CloneFlags::CLONE_NEWPID,
    CloneFlags::CLONE_NEWCGROUP,
    CloneFlags::CLONE_NEWNS,
];

pub fn plan(nss: &[LinuxNamespace]) -> Result<Plan> {
    let mut p = Plan {
        join: Vec::new(),
        new_user: false,
        create: CloneFlags::empty(),
    };
    for ns in nss {
        let f = flag(ns.typ())?;
        match ns.path() {
            Some(path) => p.join.push((path.clone(), f)),
            None if f == CloneFlags::CLONE_NEWUSER => p.new_user = true,
            None if f == CloneFlags::CLONE_NEWCGROUP => {}
            None => p.create |= f,
        }
    }
    p.join
        .sort_by_key(|(_, f)| JOIN_ORDER.iter().position(|o| o == f));
    Ok(p)
}

/// Joins, then creates, as planned; `map_user` runs right after a new user
/// namespace is made, before anything else is created in it (the shim
/// writes its maps then).
pub fn enter(sys: &dyn Sys, p: &Plan, map_user: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    for (path, f) in &p.join {
        join(sys, path, *f)?;
    }
    if p.new_user {
        sys.unshare(CloneFlags::CLONE_NEWUSER)
            .map_err(|e| Error::io("create user namespace", e))?;
        map_user()?;
    }
    sys.unshare(p.create)
        .map_err(|e| Error::io("create namespaces", e))
}

/// Whether the process ends in a user namespace of the spec's.
pub fn enters_user(p: &Plan) -> bool {
    p.new_user || p.join.iter().any(|(_, f)| *f == CloneFlags::CLONE_NEWUSER)
}

/// Joins the namespace at `path`.
pub fn join(sys: &dyn Sys, path: &Path, f: CloneFlags) -> Result<()> {
    sys.setns(path, f)
        .map_err(|e| Error::io(format!("join namespace {}", path.display()), e))
}

/// Brings up `lo` when the spec creates a network namespace, whose loopback
/// the kernel makes DOWN (runc does the same, and only for a new one: a
/// joined namespace is its creator's to configure).
pub fn loopback_up(sys: &dyn Sys, nss: &[LinuxNamespace]) -> Result<()> {
    let new_net = nss
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Network && n.path().is_none());
    if !new_net {
        return Ok(());
    }
    sys.link_up("lo")
        .map_err(|e| Error::io("bring up the loopback interface", e))
}

/// The namespaces of a running container an exec joins, in the order it
/// joins them (as [`JOIN_ORDER`]: the user namespace first, the mount
/// namespace last: after it, /proc is the container's).
/// `/proc/<init>/ns/<name>` for each.
pub const EXEC_ORDER: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

#[cfg(test)]
mod tests {
    use super::super::sys::Fake;
    use super::*;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut b = LinuxNamespaceBuilder::default().typ(t);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().unwrap()
    }

    #[test]
    fn joins_paths_creates_the_rest_and_leaves_cgroup_to_init() {
        let nss = [
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Network, Some("/var/run/netns/x")),
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Cgroup, None),
        ];
        let p = plan(&nss).unwrap();
        assert_eq!(
            p.join,
            vec![(PathBuf::from("/var/run/netns/x"), CloneFlags::CLONE_NEWNET)]
        );
        assert_eq!(p.create, CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS);
        assert!(!p.new_user);
        let sys = Fake::new();
        enter(&sys, &p, &mut || panic!("no user namespace to map")).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "setns /var/run/netns/x CLONE_NEWNET".to_string(),
                "unshare CLONE_NEWNS|CLONE_NEWPID".to_string(),
            ]
        );
    }

    #[test]
    fn joins_go_user_first_mount_last_as_runc_orders_them() {
        let nss = [
            ns(LinuxNamespaceType::Mount, Some("/proc/7/ns/mnt")),
            ns(LinuxNamespaceType::Network, Some("/proc/7/ns/net")),
            ns(LinuxNamespaceType::Cgroup, Some("/proc/7/ns/cgroup")),
            ns(LinuxNamespaceType::User, Some("/proc/7/ns/user")),
            ns(LinuxNamespaceType::Ipc, Some("/proc/7/ns/ipc")),
        ];
        let p = plan(&nss).unwrap();
        let order: Vec<_> = p
            .join
            .iter()
            .map(|(path, _)| path.display().to_string())
            .collect();
        assert_eq!(
            order,
            [
                "/proc/7/ns/user",
                "/proc/7/ns/ipc",
                "/proc/7/ns/net",
                "/proc/7/ns/cgroup",
                "/proc/7/ns/mnt"
            ]
        );
        assert!(!p.new_user);
        assert!(enters_user(&p), "joined by path");
        assert_eq!(p.create, CloneFlags::empty());
    }

    #[test]
    fn a_new_user_namespace_is_made_alone_and_mapped_before_the_rest() {
        let nss = [
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Network, Some("/var/run/netns/x")),
            ns(LinuxNamespaceType::User, None),
            ns(LinuxNamespaceType::Mount, None),
        ];
        let p = plan(&nss).unwrap();
        assert!(p.new_user && enters_user(&p));
        assert_eq!(p.create, CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS);
        let sys = Fake::new();
        enter(&sys, &p, &mut || {
            sys.calls.borrow_mut().push("map".into());
            Ok(())
        })
        .unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                // Joined as the shim (a host-owned namespace would refuse a
                // process already inside the new user namespace).
                "setns /var/run/netns/x CLONE_NEWNET",
                "unshare CLONE_NEWUSER",
                "map",
                "unshare CLONE_NEWNS|CLONE_NEWPID",
            ]
        );
        // Nothing is made in a namespace whose maps were not written.
        let sys = Fake::new();
        let e = enter(&sys, &p, &mut || Err(Error::internal("no maps"))).unwrap_err();
        assert_eq!(e.message(), "no maps");
        assert_eq!(sys.calls_of("unshare"), vec!["unshare CLONE_NEWUSER"]);
        let sys = Fake::new();
        sys.fail("unshare CLONE_NEWUSER", libc::ENOSPC);
        let e = enter(&sys, &p, &mut || panic!("mapped a namespace never made")).unwrap_err();
        assert_eq!(e.message(), "create user namespace");
    }

    #[test]
    fn loopback_comes_up_only_in_a_new_network_namespace() {
        let sys = Fake::new();
        loopback_up(&sys, &[ns(LinuxNamespaceType::Network, None)]).unwrap();
        assert_eq!(*sys.calls.borrow(), vec!["link_up lo".to_string()]);

        let sys = Fake::new();
        let joined = [ns(LinuxNamespaceType::Network, Some("/var/run/netns/x"))];
        loopback_up(&sys, &joined).unwrap();
        let host = [ns(LinuxNamespaceType::Uts, None)];
        loopback_up(&sys, &host).unwrap();
        assert!(sys.calls.borrow().is_empty(), "{:?}", sys.calls.borrow());

        let sys = Fake::new();
        sys.fail("link_up", libc::EPERM);
        let e = loopback_up(&sys, &[ns(LinuxNamespaceType::Network, None)]).unwrap_err();
        assert_eq!(e.message(), "bring up the loopback interface");
    }

    #[test]
    fn time_namespaces_are_refused_by_name() {
        let e = plan(&[ns(LinuxNamespaceType::Time, None)]).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::Unimplemented);
        assert!(e.message().contains("time namespaces"), "{e}");
        assert_eq!(
            flag(LinuxNamespaceType::User).unwrap(),
            CloneFlags::CLONE_NEWUSER
        );
    }

    #[test]
    fn a_failed_join_names_the_namespace() {
        let sys = Fake::new();
        sys.fail("setns", libc::EINVAL);
        let p = plan(&[ns(LinuxNamespaceType::Network, Some("/proc/7/ns/net"))]).unwrap();
        let e = enter(&sys, &p, &mut || Ok(())).unwrap_err();
        assert_eq!(e.message(), "join namespace /proc/7/ns/net");
        assert!(sys.calls_of("unshare").is_empty(), "stops at the failure");
    }
}
