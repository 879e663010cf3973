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

/// The namespaces of a spec.
pub fn of(spec: &Spec) -> Vec<LinuxNamespace> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
}

/// What the first child does before forking the init: namespaces to join
/// (by path) and the ones to create. The cgroup namespace is left out: the
/// init makes or joins it once it is in its cgroup.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub join: Vec<(PathBuf, CloneFlags)>,
    pub create: CloneFlags,
}

pub fn plan(nss: &[LinuxNamespace]) -> Result<Plan> {
    let mut p = Plan {
        join: Vec::new(),
        create: CloneFlags::empty(),
    };
    for ns in nss {
        let f = flag(ns.typ())?;
        if f == CloneFlags::CLONE_NEWCGROUP {
            continue;
        }
        match ns.path() {
            Some(path) => p.join.push((path.clone(), f)),
            None => p.create |= f,
        }
    }
    Ok(p)
}

/// Joins, then creates, as planned.
pub fn enter(sys: &dyn Sys, p: &Plan) -> Result<()> {
    for (path, f) in &p.join {
        join(sys, path, *f)?;
    }
    sys.unshare(p.create)
        .map_err(|e| Error::io("create namespaces", e))
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
/// joins them (the mount namespace last: after it, /proc is the
/// container's). `/proc/<init>/ns/<name>` for each.
pub const EXEC_ORDER: [(&str, CloneFlags); 6] = [
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
        let sys = Fake::new();
        enter(&sys, &p).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "setns /var/run/netns/x CLONE_NEWNET".to_string(),
                "unshare CLONE_NEWNS|CLONE_NEWPID".to_string(),
            ]
        );
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
    fn user_and_time_namespaces_are_refused_by_name() {
        let e = plan(&[ns(LinuxNamespaceType::User, None)]).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::Unimplemented);
        assert!(e.message().contains("user namespaces"), "{e}");
        assert!(plan(&[ns(LinuxNamespaceType::Time, None)]).is_err());
    }

    #[test]
    fn a_failed_join_names_the_namespace() {
        let sys = Fake::new();
        sys.fail("setns", libc::EINVAL);
        let p = plan(&[ns(LinuxNamespaceType::Network, Some("/proc/7/ns/net"))]).unwrap();
        let e = enter(&sys, &p).unwrap_err();
        assert_eq!(e.message(), "join namespace /proc/7/ns/net");
        assert!(sys.calls_of("unshare").is_empty(), "stops at the failure");
    }
}
