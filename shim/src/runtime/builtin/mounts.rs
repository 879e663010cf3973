//! The spec's mounts, each made under the new root: bind mounts (with
//! their flags applied by a remount, as the kernel requires), filesystems,
//! the container's view of its cgroup, and propagation changes.

use super::sys::{Kind, Sys};
use crate::cgroup::Hierarchy;
use crate::{Error, Result};
use nix::mount::MsFlags;
use oci_spec::runtime::Mount;
use std::path::{Component, Path, PathBuf};

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

pub fn mkdir_p(sys: &dyn Sys, p: &Path) -> Result<()> {
    sys.mkdir_all(p)
        .map_err(|e| Error::io(format!("create mount point {}", p.display()), e))
}

/// Makes one spec mount under `rootfs`.
pub fn mount_one(sys: &dyn Sys, rootfs: &Path, m: &Mount, cgroup: &CgroupView) -> Result<()> {
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
    let src = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
    let what = |e| {
        Error::io(
            format!(
                "mount {typ} {} on {}",
                src.display(),
                m.destination().display()
            ),
            e,
        )
    };
    if typ == "bind" || flags.contains(MsFlags::MS_BIND) {
        // A missing source is taken for a directory: the mount then says
        // what is wrong with it.
        if sys.kind(&src).unwrap_or(Kind::Dir) == Kind::Dir {
            mkdir_p(sys, &dest)?;
        } else {
            if let Some(parent) = dest.parent() {
                mkdir_p(sys, parent)?;
            }
            if sys.kind(&dest).is_none() {
                sys.create_file(&dest)
                    .map_err(|e| Error::io(format!("create {}", dest.display()), e))?;
            }
        }
        let rec = flags & MsFlags::MS_REC;
        sys.mount(Some(&src), &dest, None, MsFlags::MS_BIND | rec, None)
            .map_err(what)?;
        // A bind mount takes its other flags only from a remount.
        let rest = flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !rest.is_empty() {
            sys.mount(
                None,
                &dest,
                None,
                rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None,
            )
            .map_err(what)?;
        }
    } else if typ == "cgroup" {
        mount_cgroup(sys, &dest, flags, cgroup)?;
    } else {
        mkdir_p(sys, &dest)?;
        let d = data.join(",");
        sys.mount(
            Some(&src),
            &dest,
            Some(&typ),
            flags,
            (!d.is_empty()).then_some(d.as_str()),
        )
        .map_err(what)?;
    }
    // One call per propagation change, in order, as runc does: mount(2)
    // takes a single propagation type per call.
    for p in parsed.propagation {
        sys.mount(None, &dest, None, p, None).map_err(what)?;
    }
    // Then runc's recursive attributes (`rro`, …), on this mount and the
    // ones under it (which a plain remount never reaches).
    if let Some(r) = parsed.recursive {
        sys.mount_setattr_recursive(&dest, r).map_err(|e| {
            Error::io(
                format!(
                    "set recursive attributes {:?} on {}",
                    opts.iter()
                        .filter(|o| berth_mount::parse_options(&[o]).recursive.is_some())
                        .collect::<Vec<_>>(),
                    m.destination().display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// What a `cgroup` mount shows: the host hierarchy and the container's
/// cgroup in it.
pub struct CgroupView<'a> {
    pub hierarchy: &'a Hierarchy,
    pub path: &'a str,
}

/// A `cgroup` mount: on v2 the container's unified cgroup bound in; on v1
/// a tmpfs with the container's own cgroup of each controller bound in,
/// each locked down.
fn mount_cgroup(sys: &dyn Sys, dest: &Path, flags: MsFlags, view: &CgroupView) -> Result<()> {
    mkdir_p(sys, dest)?;
    match view.hierarchy {
        Hierarchy::V2(_) => {
            let src = view.hierarchy.dir(None, view.path);
            sys.mount(Some(&src), dest, None, MsFlags::MS_BIND, None)
                .map_err(|e| Error::io("bind cgroup", e))?;
        }
        Hierarchy::V1(_) => {
            sys.mount(
                Some(Path::new("tmpfs")),
                dest,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=755"),
            )
            .map_err(|e| Error::io("mount cgroup tmpfs", e))?;
            for name in view.hierarchy.controllers() {
                let host = view.hierarchy.dir(Some(&name), view.path);
                if sys.kind(&host) != Some(Kind::Dir) {
                    continue;
                }
                let d = dest.join(&name);
                mkdir_p(sys, &d)?;
                sys.mount(Some(&host), &d, None, MsFlags::MS_BIND, None)
                    .map_err(|e| Error::io(format!("bind cgroup {name}"), e))?;
                remount_locked_down(sys, &d)
                    .map_err(|e| Error::io(format!("remount cgroup {name}"), e))?;
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        remount_locked_down(sys, dest)
            .map_err(|e| Error::io(format!("remount {} read-only", dest.display()), e))?;
    }
    Ok(())
}

/// Makes one mount read-only, nosuid, nodev, noexec. MS_BIND: this mount
/// only, never the superblock (v2's is the host's cgroup2).
fn remount_locked_down(sys: &dyn Sys, p: &Path) -> std::io::Result<()> {
    sys.mount(
        None,
        p,
        None,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::super::sys::Fake;
    use super::*;
    use oci_spec::runtime::MountBuilder;

    pub(crate) fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn mnt(dest: &str, typ: &str, src: &str, opts: &[&str]) -> Mount {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(src)
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    const V1: Hierarchy = Hierarchy::V1(PathBuf::new());

    fn view(h: &Hierarchy) -> CgroupView<'_> {
        CgroupView {
            hierarchy: h,
            path: "/default/c1",
        }
    }

    #[test]
    fn secure_join_stays_inside() {
        let d = tempdir("sj");
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

    #[test]
    fn filesystem_mount_passes_flags_and_data() {
        let sys = Fake::new();
        let m = mnt(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        );
        mount_one(&sys, Path::new("/r"), &m, &view(&V1)).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "mkdir /r/dev".to_string(),
                "mount tmpfs /r/dev tmpfs MS_NOSUID|MS_STRICTATIME mode=755,size=65536k"
                    .to_string()
            ]
        );
    }

    #[test]
    fn read_only_bind_is_a_bind_then_a_remount() {
        let sys = Fake::new();
        sys.with("/host/resolv.conf", Kind::File);
        let m = mnt(
            "/etc/resolv.conf",
            "bind",
            "/host/resolv.conf",
            &["rbind", "ro", "rprivate"],
        );
        mount_one(&sys, Path::new("/r"), &m, &view(&V1)).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "mkdir /r/etc".to_string(),
                "create /r/etc/resolv.conf".to_string(),
                "mount /host/resolv.conf /r/etc/resolv.conf - MS_BIND|MS_REC -".to_string(),
                "mount - /r/etc/resolv.conf - MS_RDONLY|MS_REMOUNT|MS_BIND -".to_string(),
                "mount - /r/etc/resolv.conf - MS_REC|MS_PRIVATE -".to_string(),
            ]
        );
    }

    #[test]
    fn recursive_attributes_come_last_on_the_whole_tree() {
        let sys = Fake::new();
        let m = mnt(
            "/data",
            "bind",
            "/host/data",
            &["rbind", "ro", "rprivate", "rro"],
        );
        mount_one(&sys, Path::new("/r"), &m, &view(&V1)).unwrap();
        assert_eq!(
            sys.calls.borrow().last().map(String::as_str),
            Some("mount_setattr /r/data set=0x1 clear=0x0")
        );
        assert!(sys.calls.borrow()[3].contains("MS_REC|MS_PRIVATE"));
        sys.fail("mount_setattr", libc::ENOSYS);
        let e = mount_one(&sys, Path::new("/r"), &m, &view(&V1)).unwrap_err();
        assert!(e.to_string().contains("[\"rro\"] on /data"), "{e}");
    }

    #[test]
    fn failed_mount_fails_with_its_step() {
        let sys = Fake::new();
        sys.fail("mount proc", libc::EPERM);
        let e = mount_one(
            &sys,
            Path::new("/r"),
            &mnt("/proc", "proc", "proc", &[]),
            &view(&V1),
        )
        .unwrap_err();
        assert_eq!(e.message(), "mount proc proc on /proc");
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::PermissionDenied);
    }

    #[test]
    fn cgroup_mount_on_v1_binds_each_controller_locked_down() {
        let root = tempdir("cgm1");
        for c in ["memory", "pids"] {
            std::fs::create_dir_all(root.join(c).join("default/c1")).unwrap();
        }
        std::fs::create_dir_all(root.join("cpu")).unwrap(); // not in this one
        let h = Hierarchy::V1(root.clone());
        let sys = Fake::new();
        for c in ["memory", "pids", "cpu"] {
            let d = root.join(c).join("default/c1");
            if d.is_dir() {
                sys.with(d.to_str().unwrap(), Kind::Dir);
            }
        }
        let m = mnt("/sys/fs/cgroup", "cgroup", "cgroup", &["ro", "nosuid"]);
        mount_one(&sys, Path::new("/r"), &m, &view(&h)).unwrap();
        let mounts = sys.calls_of("mount");
        assert_eq!(
            mounts[0],
            "mount tmpfs /r/sys/fs/cgroup tmpfs MS_NOSUID|MS_NODEV|MS_NOEXEC mode=755"
        );
        let binds: Vec<_> = mounts
            .iter()
            .filter(|c| c.ends_with(" MS_BIND -"))
            .collect();
        assert_eq!(binds.len(), 2, "{mounts:?}");
        assert!(binds[0].contains("/memory/default/c1 /r/sys/fs/cgroup/memory"));
        assert!(binds[1].contains("/pids/default/c1 /r/sys/fs/cgroup/pids"));
        // Each controller and the whole tree end read-only.
        let ro = mounts.iter().filter(|c| c.contains("MS_RDONLY")).count();
        assert_eq!(ro, 3, "{mounts:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cgroup_mount_on_v2_binds_the_unified_cgroup() {
        let h = Hierarchy::V2(PathBuf::from("/sys/fs/cgroup"));
        let sys = Fake::new();
        let m = mnt("/sys/fs/cgroup", "cgroup", "cgroup", &[]);
        mount_one(&sys, Path::new("/r"), &m, &view(&h)).unwrap();
        assert_eq!(
            sys.calls_of("mount"),
            vec!["mount /sys/fs/cgroup/default/c1 /r/sys/fs/cgroup - MS_BIND -"]
        );
    }
}
