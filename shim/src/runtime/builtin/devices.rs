//! /dev in a new container: the default character devices, the spec's
//! devices, and the standard links, unless the host's /dev is bound in.
//! In a user namespace mknod is not allowed (it needs CAP_MKNOD in the
//! host's), so each node is the host's, bound onto an empty file, as runc
//! does (runc also binds when mknod is refused for lack of permission).

use super::mounts::{mkdir_p, secure_join};
use super::namespaces;
use super::sys::Sys;
use crate::{Error, Result};
use nix::mount::MsFlags;
use nix::sys::stat::SFlag;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::path::Path;

/// Devices every container gets (name, major, minor), as runc.
pub const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Links made unless something is at their path already.
const LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// A device's major or minor number; a negative one is a broken spec.
fn device_number(n: i64, what: &str, path: &Path) -> Result<u64> {
    u64::try_from(n)
        .map_err(|_| Error::invalid(format!("device {}: {what} number {n}", path.display())))
}

/// How a device node came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Made {
    Node,
    /// The host's node bound on: its mode and owner are the host's.
    Bound,
}

/// Makes the node `p` (the container's `path`): mknod, or the host's node
/// at `path` bound on when `bind` or mknod is refused for permission.
fn make(
    sys: &dyn Sys,
    p: &Path,
    path: &Path,
    node: (SFlag, u32, u64, u64),
    bind: bool,
) -> Result<Made> {
    let (kind, mode, maj, min) = node;
    if !bind {
        // Usually absent; one that cannot be removed makes mknod say why.
        sys.remove_file(p)
            .map_err(|e| Error::io(format!("remove {}", p.display()), e))?;
        match sys.mknod(p, kind, mode, nix::sys::stat::makedev(maj, min)) {
            Ok(()) => return Ok(Made::Node),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {}
            Err(e) => return Err(Error::io(format!("create device {}", p.display()), e)),
        }
    }
    if sys.kind(p).is_none() {
        sys.create_file(p)
            .map_err(|e| Error::io(format!("create {}", p.display()), e))?;
    }
    sys.mount(Some(path), p, None, MsFlags::MS_BIND, None)
        .map_err(|e| Error::io(format!("bind device {} from the host", path.display()), e))?;
    Ok(Made::Bound)
}

