//! A CRI container's security context turned into the parts of its OCI
//! spec, with containerd's CRI semantics: the user (resolved in the image's
//! /etc/passwd and /etc/group), capabilities, seccomp and AppArmor.

use crate::error::{Error, Result};
use berth_proto::cri::{self, LinuxContainerSecurityContext, SecurityProfile};
use berth_proto::userdb::{self, Groups, User};
use serde_json::Value;
use std::sync::OnceLock;

use berth_proto::capabilities::DEFAULT_CAPS;

/// Every capability by number (linux/capability.h).
const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// What "ALL" and privileged mean: the capabilities this kernel knows that
/// berthd itself has (effective), as containerd's CRI takes the daemon's
/// own set — a capability berthd lacks (here CAP_SYS_RESOURCE, when its
/// bounding set lacks it) could not be given and would fail the start.
/// Read once: neither the kernel's list nor berthd's set changes while it
/// runs.
pub fn all_caps() -> Vec<String> {
    static ALL: OnceLock<Vec<String>> = OnceLock::new();
    ALL.get_or_init(|| {
        let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(CAP_NAMES.len() - 1);
        let eff = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(u64::MAX);
        CAP_NAMES
            .iter()
            .enumerate()
            .take(last + 1)
            .filter(|(i, _)| eff & (1u64 << i) != 0)
            .map(|(_, s)| s.to_string())
            .collect()
    })
    .clone()
}

/// The capability set after the context's add/drop lists (containerd: "ALL"
/// in add grants every one, in drop starts from none; then the named ones
/// are added, then dropped).
pub fn capabilities(sc: Option<&LinuxContainerSecurityContext>) -> Result<Vec<String>> {
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) else {
        return Ok(caps);
    };
    if !c.add_ambient_capabilities.is_empty() {
        return Err(Error::invalid(
            "linux.security_context.capabilities.add_ambient_capabilities: ambient capabilities are not supported",
        ));
    }
    let is_all = |s: &String| s.eq_ignore_ascii_case("ALL");
    if c.add_capabilities.iter().any(is_all) {
        caps = all_caps();
    }
    if c.drop_capabilities.iter().any(is_all) {
        caps.clear();
    }
    let name = |s: &String| -> Result<String> {
        let n = format!("CAP_{}", s.to_ascii_uppercase().trim_start_matches("CAP_"));
        if CAP_NAMES.contains(&n.as_str()) {
            Ok(n)
        } else {
            Err(Error::invalid(format!(
                "linux.security_context.capabilities: unknown capability {s:?}"
            )))
        }
    };
    for a in c.add_capabilities.iter().filter(|s| !is_all(s)) {
        let n = name(a)?;
        if !caps.contains(&n) {
            caps.push(n);
        }
    }
    for d in c.drop_capabilities.iter().filter(|s| !is_all(s)) {
        let n = name(d)?;
        caps.retain(|c| *c != n);
    }
    Ok(caps)
}

/// The user the process runs as, as containerd's CRI spells it from the
/// context (`USER[:GROUP]`), or `None` for the image's.
pub fn user_string(sc: Option<&LinuxContainerSecurityContext>) -> Result<Option<String>> {
    let Some(sc) = sc else { return Ok(None) };
    let mut user = sc.run_as_user.as_ref().map(|u| u.value.to_string());
    if !sc.run_as_username.is_empty() {
        user = Some(sc.run_as_username.clone());
    }
    let group = sc.run_as_group.as_ref().map(|g| g.value.to_string());
    match (user, group) {
        (None, Some(g)) => Err(Error::invalid(format!(
            "linux.security_context.run_as_group {g} is set without run_as_user or run_as_username"
        ))),
        (None, None) => Ok(None),
        (Some(u), None) => Ok(Some(u)),
        (Some(u), Some(g)) => Ok(Some(format!("{u}:{g}"))),
    }
}

/// Resolves `spec` (`USER[:GROUP]`, names or numbers) in the image's files
/// (`None`: absent) with containerd's CRI rules (`berth_proto::userdb`;
/// `strict`: SupplementalGroupsPolicy Strict, no memberships from the
/// image's /etc/group), then adds `supplemental`; the additional gids are
/// sorted.
pub fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
    supplemental: &[i64],
    strict: bool,
) -> Result<User> {
    let rules = if strict {
        Groups::CriStrict
    } else {
        Groups::Cri
    };
    let mut user = userdb::resolve(spec, passwd, group, rules)
        .map_err(|e| Error::invalid(format!("user {spec:?}: {e}")))?;
    for s in supplemental {
        let n = u32::try_from(*s).map_err(|_| {
            Error::invalid(format!(
                "linux.security_context.supplemental_groups: {s} is not a group id"
            ))
        })?;
        user.additional_gids.push(n);
    }
    user.additional_gids.sort_unstable();
    user.additional_gids.dedup();
    Ok(user)
}

