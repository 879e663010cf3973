//! The container's root filesystem, in its own mount namespace: mount
//! propagation (`/`, then the mount the rootfs is on), the rootfs bound
//! onto itself, the spec's mounts, /dev, pivot_root, the propagation of
//! the new `/` when shared or unbindable, then masked and read-only paths.

use super::devices;
use super::mounts::{CgroupView, mount_one};
use super::sys::{Kind, Sys};
use crate::{Error, Result};
use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::Spec;
use std::path::Path;

/// The propagation the spec asks for on the container's `/`, as runc reads
/// `linux.rootfsPropagation` (the `r` forms are recursive); `None` when it
/// asks for none. An unknown value is refused, never ignored.
pub fn requested(spec: &Spec) -> Result<Option<MsFlags>> {
    let Some(p) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
    else {
        return Ok(None);
    };
    let rec = MsFlags::MS_REC;
    Ok(Some(match p.as_str() {
        "" => return Ok(None),
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | rec,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | rec,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | rec,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | rec,
        other => {
            return Err(Error::invalid(format!(
                "linux.rootfsPropagation {other:?} is not one of shared, slave, private, unbindable (optionally r-prefixed)"
            )));
        }
    }))
}

/// The propagation of `/` before the rootfs is bound onto itself unless
/// the spec asks otherwise: recursive slave, so nothing leaks back to the
/// host.
pub const DEFAULT_PROPAGATION: MsFlags = MsFlags::MS_SLAVE.union(MsFlags::MS_REC);

/// What the mount the rootfs is on gets before the rootfs is bound onto
/// itself (runc's `rootfsParentMountPropagation`): never shared, or
/// pivot_root refuses the new root and the bind would propagate to the
/// host's mount namespace. Slave when `/` is to be one, so mounts the host
/// makes under the rootfs still reach the container; private otherwise.
fn parent_propagation(root: MsFlags) -> MsFlags {
    if root.contains(MsFlags::MS_SLAVE) {
        MsFlags::MS_SLAVE
    } else {
        MsFlags::MS_PRIVATE
    }
}

/// Sets `flags` on the mount `rootfs` is on: on `rootfs` itself if it is
/// a mount point, else on the nearest one above (the kernel answers
/// `EINVAL` for a path that is no mount point), as runc does.
fn set_parent_propagation(sys: &dyn Sys, rootfs: &Path, flags: MsFlags) -> Result<()> {
    let mut at = rootfs;
    loop {
        match sys.mount(None, at, None, flags, None) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && at != Path::new("/") => {
                at = at
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("/"));
            }
            Err(e) => {
                return Err(Error::io(
                    format!(
                        "make the mount of the rootfs ({}) {}",
                        at.display(),
                        if flags.contains(MsFlags::MS_SLAVE) {
                            "a slave"
                        } else {
                            "private"
                        }
                    ),
                    e,
                ));
            }
        }
    }
}

/// Builds the root filesystem and makes it `/` (then [`finish`]); `before_pivot` runs once
/// every mount is made, before pivot_root (the create hooks' point).
pub fn setup(
    sys: &dyn Sys,
    spec: &Spec,
    rootfs: &Path,
    cgroup: &CgroupView,
    before_pivot: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let root = Path::new("/");
    let wanted = requested(spec)?;
    let flags = wanted.unwrap_or(DEFAULT_PROPAGATION);
    sys.mount(None, root, None, flags, None)
        .map_err(|e| Error::io("set mount propagation", e))?;
    set_parent_propagation(sys, rootfs, parent_propagation(flags))?;
    sys.mount(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| Error::io(format!("bind rootfs {}", rootfs.display()), e))?;
    let mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount_one(sys, rootfs, m, cgroup)?;
    }
    // Device nodes unless the host's /dev is bound in.
    let dev_bound = mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("bind"));
    if !dev_bound {
        devices::setup(sys, rootfs, spec)?;
    }
    before_pivot()?;
    pivot(sys, rootfs)?;
    // Shared and unbindable are set on the new `/` itself, now that it is
    // no longer the host's: the private parent left it private (runc since
    // 1.4). Private and slave are what the steps before made it.
    if let Some(f) = wanted.filter(|f| !f.intersects(MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE)) {
        sys.mount(None, root, None, f, None)
            .map_err(|e| Error::io("set the propagation of the new /", e))?;
    }
    make_cwd(sys, spec)
}

