//! A process's limits, identity and privileges, applied in the order that
//! keeps each step possible: rlimits, the bounding set, supplementary
//! groups, gid, uid (keeping capabilities across the change), then the
//! effective/permitted/inheritable/ambient sets and no_new_privs. Any step
//! that fails fails the process, naming the step, as runc does.

use super::sys::Sys;
use crate::{Error, Result};
use caps::{CapSet, CapsHashSet};
use oci_spec::runtime::{PosixRlimitType, Process};

/// The kernel's resource for an OCI rlimit type, named one by one so a
/// type added to oci-spec fails to compile here instead of at run time.
pub fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType as T;
    match t {
        T::RlimitCpu => libc::RLIMIT_CPU,
        T::RlimitFsize => libc::RLIMIT_FSIZE,
        T::RlimitData => libc::RLIMIT_DATA,
        T::RlimitStack => libc::RLIMIT_STACK,
        T::RlimitCore => libc::RLIMIT_CORE,
        T::RlimitRss => libc::RLIMIT_RSS,
        T::RlimitNproc => libc::RLIMIT_NPROC,
        T::RlimitNofile => libc::RLIMIT_NOFILE,
        T::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        T::RlimitAs => libc::RLIMIT_AS,
        T::RlimitLocks => libc::RLIMIT_LOCKS,
        T::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        T::RlimitNice => libc::RLIMIT_NICE,
        T::RlimitRtprio => libc::RLIMIT_RTPRIO,
        T::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// The caps crate's capability for an OCI one (`None` if this build of
/// the crate does not know it).
pub fn to_caps(c: &oci_spec::runtime::Capability) -> Option<caps::Capability> {
    // oci-spec displays AUDIT_CONTROL, caps CAP_AUDIT_CONTROL.
    let name = format!("CAP_{c}");
    caps::all().into_iter().find(|k| k.to_string() == name)
}

fn set_of(s: &Option<oci_spec::runtime::Capabilities>) -> CapsHashSet {
    s.as_ref()
        .map(|v| v.iter().filter_map(to_caps).collect())
        .unwrap_or_default()
}

/// Refuses what the built-in runtime cannot apply, before anything runs
/// (an AppArmor profile it applies: see [`super::apparmor`]).
pub fn check_supported(p: &Process) -> Result<()> {
    if p.selinux_label().as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(Error::unimplemented(
            "SELinux labels (process.selinuxLabel) are not supported by the built-in runtime: use runc (BinaryName)",
        ));
    }
    Ok(())
}

pub fn apply_rlimits(sys: &dyn Sys, p: &Process) -> Result<()> {
    for r in p.rlimits().clone().unwrap_or_default() {
        sys.setrlimit(rlimit_resource(r.typ()), r.soft(), r.hard())
            .map_err(|e| Error::io(format!("set rlimit {}", r.typ()), e))?;
    }
    Ok(())
}

/// Drops from the bounding set what the spec does not list. Only what
/// this kernel knows: dropping a capability it does not know fails, and
/// it could not be held anyway.
pub fn apply_bounding(sys: &dyn Sys, p: &Process) -> Result<()> {
    let Some(bounding) = p.capabilities().as_ref().and_then(|c| c.bounding().clone()) else {
        return Ok(());
    };
    let keep: CapsHashSet = bounding.iter().filter_map(to_caps).collect();
    for cap in sys.supported_caps() {
        if !keep.contains(&cap) {
            sys.drop_bounding(cap)
                .map_err(|e| Error::io(format!("drop {cap} from the bounding set"), e))?;
        }
    }
    Ok(())
}

/// Supplementary groups, gid and uid; capabilities are kept across the
/// uid change so the spec's sets can be applied after it. In a user
/// namespace whose `setgroups` is `deny` (one made unprivileged and
/// joined) the groups are left alone, as runc does: the kernel refuses
/// any change.
pub fn apply_ids(sys: &dyn Sys, p: &Process) -> Result<()> {
    let user = p.user();
    let gids = user.additional_gids().clone().unwrap_or_default();
    sys.keep_caps(true)
        .map_err(|e| Error::io("set keep-capabilities", e))?;
    let denied = sys
        .read_file(std::path::Path::new("/proc/self/setgroups"))
        .is_ok_and(|s| s.trim() == "deny");
    if !denied {
        sys.setgroups(&gids)
            .map_err(|e| Error::io(format!("set supplementary groups {gids:?}"), e))?;
    }
    sys.setresgid(user.gid())
        .map_err(|e| Error::io(format!("set gid {}", user.gid()), e))?;
    sys.setresuid(user.uid())
        .map_err(|e| Error::io(format!("set uid {}", user.uid()), e))?;
    sys.keep_caps(false)
        .map_err(|e| Error::io("clear keep-capabilities", e))
}

/// The spec's effective, permitted, inheritable and ambient sets.
pub fn apply_caps(sys: &dyn Sys, p: &Process) -> Result<()> {
    let Some(c) = p.capabilities() else {
        return Ok(());
    };
    // Effective must stay within permitted at every step: shrink it first.
    for (set, name, caps) in [
        (CapSet::Effective, "effective", set_of(c.effective())),
        (CapSet::Permitted, "permitted", set_of(c.permitted())),
        (CapSet::Inheritable, "inheritable", set_of(c.inheritable())),
    ] {
        sys.set_caps(set, &caps)
            .map_err(|e| Error::io(format!("set {name} capabilities"), e))?;
    }
    let mut ambient: Vec<_> = set_of(c.ambient()).into_iter().collect();
    ambient.sort_by_key(|c| c.index());
    for a in ambient {
        sys.raise_ambient(a)
            .map_err(|e| Error::io(format!("raise ambient capability {a}"), e))?;
    }
    Ok(())
}

