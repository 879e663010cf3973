//! /dev in a new container: the default character devices, the spec's
//! devices, and the standard links, unless the host's /dev is bound in.

use super::mounts::{mkdir_p, secure_join};
use super::sys::Sys;
use crate::{Error, Result};
use nix::sys::stat::SFlag;
use oci_spec::runtime::Spec;
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

fn make(sys: &dyn Sys, p: &Path, kind: SFlag, mode: u32, maj: u64, min: u64) -> Result<()> {
    // Usually absent; one that cannot be removed makes mknod say why.
    sys.remove_file(p)
        .map_err(|e| Error::io(format!("remove {}", p.display()), e))?;
    sys.mknod(p, kind, mode, nix::sys::stat::makedev(maj, min))
        .map_err(|e| Error::io(format!("create device {}", p.display()), e))
}

/// Creates the device nodes and links under `rootfs`/dev.
pub fn setup(sys: &dyn Sys, rootfs: &Path, spec: &Spec) -> Result<()> {
    let dev = rootfs.join("dev");
    mkdir_p(sys, &dev)?;
    for (name, maj, min) in DEFAULT_DEVICES {
        let p = dev.join(name);
        make(sys, &p, SFlag::S_IFCHR, 0o666, *maj, *min)?;
        // mknod honours the umask; set the mode it should have.
        sys.chmod(&p, 0o666)
            .map_err(|e| Error::io(format!("chmod {}", p.display()), e))?;
    }
    for d in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default()
    {
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
        make(
            sys,
            &p,
            kind,
            mode,
            device_number(d.major(), "major", d.path())?,
            device_number(d.minor(), "minor", d.path())?,
        )?;
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
        sys.fail("mknod /r/dev/zero", libc::EPERM);
        let e = setup(&sys, Path::new("/r"), &Spec::default()).unwrap_err();
        assert_eq!(e.message(), "create device /r/dev/zero");
    }
}
