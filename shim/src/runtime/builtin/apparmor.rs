//! `process.apparmorProfile`, applied as runc applies it: `exec <profile>`
//! written to the process's own `attr/apparmor/exec` (`attr/exec` on
//! kernels without the per-LSM directory), so the kernel confines the
//! process from its next execve — the container's program. Written in the
//! container (its /proc), after the identity changes and before the
//! program is looked up, as runc's exec does; the file must be on procfs
//! ([`Sys::write`]: a container image cannot put a file of its own there).
//!
//! runc tries the write whether or not AppArmor is enabled, and a host
//! without it refuses the write (`EINVAL`), which fails the create; so does
//! this, saying that AppArmor is not enabled ([`enabled`] is runc's test).

use super::sys::Sys;
use crate::{Error, Result};
use berth_proto::errdefs::Kind;
use std::path::Path;

/// The per-LSM file (Linux 5.8 and later).
const EXEC: &str = "/proc/self/attr/apparmor/exec";
/// The old convention, shared by every LSM.
const EXEC_OLD: &str = "/proc/self/attr/exec";

/// Whether AppArmor is enabled on this host, as runc judges it: its
/// securityfs directory exists and the module says `Y`.
pub fn enabled(sys: &dyn Sys) -> bool {
    sys.kind(Path::new("/sys/kernel/security/apparmor"))
        .is_some()
        && sys
            .read_file(Path::new("/sys/module/apparmor/parameters/enabled"))
            .is_ok_and(|s| s.starts_with('Y'))
}

/// Asks the kernel to confine this process with `profile` from its next
/// execve. No profile (or an empty one): nothing to do.
pub fn apply(sys: &dyn Sys, profile: Option<&str>) -> Result<()> {
    let Some(profile) = profile.filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let path = if sys.kind(Path::new(EXEC)).is_some() {
        EXEC
    } else {
        EXEC_OLD
    };
    sys.write(Path::new(path), &format!("exec {profile}"))
        .map_err(|e| {
            let what = format!(
                "apply AppArmor profile {profile:?} (process.apparmorProfile): write {path}"
            );
            if enabled(sys) {
                Error::io(what, e)
            } else {
                Error::caused(
                    Kind::FailedPrecondition,
                    format!("{what} (AppArmor is not enabled on this host)"),
                    e,
                )
            }
        })
}

#[cfg(test)]
mod tests {
    use super::super::sys::{Fake, Kind as PathKind};
    use super::*;

    fn apparmor_host(sys: &Fake) {
        sys.with("/sys/kernel/security/apparmor", PathKind::Dir);
        sys.files.borrow_mut().insert(
            "/sys/module/apparmor/parameters/enabled".into(),
            "Y\n".into(),
        );
    }

    #[test]
    fn the_profile_is_written_for_the_next_exec_to_the_per_lsm_file() {
        let sys = Fake::new();
        apparmor_host(&sys);
        sys.with(EXEC, PathKind::File);
        apply(&sys, Some("docker-default")).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec!["write /proc/self/attr/apparmor/exec exec docker-default"]
        );
        // Without the per-LSM directory, the old file.
        let sys = Fake::new();
        apparmor_host(&sys);
        apply(&sys, Some("my profile")).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec!["write /proc/self/attr/exec exec my profile"]
        );
        // No profile, or an empty one: nothing written.
        for p in [None, Some("")] {
            let sys = Fake::new();
            apply(&sys, p).unwrap();
            assert!(sys.calls.borrow().is_empty(), "{p:?}");
        }
    }

    #[test]
    fn a_refused_write_fails_and_says_whether_apparmor_is_enabled() {
        // This host's case: no AppArmor, the kernel refuses the write.
        let sys = Fake::new();
        sys.fail("write /proc/self/attr", libc::EINVAL);
        let e = apply(&sys, Some("p")).unwrap_err();
        assert_eq!(e.kind(), Kind::FailedPrecondition);
        assert_eq!(
            e.message(),
            "apply AppArmor profile \"p\" (process.apparmorProfile): write /proc/self/attr/exec (AppArmor is not enabled on this host)"
        );
        assert!(e.chain().contains("Invalid argument"), "{}", e.chain());
        assert!(!enabled(&sys));
        // Enabled, but the profile is not loaded: the kernel's answer.
        let sys = Fake::new();
        apparmor_host(&sys);
        sys.with(EXEC, PathKind::File);
        sys.fail("write /proc/self/attr", libc::ENOENT);
        let e = apply(&sys, Some("absent")).unwrap_err();
        assert_eq!(e.kind(), Kind::NotFound);
        assert!(!e.message().contains("not enabled"), "{e}");
        assert!(enabled(&sys));
        // A module that says N is not enabled.
        let sys = Fake::new();
        apparmor_host(&sys);
        sys.files.borrow_mut().insert(
            "/sys/module/apparmor/parameters/enabled".into(),
            "N\n".into(),
        );
        assert!(!enabled(&sys));
    }
}