/// The profile asked for: the structured field, else the deprecated path
/// (`runtime/default`, `docker/default`, `unconfined`, `localhost/<path>`).
fn profile(
    sp: Option<&SecurityProfile>,
    path: &str,
    field: &str,
) -> Result<Option<SecurityProfile>> {
    use cri::security_profile::ProfileType;
    if let Some(sp) = sp {
        if sp.profile_type != ProfileType::Localhost as i32 && !sp.localhost_ref.is_empty() {
            return Err(Error::invalid(format!(
                "linux.security_context.{field}: localhost_ref is only for the Localhost profile type"
            )));
        }
        return Ok(Some(sp.clone()));
    }
    let typ = |t: ProfileType, r: &str| SecurityProfile {
        profile_type: t as i32,
        localhost_ref: r.to_string(),
    };
    Ok(match path {
        "" => None,
        "runtime/default" | "docker/default" => Some(typ(ProfileType::RuntimeDefault, "")),
        "unconfined" => Some(typ(ProfileType::Unconfined, "")),
        p => match p.strip_prefix("localhost/") {
            Some(r) => Some(typ(ProfileType::Localhost, r)),
            None => {
                return Err(Error::invalid(format!(
                    "linux.security_context.{field}_profile_path: invalid profile {p:?}"
                )));
            }
        },
    })
}

/// The spec's `linux.seccomp` for the context (`None`: unconfined). As
/// containerd: privileged and unset mean no filter; RuntimeDefault is
/// containerd's default profile for the bounding set; Localhost reads the
/// profile file (an absolute path on the host).
pub fn seccomp(
    sc: Option<&LinuxContainerSecurityContext>,
    bounding: &[String],
) -> Result<Option<Value>> {
    use cri::security_profile::ProfileType;
    let Some(sc) = sc else { return Ok(None) };
    #[allow(deprecated)]
    let path = sc.seccomp_profile_path.as_str();
    let Some(p) = profile(sc.seccomp.as_ref(), path, "seccomp")? else {
        return Ok(None);
    };
    if sc.privileged {
        return Ok(None);
    }
    match ProfileType::try_from(p.profile_type) {
        Ok(ProfileType::Unconfined) => Ok(None),
        Ok(ProfileType::RuntimeDefault) => Ok(Some(super::seccomp_default::profile(bounding))),
        Ok(ProfileType::Localhost) => {
            let file = p.localhost_ref.trim_start_matches("localhost/");
            let text = std::fs::read(file).map_err(|e| {
                Error::with_source(
                    berth_proto::errdefs::Kind::InvalidArgument,
                    format!("linux.security_context.seccomp: read the Localhost profile {file:?}"),
                    e,
                )
            })?;
            // Checked against the spec's shape now, not at start.
            let parsed: oci_spec::runtime::LinuxSeccomp = serde_json::from_slice(&text)
                .map_err(|e| {
                    Error::invalid(format!(
                        "linux.security_context.seccomp: the Localhost profile {file:?} is not a seccomp profile: {e}"
                    ))
                })?;
            serde_json::to_value(parsed)
                .map(Some)
                .map_err(|e| Error::internal(format!("seccomp profile: {e}")))
        }
        Err(_) => Err(Error::invalid(format!(
            "linux.security_context.seccomp: unknown profile type {}",
            p.profile_type
        ))),
    }
}