/// Masked and read-only paths, then a read-only root: after the init has
/// written its sysctls (runc's order; /proc/sys is usually read-only).
pub fn finish(sys: &dyn Sys, spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    for p in linux.masked_paths().clone().unwrap_or_default() {
        mask(sys, Path::new(&p))?;
    }
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        read_only(sys, Path::new(&p))?;
    }
    if spec
        .root()
        .as_ref()
        .is_some_and(|r| r.readonly().unwrap_or(false))
    {
        read_only_root(sys)?;
    }
    Ok(())
}

/// Creates the process's working directory if the image lacks it, as
/// runc does: after pivot_root (so it cannot leave the root), as root and
/// before the root may turn read-only.
fn make_cwd(sys: &dyn Sys, spec: &Spec) -> Result<()> {
    let Some(cwd) = spec.process().as_ref().map(|p| p.cwd()) else {
        return Ok(());
    };
    sys.mkdir_all(cwd)
        .map_err(|e| Error::io(format!("create the working directory {}", cwd.display()), e))
}

/// pivot_root with the old root stacked on the new one, then made a
/// slave (so detaching it unmounts nothing on the host) and detached (no
/// directory for it needed in the image).
///
/// As runc, from a descriptor of the old root: after pivot_root(".", ".")
/// the working directory is still the new root's mount, under the old
/// one, and `mount(2)` does not climb to the mount on top of a path (only
/// `umount2(2)` does). Made a slave through ".", the new root's tree would
/// be: every bind of a shared mount (`rshared`) would lose its host peers.
fn pivot(sys: &dyn Sys, rootfs: &Path) -> Result<()> {
    let here = Path::new(".");
    let old_root = sys
        .open_dir(Path::new("/"))
        .map_err(|e| Error::io("open the old root", e))?;
    sys.chdir(rootfs)
        .map_err(|e| Error::io("chdir rootfs", e))?;
    sys.pivot_root(here, here)
        .map_err(|e| Error::io("pivot_root", e))?;
    sys.fchdir(&old_root)
        .map_err(|e| Error::io("fchdir to the old root", e))?;
    drop(old_root);
    sys.mount(None, here, None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)
        .map_err(|e| Error::io("make old root a slave", e))?;
    sys.umount(here, MntFlags::MNT_DETACH)
        .map_err(|e| Error::io("detach old root", e))?;
    sys.chdir(Path::new("/"))
        .map_err(|e| Error::io("chdir /", e))
}

/// Hides a path: a read-only tmpfs over a directory, /dev/null over a
/// file; a path that does not exist needs no hiding.
fn mask(sys: &dyn Sys, path: &Path) -> Result<()> {
    let what = |e| Error::io(format!("mask {}", path.display()), e);
    match sys.kind(path) {
        Some(Kind::Dir) => sys
            .mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )
            .map_err(what),
        Some(Kind::File) => sys
            .mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )
            .map_err(what),
        None => Ok(()),
    }
}

/// The flags a bind remount of the mount at `path` keeps: without them
/// the mount would lose nosuid/nodev/noexec (and in a user namespace the
/// kernel refuses to drop them).
fn locked_flags(sys: &dyn Sys, path: &Path) -> std::io::Result<MsFlags> {
    Ok(sys.mount_flags(path)? & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC))
}