/// Creates the device nodes and links under `rootfs`/dev.
pub fn setup(sys: &dyn Sys, rootfs: &Path, spec: &Spec) -> Result<()> {
    let dev = rootfs.join("dev");
    mkdir_p(sys, &dev)?;
    let bind = namespaces::of(spec)
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User);
    for (name, maj, min) in DEFAULT_DEVICES {
        let p = dev.join(name);
        let host = Path::new("/dev").join(name);
        let node = (SFlag::S_IFCHR, 0o666, *maj, *min);
        if make(sys, &p, &host, node, bind)? == Made::Node {
            // mknod honours the umask; set the mode it should have.
            sys.chmod(&p, 0o666)
                .map_err(|e| Error::io(format!("chmod {}", p.display()), e))?;
        }
    }
    for d in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default()
    {
        // runc leaves /dev/ptmx to the link below; a host node bound there
        // could not be replaced by it.
        if bind && d.path() == Path::new("/dev/ptmx") {
            continue;
        }
        let p = secure_join(rootfs, d.path());
        if let Some(parent) = p.parent() {
            mkdir_p(sys, parent)?;
        }
        let kind = match d.typ().as_str() {
            "b" => SFlag::S_IFBLK,
            "p" => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let mode = d.file_mode().unwrap_or(0o666);
        let node = (
            kind,
            mode,
            device_number(d.major(), "major", d.path())?,
            device_number(d.minor(), "minor", d.path())?,
        );
        if make(sys, &p, d.path(), node, bind)? == Made::Bound {
            continue;
        }
        // The spec's mode, whatever the umask (runc makes nodes under 0).
        sys.chmod(&p, mode)
            .map_err(|e| Error::io(format!("chmod {}", p.display()), e))?;
        let (uid, gid) = (d.uid().unwrap_or(0), d.gid().unwrap_or(0));
        sys.chown(&p, uid, gid)
            .map_err(|e| Error::io(format!("chown {}", p.display()), e))?;
    }
    for (link, target) in LINKS {
        let p = dev.join(link);
        sys.symlink(Path::new(target), &p)
            .map_err(|e| Error::io(format!("symlink {}", p.display()), e))?;
    }
    // /dev/ptmx is always the devpts one, even when the spec lists a node
    // for it (as --privileged does): runc replaces it.
    let ptmx = dev.join("ptmx");
    sys.remove_file(&ptmx)
        .map_err(|e| Error::io(format!("remove {}", ptmx.display()), e))?;
    sys.symlink(Path::new("pts/ptmx"), &ptmx)
        .map_err(|e| Error::io(format!("symlink {}", ptmx.display()), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::sys::Fake;
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxDeviceBuilder, LinuxDeviceType, SpecBuilder};

    fn spec_with(dev: oci_spec::runtime::LinuxDevice) -> Spec {
        SpecBuilder::default()
            .linux(LinuxBuilder::default().devices(vec![dev]).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn default_devices_links_and_spec_devices() {
        let sys = Fake::new();
        let fuse = LinuxDeviceBuilder::default()
            .path("/dev/fuse")
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(229)
            .file_mode(0o620u32)
            .uid(5u32)
            .gid(6u32)
            .build()
            .unwrap();
        setup(&sys, Path::new("/r"), &spec_with(fuse)).unwrap();
        let nodes = sys.calls_of("mknod");
        assert_eq!(nodes.len(), DEFAULT_DEVICES.len() + 1);
        assert_eq!(nodes[0], "mknod /r/dev/null S_IFCHR 666 1:3");
        assert_eq!(nodes[5], "mknod /r/dev/tty S_IFCHR 666 5:0");
        assert_eq!(nodes[6], "mknod /r/dev/fuse S_IFCHR 620 10:229");
        assert_eq!(sys.calls_of("chmod").len(), DEFAULT_DEVICES.len() + 1);
        assert_eq!(
            sys.calls_of("chmod /r/dev/fuse"),
            vec!["chmod /r/dev/fuse 620"]
        );
        assert_eq!(sys.calls_of("chown"), vec!["chown /r/dev/fuse 5:6"]);
        assert!(
            sys.calls_of("symlink")
                .contains(&"symlink /r/dev/ptmx pts/ptmx".to_string())
        );
    }

    #[test]
    fn spec_ptmx_node_is_replaced_by_the_devpts_link() {
        let sys = Fake::new();
        let ptmx = LinuxDeviceBuilder::default()
            .path("/dev/ptmx")
            .typ(LinuxDeviceType::C)
            .major(5)
            .minor(2)
            .build()
            .unwrap();
        setup(&sys, Path::new("/r"), &spec_with(ptmx)).unwrap();
        // Made as the spec says (0666 by default), then replaced.
        assert_eq!(
            sys.calls_of("chmod /r/dev/ptmx"),
            vec!["chmod /r/dev/ptmx 666"]
        );
        let calls = sys.calls.borrow().clone();
        let tail: Vec<_> = calls[calls.len() - 2..].to_vec();
        assert_eq!(tail, vec!["rm /r/dev/ptmx", "symlink /r/dev/ptmx pts/ptmx"]);
    }

    #[test]
    fn negative_device_numbers_and_failed_mknod_fail_setup() {
        let bad = LinuxDeviceBuilder::default()
            .path("/dev/x")
            .typ(LinuxDeviceType::B)
            .major(-1)
            .minor(0)
            .build()
            .unwrap();
        let e = setup(&Fake::new(), Path::new("/r"), &spec_with(bad)).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::InvalidArgument);
        assert!(e.message().contains("major number -1"), "{e}");
        let sys = Fake::new();
        sys.fail("mknod /r/dev/zero", libc::EROFS);
        let e = setup(&sys, Path::new("/r"), &Spec::default()).unwrap_err();
        assert_eq!(e.message(), "create device /r/dev/zero");
    }

    #[test]
    fn a_refused_mknod_binds_the_hosts_node_as_runc() {
        let sys = Fake::new();
        sys.fail("mknod /r/dev/zero", libc::EPERM);
        setup(&sys, Path::new("/r"), &Spec::default()).unwrap();
        let zero: Vec<_> = sys
            .calls
            .borrow()
            .iter()
            .filter(|c| c.contains("/r/dev/zero"))
            .cloned()
            .collect();
        assert_eq!(
            zero,
            vec![
                "rm /r/dev/zero",
                "mknod /r/dev/zero S_IFCHR 666 1:5",
                "create /r/dev/zero",
                "mount /dev/zero /r/dev/zero - MS_BIND -",
            ]
        );
        assert_eq!(sys.calls_of("mknod").len(), DEFAULT_DEVICES.len());
    }

    #[test]
    fn in_a_user_namespace_every_node_is_the_hosts_bound_on() {
        use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType};
        let fuse = LinuxDeviceBuilder::default()
            .path("/dev/fuse")
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(229)
            .file_mode(0o620u32)
            .build()
            .unwrap();
        let ptmx = LinuxDeviceBuilder::default()
            .path("/dev/ptmx")
            .typ(LinuxDeviceType::C)
            .major(5)
            .minor(2)
            .build()
            .unwrap();
        let mut spec = spec_with(fuse);
        let mut l = spec.linux().clone().unwrap();
        let mut devs = l.devices().clone().unwrap();
        devs.push(ptmx);
        l.set_devices(Some(devs));
        l.set_namespaces(Some(vec![
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()
                .unwrap(),
        ]));
        spec.set_linux(Some(l));
        let sys = Fake::new();
        setup(&sys, Path::new("/r"), &spec).unwrap();
        assert!(sys.calls_of("mknod").is_empty());
        assert!(sys.calls_of("chmod").is_empty(), "the host's mode");
        assert!(sys.calls_of("chown").is_empty(), "the host's owner");
        let binds = sys.calls_of("mount");
        assert_eq!(binds.len(), DEFAULT_DEVICES.len() + 1, "{binds:?}");
        assert_eq!(binds[0], "mount /dev/null /r/dev/null - MS_BIND -");
        assert_eq!(binds[6], "mount /dev/fuse /r/dev/fuse - MS_BIND -");
        assert_eq!(sys.calls_of("create").len(), DEFAULT_DEVICES.len() + 1);
        let calls = sys.calls.borrow().clone();
        assert_eq!(
            calls[calls.len() - 2..],
            ["rm /r/dev/ptmx", "symlink /r/dev/ptmx pts/ptmx"]
        );
        let sys = Fake::new();
        sys.fail("mount /dev/fuse", libc::ENOENT);
        let e = setup(&sys, Path::new("/r"), &spec).unwrap_err();
        assert_eq!(e.message(), "bind device /dev/fuse from the host");
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::NotFound);
    }
}