pub fn apply_no_new_privs(sys: &dyn Sys, p: &Process) -> Result<()> {
    if p.no_new_privileges().unwrap_or(false) {
        sys.no_new_privs()
            .map_err(|e| Error::io("set no_new_privs", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::sys::Fake;
    use super::*;
    use oci_spec::runtime::{
        Capability as C, LinuxCapabilitiesBuilder, PosixRlimitBuilder, ProcessBuilder, UserBuilder,
    };

    fn process() -> Process {
        let caps = |v: &[C]| v.iter().copied().collect::<std::collections::HashSet<_>>();
        ProcessBuilder::default()
            .args(vec!["sh".to_string()])
            .user(
                UserBuilder::default()
                    .uid(1000u32)
                    .gid(100u32)
                    .additional_gids(vec![10u32, 20])
                    .build()
                    .unwrap(),
            )
            .rlimits(vec![
                PosixRlimitBuilder::default()
                    .typ(PosixRlimitType::RlimitNofile)
                    .soft(1024u64)
                    .hard(4096u64)
                    .build()
                    .unwrap(),
            ])
            .capabilities(
                LinuxCapabilitiesBuilder::default()
                    .bounding(caps(&[C::Chown, C::Kill]))
                    .effective(caps(&[C::Chown]))
                    .permitted(caps(&[C::Chown, C::Kill]))
                    .inheritable(caps(&[]))
                    .ambient(caps(&[C::Kill]))
                    .build()
                    .unwrap(),
            )
            .no_new_privileges(true)
            .build()
            .unwrap()
    }

    #[test]
    fn rlimits_map_to_kernel_resources() {
        let sys = Fake::new();
        apply_rlimits(&sys, &process()).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![format!("setrlimit {} 1024 4096", libc::RLIMIT_NOFILE)]
        );
        assert_eq!(
            rlimit_resource(PosixRlimitType::RlimitCore),
            libc::RLIMIT_CORE
        );
        sys.fail("setrlimit", libc::EPERM);
        let e = apply_rlimits(&sys, &process()).unwrap_err();
        assert_eq!(e.message(), "set rlimit RLIMIT_NOFILE");
    }

    #[test]
    fn bounding_set_drops_only_what_is_not_listed() {
        let mut sys = Fake::new();
        sys.caps = vec![
            caps::Capability::CAP_CHOWN,
            caps::Capability::CAP_KILL,
            caps::Capability::CAP_SYS_ADMIN,
            caps::Capability::CAP_NET_RAW,
        ];
        apply_bounding(&sys, &process()).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "drop_bounding CAP_SYS_ADMIN".to_string(),
                "drop_bounding CAP_NET_RAW".to_string()
            ]
        );
    }

    #[test]
    fn ids_in_order_with_caps_kept_across() {
        let sys = Fake::new();
        apply_ids(&sys, &process()).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "keep_caps true",
                "setgroups [10, 20]",
                "setresgid 100",
                "setresuid 1000",
                "keep_caps false"
            ]
        );
        // `allow` (what the shim leaves) changes nothing; `deny` skips.
        for (setgroups, want) in [("allow\n", 1), ("deny\n", 0)] {
            let sys = Fake::new();
            sys.files
                .borrow_mut()
                .insert("/proc/self/setgroups".into(), setgroups.into());
            apply_ids(&sys, &process()).unwrap();
            assert_eq!(sys.calls_of("setgroups").len(), want, "{setgroups}");
            assert_eq!(sys.calls_of("setresuid 1000").len(), 1);
        }
        let sys = Fake::new();
        sys.fail("setresuid", libc::EPERM);
        let e = apply_ids(&sys, &process()).unwrap_err();
        assert_eq!(e.message(), "set uid 1000");
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::PermissionDenied);
    }

    #[test]
    fn capability_sets_effective_first_then_ambient() {
        let sys = Fake::new();
        apply_caps(&sys, &process()).unwrap();
        apply_no_new_privs(&sys, &process()).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                "set_caps Effective CAP_CHOWN",
                "set_caps Permitted CAP_CHOWN,CAP_KILL",
                "set_caps Inheritable ",
                "raise_ambient CAP_KILL",
                "no_new_privs"
            ]
        );
        let sys = Fake::new();
        sys.fail("raise_ambient", libc::EPERM);
        let e = apply_caps(&sys, &process()).unwrap_err();
        assert_eq!(e.message(), "raise ambient capability CAP_KILL");
    }

    #[test]
    fn selinux_labels_are_refused_apparmor_profiles_are_not() {
        let mut p = process();
        p.set_selinux_label(Some("system_u:system_r:container_t:s0".into()));
        let e = check_supported(&p).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::Unimplemented);
        assert!(e.message().contains("process.selinuxLabel"), "{e}");
        let mut p = process();
        p.set_apparmor_profile(Some("docker-default".into()));
        assert!(check_supported(&p).is_ok());
        assert!(check_supported(&process()).is_ok());
    }
}