/// Makes a path read-only: bound onto itself, then remounted read-only
/// keeping the flags it had (as runc: `/proc/sys` stays nosuid, nodev,
/// noexec).
fn read_only(sys: &dyn Sys, path: &Path) -> Result<()> {
    if sys.kind(path).is_none() {
        return Ok(());
    }
    let what = |e| Error::io(format!("make {} read-only", path.display()), e);
    sys.mount(
        Some(path),
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(what)?;
    let keep = locked_flags(sys, path).map_err(what)?;
    sys.mount(
        None,
        path,
        None,
        keep | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None,
    )
    .map_err(what)
}

/// Remounts `/` read-only. As runc: plainly first, and only if the kernel
/// refuses that (flags locked in a user namespace) again with the flags
/// the mount has.
fn read_only_root(sys: &dyn Sys) -> Result<()> {
    let root = Path::new("/");
    let what = |e| Error::io("make rootfs read-only", e);
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if sys.mount(None, root, None, ro, None).is_ok() {
        return Ok(());
    }
    let have = sys.mount_flags(root).map_err(what)?;
    sys.mount(None, root, None, ro | have, None).map_err(what)
}

#[cfg(test)]
mod tests {
    use super::super::sys::Fake;
    use super::*;
    use crate::cgroup::Hierarchy;
    use oci_spec::runtime::{LinuxBuilder, MountBuilder, RootBuilder, SpecBuilder};
    use std::path::PathBuf;

    fn spec(readonly_root: bool, dev_bind: bool) -> Spec {
        let mut mounts = vec![
            MountBuilder::default()
                .destination("/proc")
                .typ("proc")
                .source("proc")
                .build()
                .unwrap(),
        ];
        if dev_bind {
            mounts.push(
                MountBuilder::default()
                    .destination("/dev")
                    .typ("bind")
                    .source("/dev")
                    .options(vec!["rbind".to_string()])
                    .build()
                    .unwrap(),
            );
        }
        SpecBuilder::default()
            .root(
                RootBuilder::default()
                    .path("rootfs")
                    .readonly(readonly_root)
                    .build()
                    .unwrap(),
            )
            .mounts(mounts)
            .linux(
                LinuxBuilder::default()
                    .rootfs_propagation("rprivate")
                    .masked_paths(vec![
                        "/proc/kcore".to_string(),
                        "/proc/acpi".to_string(),
                        "/proc/absent".to_string(),
                    ])
                    .readonly_paths(vec!["/proc/sys".to_string()])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    fn run(spec: &Spec, sys: &Fake) -> Result<()> {
        let h = Hierarchy::V2(PathBuf::from("/sys/fs/cgroup"));
        let view = CgroupView {
            hierarchy: &h,
            path: "/c",
        };
        setup(sys, spec, Path::new("/b/rootfs"), &view, &mut || {
            sys.calls.borrow_mut().push("before pivot".into());
            Ok(())
        })?;
        finish(sys, spec)
    }

    #[test]
    fn order_is_propagation_mounts_dev_pivot_masks_readonly() {
        let sys = Fake::new();
        sys.with("/proc/kcore", Kind::File)
            .with("/proc/acpi", Kind::Dir)
            .with("/proc/sys", Kind::Dir);
        run(&spec(true, false), &sys).unwrap();
        let calls = sys.calls.borrow().clone();
        let at = |prefix: &str| {
            calls
                .iter()
                .position(|c| c.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {calls:?}"))
        };
        assert_eq!(calls[0], "mount - / - MS_REC|MS_PRIVATE -");
        assert_eq!(calls[1], "mount - /b/rootfs - MS_PRIVATE -");
        assert_eq!(calls[2], "mount /b/rootfs /b/rootfs - MS_BIND|MS_REC -");
        assert!(at("mount proc /b/rootfs/proc proc") < at("mknod /b/rootfs/dev/null"));
        assert!(at("mknod") < at("before pivot"));
        // The old root is left from a descriptor of it: "." after
        // pivot_root is still the new root (see `pivot`).
        let pivot = at("before pivot") + 1;
        assert_eq!(
            calls[pivot..pivot + 7],
            [
                "open_dir /",
                "chdir /b/rootfs",
                "pivot_root . .",
                "fchdir /",
                "mount - . - MS_REC|MS_SLAVE -",
                "umount . MNT_DETACH",
                "chdir /",
            ]
        );
        assert_eq!(
            calls[at("mount /dev/null /proc/kcore")],
            "mount /dev/null /proc/kcore - MS_BIND -"
        );
        assert_eq!(
            calls[at("mount tmpfs /proc/acpi")],
            "mount tmpfs /proc/acpi tmpfs MS_RDONLY -"
        );
        assert!(!calls.iter().any(|c| c.contains("/proc/absent")));
        assert_eq!(
            sys.calls_of("mount - /proc/sys"),
            vec!["mount - /proc/sys - MS_RDONLY|MS_REMOUNT|MS_BIND -"]
        );
        assert_eq!(
            calls.last().unwrap(),
            "mount - / - MS_RDONLY|MS_REMOUNT|MS_BIND -"
        );
    }

    #[test]
    fn read_only_paths_keep_nosuid_nodev_noexec() {
        let sys = Fake::new();
        sys.with("/proc/sys", Kind::Dir);
        let locked = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        // MS_RELATIME is not carried over: the remount keeps the atime.
        sys.mount_flags
            .borrow_mut()
            .insert("/proc/sys".into(), locked | MsFlags::MS_RELATIME);
        run(&spec(false, false), &sys).unwrap();
        assert_eq!(
            sys.calls_of("mount - /proc/sys"),
            vec!["mount - /proc/sys - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -"]
        );
    }

    #[test]
    fn read_only_root_retries_with_its_flags_only_when_refused() {
        let sys = Fake::new();
        sys.mount_flags
            .borrow_mut()
            .insert("/".into(), MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        read_only_root(&sys).unwrap();
        assert_eq!(
            sys.calls_of("mount - /"),
            vec!["mount - / - MS_RDONLY|MS_REMOUNT|MS_BIND -"]
        );
        let sys = Fake::new();
        sys.mount_flags
            .borrow_mut()
            .insert("/".into(), MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        sys.fail("mount - / - MS_RDONLY|MS_REMOUNT|MS_BIND -", libc::EPERM);
        read_only_root(&sys).unwrap();
        assert_eq!(
            sys.calls_of("mount - /").last().unwrap(),
            "mount - / - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_REMOUNT|MS_BIND -"
        );
    }

    #[test]
    fn missing_cwd_is_made_after_pivot_before_read_only_root() {
        let mut s = spec(true, false);
        s.set_process(Some(
            oci_spec::runtime::ProcessBuilder::default()
                .cwd("/made/here")
                .build()
                .unwrap(),
        ));
        let sys = Fake::new();
        run(&s, &sys).unwrap();
        let calls = sys.calls.borrow().clone();
        let at = |c: &str| calls.iter().position(|x| x == c).unwrap();
        assert!(at("pivot_root . .") < at("mkdir /made/here"));
        assert!(at("mkdir /made/here") < at("mount - / - MS_RDONLY|MS_REMOUNT|MS_BIND -"));
        let sys = Fake::new();
        sys.fail("mkdir /made", libc::ENOTDIR);
        let e = run(&s, &sys).unwrap_err();
        assert_eq!(e.message(), "create the working directory /made/here");
    }

    #[test]
    fn bound_host_dev_gets_no_device_nodes() {
        let sys = Fake::new();
        run(&spec(false, true), &sys).unwrap();
        assert!(sys.calls_of("mknod").is_empty());
        assert!(sys.calls_of("mount - / - MS_RDONLY").is_empty());
        assert_eq!(requested(&Spec::default()).unwrap(), None);
    }

    #[test]
    fn failed_pivot_or_mask_fails_setup_by_name() {
        let sys = Fake::new();
        sys.fail("pivot_root", libc::EINVAL);
        let e = run(&spec(false, false), &sys).unwrap_err();
        assert_eq!(e.message(), "pivot_root");
        assert!(e.chain().contains("Invalid argument"), "{}", e.chain());
        let sys = Fake::new();
        sys.with("/proc/kcore", Kind::File);
        sys.fail("mount /dev/null /proc/kcore", libc::EPERM);
        let e = run(&spec(false, false), &sys).unwrap_err();
        assert_eq!(e.message(), "mask /proc/kcore");
    }

    fn with_propagation(p: &str) -> Spec {
        let mut s = spec(false, false);
        let mut l = s.linux().clone().unwrap();
        l.set_rootfs_propagation(Some(p.to_string()));
        s.set_linux(Some(l));
        s
    }

    #[test]
    fn rootfs_propagation_is_set_on_slash_then_the_rootfs_mount_then_the_new_slash() {
        // (value, on / first, on the rootfs's mount, on the new / after pivot)
        let cases = [
            ("rprivate", "MS_REC|MS_PRIVATE", "MS_PRIVATE", None),
            ("private", "MS_PRIVATE", "MS_PRIVATE", None),
            ("rslave", "MS_REC|MS_SLAVE", "MS_SLAVE", None),
            ("slave", "MS_SLAVE", "MS_SLAVE", None),
            ("", "MS_REC|MS_SLAVE", "MS_SLAVE", None),
            ("shared", "MS_SHARED", "MS_PRIVATE", Some("MS_SHARED")),
            (
                "rshared",
                "MS_REC|MS_SHARED",
                "MS_PRIVATE",
                Some("MS_REC|MS_SHARED"),
            ),
            (
                "unbindable",
                "MS_UNBINDABLE",
                "MS_PRIVATE",
                Some("MS_UNBINDABLE"),
            ),
            (
                "runbindable",
                "MS_REC|MS_UNBINDABLE",
                "MS_PRIVATE",
                Some("MS_REC|MS_UNBINDABLE"),
            ),
        ];
        for (value, first, parent, after) in cases {
            let sys = Fake::new();
            run(&with_propagation(value), &sys).unwrap();
            let calls = sys.calls.borrow().clone();
            assert_eq!(calls[0], format!("mount - / - {first} -"), "{value}");
            assert_eq!(
                calls[1],
                format!("mount - /b/rootfs - {parent} -"),
                "{value}"
            );
            assert!(calls[2].starts_with("mount /b/rootfs /b/rootfs"), "{value}");
            let slash: Vec<_> = sys.calls_of("mount - / ");
            let pivoted = calls.iter().position(|c| c == "chdir /").unwrap();
            match after {
                None => assert_eq!(slash.len(), 1, "{value}: {slash:?}"),
                Some(f) => {
                    assert_eq!(slash.len(), 2, "{value}: {slash:?}");
                    assert_eq!(calls[pivoted + 1], format!("mount - / - {f} -"), "{value}");
                }
            }
        }
        let sys = Fake::new();
        let e = run(&with_propagation("sideways"), &sys).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::InvalidArgument, "{e}");
        assert!(e.message().contains("\"sideways\""), "{e}");
        assert!(sys.calls.borrow().is_empty(), "refused before any mount");
    }

    #[test]
    fn the_rootfs_mount_is_the_nearest_mount_point_above_it() {
        // /b/rootfs and /b are no mount points (EINVAL): / is.
        let sys = Fake::new();
        sys.fail("mount - /b/rootfs - MS_PRIVATE", libc::EINVAL);
        sys.fail("mount - /b - MS_PRIVATE", libc::EINVAL);
        run(&with_propagation("rshared"), &sys).unwrap();
        let calls = sys.calls.borrow().clone();
        assert_eq!(
            calls[1..4],
            [
                "mount - /b/rootfs - MS_PRIVATE -",
                "mount - /b - MS_PRIVATE -",
                "mount - / - MS_PRIVATE -",
            ]
        );
        assert!(calls[4].starts_with("mount /b/rootfs /b/rootfs"));
        // Any other failure fails the create, naming the mount.
        let sys = Fake::new();
        sys.fail("mount - /b/rootfs - MS_SLAVE", libc::EPERM);
        let e = run(&with_propagation("rslave"), &sys).unwrap_err();
        assert_eq!(
            e.message(),
            "make the mount of the rootfs (/b/rootfs) a slave"
        );
        assert!(sys.calls_of("mount /b/rootfs /b/rootfs").is_empty());
        // EINVAL at / itself is a failure too.
        let sys = Fake::new();
        sys.fail("mount - /b", libc::EINVAL);
        sys.fail("mount - / - MS_PRIVATE -", libc::EINVAL);
        let e = run(&with_propagation("shared"), &sys).unwrap_err();
        assert_eq!(e.message(), "make the mount of the rootfs (/) private");
    }
}
