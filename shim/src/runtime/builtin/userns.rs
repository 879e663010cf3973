//! User namespaces, as runc makes them. The first child of a create joins
//! the namespaces given by path (a user namespace first), then unshares a
//! new user namespace alone and asks the shim (`u` on the sync socket) to
//! write its `uid_map` and `gid_map`: only a process holding CAP_SETUID and
//! CAP_SETGID in the parent namespace may write maps naming other ids, and
//! the shim is real root there. Once answered, it creates the other
//! namespaces, which the new user namespace then owns. The init (and an
//! exec's process, which joins the user namespace before any other) first
//! becomes root inside it, so everything it makes is owned by mapped ids.
//!
//! What runc refuses is refused here with its reasons: mappings without a
//! user namespace, a user namespace without uid or gid mappings, or with
//! mappings that leave the container's root (uid or gid 0) unmapped. As
//! runc 1.1 does, a user namespace joined by path needs the mappings too;
//! they are not written (the namespace has its own).

use super::sync;
use super::sys::Sys;
use crate::{Error, Result};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// The user namespace a spec asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNs {
    /// A new namespace (the shim writes its maps) or one joined by path.
    pub create: bool,
    /// `/proc/<pid>/uid_map` content: a `container host size` line each.
    pub uid_map: String,
    pub gid_map: String,
    /// Whether the process drops its supplementary groups on becoming root
    /// inside: runc skips it only for the one-line map of its own egid to
    /// gid 0 (which an unprivileged runtime could write itself).
    pub setgroups: bool,
}

/// Lines as the kernel reads a map file (written in one `write`).
pub fn map_file(mappings: &[LinuxIdMapping]) -> String {
    mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// The host id `id` of the container stands for, if mapped.
pub fn host_id(mappings: &[LinuxIdMapping], id: u32) -> Option<u32> {
    mappings.iter().find_map(|m| {
        let off = id.checked_sub(m.container_id())?;
        (off < m.size()).then(|| m.host_id().checked_add(off))?
    })
}

/// The spec's user namespace, or `None` without one; refuses what runc
/// refuses. `egid` is the runtime's own (see [`UserNs::setgroups`]).
pub fn of(spec: &Spec, egid: u32) -> Result<Option<UserNs>> {
    let linux = spec.linux().clone().unwrap_or_default();
    let user = linux
        .namespaces()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::User)
        .cloned();
    let uids = linux.uid_mappings().clone().unwrap_or_default();
    let gids = linux.gid_mappings().clone().unwrap_or_default();
    let Some(user) = user else {
        if !uids.is_empty() || !gids.is_empty() {
            return Err(Error::invalid(
                "linux.uidMappings/gidMappings are set, but linux.namespaces has no user namespace",
            ));
        }
        return Ok(None);
    };
    for (maps, kind) in [(&uids, "uid"), (&gids, "gid")] {
        if maps.is_empty() {
            return Err(Error::invalid(format!(
                "linux.namespaces has a user namespace, but linux.{kind}Mappings is empty"
            )));
        }
        if host_id(maps, 0).is_none() {
            return Err(Error::invalid(format!(
                "linux.{kind}Mappings do not map the container's root ({kind} 0)"
            )));
        }
    }
    let own_gid_only = gids.len() == 1
        && gids[0].container_id() == 0
        && gids[0].host_id() == egid
        && gids[0].size() == 1;
    Ok(Some(UserNs {
        create: user.path().is_none(),
        uid_map: map_file(&uids),
        gid_map: map_file(&gids),
        setgroups: !own_gid_only,
    }))
}