/// AppArmor: this host has none, so only Unconfined (or nothing) is
/// accepted, as containerd does where AppArmor is disabled.
pub fn check_apparmor(sc: Option<&LinuxContainerSecurityContext>) -> Result<()> {
    use cri::security_profile::ProfileType;
    let Some(sc) = sc else { return Ok(()) };
    #[allow(deprecated)]
    let path = sc.apparmor_profile.as_str();
    let Some(p) = profile(sc.apparmor.as_ref(), path, "apparmor")? else {
        return Ok(());
    };
    if p.profile_type == ProfileType::Unconfined as i32 {
        return Ok(());
    }
    if apparmor_enabled() {
        return Err(Error::unimplemented(
            "linux.security_context.apparmor: AppArmor profiles are not supported by berth",
        ));
    }
    Err(Error::invalid(
        "linux.security_context.apparmor: AppArmor is not enabled on this host; only Unconfined is accepted",
    ))
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::cri::{Capability, Int64Value};

    #[test]
    fn users_resolve_as_containerd() {
        const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1001::/srv:/bin/sh\n";
        const GROUP: &str = "root:x:0:\nweb:x:1001:web\nwheel:x:10:root,web\n";
        let r = |s: &str, sup: &[i64]| resolve_user(s, Some(PASSWD), Some(GROUP), sup, false);
        // The supplemental groups join the image's memberships, sorted.
        assert_eq!(
            r("web", &[5, 1001, 5]).unwrap(),
            User {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![5, 10, 1001]
            }
        );
        assert_eq!(r("4242", &[7]).unwrap().additional_gids, [0, 7]);
        let e = r("ghost", &[]).unwrap_err();
        assert!(e.to_string().contains("no user \"ghost\""), "{e}");
        assert!(r("web", &[-1]).is_err());
        // Strict: the primary gid and the supplemental ones, not wheel.
        let strict = resolve_user("web", Some(PASSWD), Some(GROUP), &[1234], true).unwrap();
        assert_eq!(strict.additional_gids, [1001, 1234]);
    }

    #[test]
    fn user_string_follows_the_context() {
        let mut sc = LinuxContainerSecurityContext::default();
        assert_eq!(user_string(Some(&sc)).unwrap(), None);
        sc.run_as_group = Some(Int64Value { value: 3 });
        assert!(user_string(Some(&sc)).is_err());
        sc.run_as_user = Some(Int64Value { value: 1000 });
        assert_eq!(user_string(Some(&sc)).unwrap().unwrap(), "1000:3");
        sc.run_as_username = "web".into();
        assert_eq!(user_string(Some(&sc)).unwrap().unwrap(), "web:3");
    }

    #[test]
    fn capabilities_add_and_drop() {
        let sc = |add: &[&str], drop: &[&str]| LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                add_ambient_capabilities: vec![],
            }),
            ..Default::default()
        };
        assert_eq!(capabilities(None).unwrap().len(), DEFAULT_CAPS.len());
        let c = capabilities(Some(&sc(&["sys_admin"], &["CHOWN"]))).unwrap();
        assert!(c.contains(&"CAP_SYS_ADMIN".into()) && !c.contains(&"CAP_CHOWN".into()));
        assert_eq!(
            capabilities(Some(&sc(&["NET_ADMIN"], &["ALL"]))).unwrap(),
            ["CAP_NET_ADMIN"]
        );
        let all = capabilities(Some(&sc(&["ALL"], &["KILL"]))).unwrap();
        assert!(all.contains(&"CAP_SYS_MODULE".into()) && !all.contains(&"CAP_KILL".into()));
        assert!(capabilities(Some(&sc(&["NOPE"], &[]))).is_err());
    }

    #[test]
    fn seccomp_profiles() {
        use cri::security_profile::ProfileType;
        let sc = |t: ProfileType, r: &str| LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        };
        let caps = vec!["CAP_CHOWN".to_string()];
        assert!(
            seccomp(Some(&LinuxContainerSecurityContext::default()), &caps)
                .unwrap()
                .is_none()
        );
        assert!(
            seccomp(Some(&sc(ProfileType::Unconfined, "")), &caps)
                .unwrap()
                .is_none()
        );
        let d = seccomp(Some(&sc(ProfileType::RuntimeDefault, "")), &caps)
            .unwrap()
            .unwrap();
        assert_eq!(d["defaultAction"], "SCMP_ACT_ERRNO");
        let mut p = sc(ProfileType::RuntimeDefault, "");
        p.privileged = true;
        assert!(seccomp(Some(&p), &caps).unwrap().is_none());
        assert!(seccomp(Some(&sc(ProfileType::RuntimeDefault, "x")), &caps).is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.json");
        std::fs::write(&f, r#"{"defaultAction":"SCMP_ACT_LOG"}"#).unwrap();
        let l = seccomp(
            Some(&sc(ProfileType::Localhost, f.to_str().unwrap())),
            &caps,
        )
        .unwrap()
        .unwrap();
        assert_eq!(l["defaultAction"], "SCMP_ACT_LOG");
        std::fs::write(&f, "{").unwrap();
        assert!(
            seccomp(
                Some(&sc(ProfileType::Localhost, f.to_str().unwrap())),
                &caps
            )
            .is_err()
        );
        // The deprecated path form.
        #[allow(deprecated)]
        let old = LinuxContainerSecurityContext {
            seccomp_profile_path: "runtime/default".into(),
            ..Default::default()
        };
        assert!(seccomp(Some(&old), &caps).unwrap().is_some());
    }

    #[test]
    fn apparmor_only_unconfined_without_apparmor() {
        use cri::security_profile::ProfileType;
        if apparmor_enabled() {
            return;
        }
        let sc = |t: ProfileType| LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        };
        assert!(check_apparmor(None).is_ok());
        assert!(check_apparmor(Some(&sc(ProfileType::Unconfined))).is_ok());
        let e = check_apparmor(Some(&sc(ProfileType::RuntimeDefault))).unwrap_err();
        assert!(e.to_string().contains("AppArmor is not enabled"), "{e}");
    }
}