/// Writes the maps of the user namespace the process `pid` made: uid then
/// gid, as runc. `setgroups` is left as the kernel made it (`allow`): runc
/// writes `deny` only when it runs unprivileged.
pub fn write_maps(sys: &dyn Sys, pid: u32, ns: &UserNs) -> Result<()> {
    for (file, content) in [("uid_map", &ns.uid_map), ("gid_map", &ns.gid_map)] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        sys.write(&path, content).map_err(|e| {
            Error::io(
                format!(
                    "write {file} {:?} of the container's user namespace",
                    content.trim_end()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// The shim's side: the first message of a create's first child, its
/// init's pid (or its failure); when it made a user namespace it asks for
/// its maps first (`u`), which the shim writes (as the process `mid`'s)
/// and confirms.
pub fn first_message(
    sys: &dyn Sys,
    sock: &OwnedFd,
    mid: u32,
    user: Option<&UserNs>,
) -> Result<String> {
    let m = sync::recv(sock)?;
    if m != "u" {
        return Ok(m);
    }
    let u = user
        .filter(|u| u.create)
        .ok_or_else(|| Error::internal("the container process asked for user namespace maps"))?;
    write_maps(sys, mid, u)?;
    sync::send(sock, "u")?;
    sync::recv(sock)
}

/// Becomes root of the user namespace the process is in, as runc's init
/// does before anything else: so what it creates is owned by the mapped
/// root, and its supplementary groups (the shim's) go.
pub fn become_root(sys: &dyn Sys, ns: &UserNs) -> Result<()> {
    sys.setresuid(0)
        .map_err(|e| Error::io("become root (uid 0) in the user namespace", e))?;
    sys.setresgid(0)
        .map_err(|e| Error::io("become gid 0 in the user namespace", e))?;
    if ns.setgroups {
        sys.setgroups(&[])
            .map_err(|e| Error::io("drop supplementary groups in the user namespace", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::sys::Fake;
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder, SpecBuilder,
    };

    fn map(c: u32, h: u32, s: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(c)
            .host_id(h)
            .size(s)
            .build()
            .unwrap()
    }

    fn spec(user: Option<Option<&str>>, uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Spec {
        let mut l = LinuxBuilder::default();
        if let Some(path) = user {
            let mut ns = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User);
            if let Some(p) = path {
                ns = ns.path(p);
            }
            l = l.namespaces(vec![ns.build().unwrap()]);
        } else {
            l = l.namespaces(vec![]);
        }
        let mut l = l.build().unwrap();
        l.set_uid_mappings((!uids.is_empty()).then(|| uids.to_vec()));
        l.set_gid_mappings((!gids.is_empty()).then(|| gids.to_vec()));
        SpecBuilder::default().linux(l).build().unwrap()
    }

    #[test]
    fn map_files_are_one_line_per_mapping_container_host_size() {
        assert_eq!(
            map_file(&[
                map(0, 100000, 1000),
                map(1000, 1000, 1),
                map(1001, 101001, 64535)
            ]),
            "0 100000 1000\n1000 1000 1\n1001 101001 64535\n"
        );
        assert_eq!(map_file(&[]), "");
    }

    #[test]
    fn host_ids_follow_the_first_mapping_that_holds_them() {
        let maps = [map(0, 100000, 10), map(10, 5000, 5)];
        assert_eq!(host_id(&maps, 0), Some(100000));
        assert_eq!(host_id(&maps, 9), Some(100009));
        assert_eq!(host_id(&maps, 10), Some(5000));
        assert_eq!(host_id(&maps, 14), Some(5004));
        assert_eq!(host_id(&maps, 15), None);
        // No wrap-around at the top of the id space.
        assert_eq!(host_id(&[map(0, u32::MAX, 2)], 1), None);
        assert_eq!(
            host_id(&[map(5, 1, 0)], 5),
            None,
            "an empty mapping maps nothing"
        );
    }

    #[test]
    fn a_new_or_joined_user_namespace_with_root_mapped_is_accepted() {
        let m = [map(0, 100000, 65536)];
        let u = of(&spec(Some(None), &m, &m), 0).unwrap().unwrap();
        assert_eq!(
            u,
            UserNs {
                create: true,
                uid_map: "0 100000 65536\n".into(),
                gid_map: "0 100000 65536\n".into(),
                setgroups: true,
            }
        );
        let u = of(&spec(Some(Some("/proc/7/ns/user")), &m, &m), 0)
            .unwrap()
            .unwrap();
        assert!(!u.create, "joined, not made");
        assert_eq!(of(&spec(None, &[], &[]), 0).unwrap(), None);
        assert_eq!(of(&Spec::default(), 0).unwrap(), None);
    }

    #[test]
    fn what_runc_refuses_is_refused_naming_the_field() {
        let m = [map(0, 100000, 65536)];
        let no_root = [map(1, 100000, 65535)];
        let cases = [
            (spec(None, &m, &[]), "no user namespace"),
            (spec(None, &[], &m), "no user namespace"),
            (spec(Some(None), &[], &m), "linux.uidMappings is empty"),
            (spec(Some(None), &m, &[]), "linux.gidMappings is empty"),
            (
                spec(Some(Some("/proc/7/ns/user")), &[], &[]),
                "uidMappings is empty",
            ),
            (
                spec(Some(None), &no_root, &m),
                "do not map the container's root (uid 0)",
            ),
            (
                spec(Some(None), &m, &no_root),
                "do not map the container's root (gid 0)",
            ),
        ];
        for (s, want) in cases {
            let e = of(&s, 0).unwrap_err();
            assert_eq!(e.kind(), berth_proto::errdefs::Kind::InvalidArgument);
            assert!(e.message().contains(want), "{} lacks {want:?}", e.message());
        }
    }

    #[test]
    fn groups_are_kept_only_for_a_map_of_the_runtimes_own_gid() {
        let m = [map(0, 100000, 65536)];
        let own = [map(0, 7, 1)];
        assert!(
            !of(&spec(Some(None), &m, &own), 7)
                .unwrap()
                .unwrap()
                .setgroups
        );
        assert!(
            of(&spec(Some(None), &m, &own), 0)
                .unwrap()
                .unwrap()
                .setgroups
        );
        let wider = [map(0, 7, 2)];
        assert!(
            of(&spec(Some(None), &m, &wider), 7)
                .unwrap()
                .unwrap()
                .setgroups
        );
    }

    #[test]
    fn the_shim_writes_uid_then_gid_map_and_leaves_setgroups() {
        let ns = UserNs {
            create: true,
            uid_map: "0 100000 65536\n".into(),
            gid_map: "0 200000 65536\n".into(),
            setgroups: true,
        };
        let sys = Fake::new();
        write_maps(&sys, 42, &ns).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "write /proc/42/uid_map 0 100000 65536\n",
                "write /proc/42/gid_map 0 200000 65536\n",
            ]
        );
        let sys = Fake::new();
        sys.fail("write /proc/42/gid_map", libc::EINVAL);
        let e = write_maps(&sys, 42, &ns).unwrap_err();
        assert_eq!(
            e.message(),
            "write gid_map \"0 200000 65536\" of the container's user namespace"
        );
        assert!(e.chain().contains("Invalid argument"), "{}", e.chain());
    }

    #[test]
    fn the_shim_maps_the_namespace_its_child_asks_for_then_reads_the_pid() {
        let ns = UserNs {
            create: true,
            uid_map: "0 100000 65536\n".into(),
            gid_map: "0 100000 65536\n".into(),
            setgroups: true,
        };
        let (shim, child) = sync::pair().unwrap();
        sync::send(&child, "u").unwrap();
        sync::send(&child, "p42").unwrap();
        let sys = Fake::new();
        assert_eq!(first_message(&sys, &shim, 7, Some(&ns)).unwrap(), "p42");
        assert_eq!(
            sync::recv(&child).unwrap(),
            "u",
            "told the maps are written"
        );
        assert_eq!(sys.calls_of("write /proc/7/").len(), 2);
        // No request: nothing written, the pid (or failure) comes first.
        let sys = Fake::new();
        sync::send(&child, "eboom").unwrap();
        assert_eq!(first_message(&sys, &shim, 7, Some(&ns)).unwrap(), "eboom");
        assert!(sys.calls.borrow().is_empty());
        // A request for a namespace the spec joins (or lacks) is a bug.
        let joined = UserNs {
            create: false,
            ..ns.clone()
        };
        for user in [None, Some(&joined)] {
            sync::send(&child, "u").unwrap();
            let sys = Fake::new();
            let e = first_message(&sys, &shim, 7, user).unwrap_err();
            assert_eq!(e.kind(), berth_proto::errdefs::Kind::Internal);
            assert!(sys.calls.borrow().is_empty());
        }
        // Maps the kernel refuses fail the create before the child goes on.
        sync::send(&child, "u").unwrap();
        let sys = Fake::new();
        sys.fail("write /proc/7/uid_map", libc::EPERM);
        assert!(first_message(&sys, &shim, 7, Some(&ns)).is_err());
        assert_eq!(sync::try_recv(&child), None, "never told to go on");
    }

    #[test]
    fn becoming_root_inside_sets_uid_gid_then_groups() {
        let mut ns = UserNs {
            create: true,
            uid_map: String::new(),
            gid_map: String::new(),
            setgroups: true,
        };
        let sys = Fake::new();
        become_root(&sys, &ns).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec!["setresuid 0", "setresgid 0", "setgroups []"]
        );
        ns.setgroups = false;
        let sys = Fake::new();
        become_root(&sys, &ns).unwrap();
        assert!(sys.calls_of("setgroups").is_empty());
        let sys = Fake::new();
        sys.fail("setresuid", libc::EINVAL);
        let e = become_root(&sys, &ns).unwrap_err();
        assert_eq!(e.message(), "become root (uid 0) in the user namespace");
        assert!(sys.calls_of("setresgid").is_empty());
    }
}
