//! The OCI spec of a pod's infra container, as containerd's CRI makes it
//! (`sandboxContainerSpec`): the image's entrypoint, a read-only rootfs,
//! the pod's namespaces, cgroup, sysctls, user, /dev/shm and name files.
//! What berthd cannot honour is refused, naming the field.

use crate::error::{Error, Result};
use berth_proto::cri;
use berth_proto::labels::{PortMapping, Protocol};
use serde_json::{Value, json};
use std::path::Path;

// containerd's default capabilities (`oci.populateDefaultUnixSpec`), the
// same as a container's.
use berth_proto::capabilities::DEFAULT_CAPS;

/// containerd's sandbox CPU shares and OOM score.
const SANDBOX_CPU_SHARES: u64 = 2;
const SANDBOX_OOM_SCORE_ADJ: i64 = -998;

/// The namespace modes of a pod (NODE = the host's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Modes {
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
}

fn sc(config: &cri::PodSandboxConfig) -> Option<&cri::LinuxSandboxSecurityContext> {
    config.linux.as_ref()?.security_context.as_ref()
}

/// The pod's namespace modes; TARGET and user namespaces are refused.
pub fn modes(config: &cri::PodSandboxConfig) -> Result<Modes> {
    let Some(ns) = sc(config).and_then(|s| s.namespace_options.as_ref()) else {
        return Ok(Modes::default());
    };
    let node = cri::NamespaceMode::Node as i32;
    let target = cri::NamespaceMode::Target as i32;
    for (f, m) in [("network", ns.network), ("pid", ns.pid), ("ipc", ns.ipc)] {
        if m == target {
            return Err(Error::invalid(format!(
                "linux.security_context.namespace_options.{f}: TARGET is not valid for a pod sandbox"
            )));
        }
    }
    if let Some(u) = &ns.userns_options
        && u.mode != node
    {
        return Err(Error::unimplemented(
            "linux.security_context.namespace_options.userns_options: pod user namespaces are not supported by berthd",
        ));
    }
    Ok(Modes {
        host_network: ns.network == node,
        host_pid: ns.pid == node,
        host_ipc: ns.ipc == node,
    })
}

/// The port mappings the pod publishes (host port 0 = none, as containerd).
pub fn port_mappings(config: &cri::PodSandboxConfig) -> Result<Vec<PortMapping>> {
    let mut out = Vec::new();
    for (i, p) in config.port_mappings.iter().enumerate() {
        let bad = |why: String| Error::invalid(format!("port_mappings[{i}]: {why}"));
        if p.host_port == 0 {
            continue;
        }
        let protocol = match cri::Protocol::try_from(p.protocol) {
            Ok(cri::Protocol::Tcp) => Protocol::Tcp,
            Ok(cri::Protocol::Udp) => Protocol::Udp,
            _ => return Err(bad("only TCP and UDP ports can be published".into())),
        };
        let port = |v: i32, f: &str| {
            u16::try_from(v)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(format!("{f} {v} is not a port number")))
        };
        let host_ip = match p.host_ip.as_str() {
            "" | "0.0.0.0" => None,
            s => Some(
                s.parse()
                    .map_err(|_| bad(format!("host_ip {s:?} is not an IPv4 address")))?,
            ),
        };
        out.push(PortMapping {
            host_ip,
            host_port: port(p.host_port, "host_port")?,
            container_port: port(p.container_port, "container_port")?,
            protocol,
        });
    }
    Ok(out)
}

/// `cgroupsPath` of the pod: `<cgroup_parent>/<id>` (cgroupfs driver), or
/// containerd's default `/k8s.io/<id>` without a parent.
pub fn cgroups_path(config: &cri::PodSandboxConfig, id: &str) -> Result<String> {
    let parent = config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.as_str())
        .unwrap_or_default();
    if parent.is_empty() {
        return Ok(format!("/{}/{id}", super::NAMESPACE));
    }
    if parent.trim_end_matches('/').ends_with(".slice") {
        return Err(Error::invalid(format!(
            "linux.cgroup_parent {parent:?} is a systemd slice: berthd uses the cgroupfs driver \
             (RuntimeConfig says CGROUPFS); configure the kubelet with cgroupDriver: cgroupfs"
        )));
    }
    if !parent.starts_with('/') {
        return Err(Error::invalid(format!(
            "linux.cgroup_parent {parent:?} must be an absolute cgroup path"
        )));
    }
    Ok(format!("{}/{id}", parent.trim_end_matches('/')))
}

/// `uid[:gid]` of the infra process: run_as_user/group, else the image's
/// (numeric only: a sandbox image names no users).
fn user(s: Option<&cri::LinuxSandboxSecurityContext>, image: &Value) -> Result<(u32, u32)> {
    let id = |v: i64, f: &str| {
        u32::try_from(v).map_err(|_| {
            Error::invalid(format!("linux.security_context.{f} {v} is not a valid id"))
        })
    };
    let uid = s.and_then(|s| s.run_as_user.as_ref());
    let gid = s.and_then(|s| s.run_as_group.as_ref());
    match (uid, gid) {
        (Some(u), g) => Ok((
            id(u.value, "run_as_user")?,
            g.map(|g| id(g.value, "run_as_group"))
                .transpose()?
                .unwrap_or(0),
        )),
        (None, Some(_)) => Err(Error::invalid(
            "linux.security_context.run_as_group is set without run_as_user",
        )),
        (None, None) => {
            let u = image
                .get("User")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if u.is_empty() {
                return Ok((0, 0));
            }
            let (a, b) = u.split_once(':').unwrap_or((u, "0"));
            match (a.parse(), b.parse()) {
                (Ok(a), Ok(b)) => Ok((a, b)),
                _ => Err(Error::invalid(format!(
                    "the sandbox image's user {u:?} is not numeric uid[:gid]: berthd does not \
                     look names up in a sandbox image"
                ))),
            }
        }
    }
}

/// Refuses security settings berthd cannot apply to the infra container.
// The deprecated seccomp_profile_path is still what older kubelets send.
#[allow(deprecated)]
fn check_security(s: Option<&cri::LinuxSandboxSecurityContext>) -> Result<()> {
    let Some(s) = s else { return Ok(()) };
    let unconfined = cri::security_profile::ProfileType::Unconfined as i32;
    let runtime_default = cri::security_profile::ProfileType::RuntimeDefault as i32;
    // No AppArmor on berth's hosts: as containerd without AppArmor, the
    // default and unconfined profiles mean nothing; a named one cannot be had.
    if let Some(p) = &s.apparmor
        && p.profile_type != unconfined
        && p.profile_type != runtime_default
    {
        return Err(Error::unimplemented(
            "linux.security_context.apparmor: a Localhost profile cannot be applied (berthd has no AppArmor support)",
        ));
    }
    if s.selinux_options.as_ref().is_some_and(|o| {
        !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty())
    }) {
        return Err(Error::unimplemented(
            "linux.security_context.selinux_options: berthd has no SELinux support",
        ));
    }
    Ok(())
}

/// What the spec of pod `id` is made from.
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub config: &'a cri::PodSandboxConfig,
    /// The image config's `config` object.
    pub image: &'a Value,
    /// The pod's files (hostname, hosts, resolv.conf).
    pub files_dir: &'a Path,
    /// The pod's shm ("" for host IPC).
    pub shm: &'a str,
    /// `[cri] restrict_oom_score_adj`.
    pub restrict_oom_score_adj: bool,
}

/// `want`, or berthd's own score when restricted and `want` is lower
/// (containerd's `restrictOOMScoreAdj`).
pub fn oom_score_adj(want: i64, restrict: bool) -> Result<i64> {
    if !restrict {
        return Ok(want);
    }
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .map_err(|e| crate::error::io_err("read /proc/self/oom_score_adj", e))?;
    let own: i64 = own
        .trim()
        .parse()
        .map_err(|_| Error::internal(format!("/proc/self/oom_score_adj: {own:?}")))?;
    Ok(want.max(own))
}

/// The infra container's spec.
pub fn build(i: &SpecInput<'_>) -> Result<Value> {
    let config = i.config;
    if config.windows.is_some() {
        return Err(Error::invalid(
            "windows: a Windows pod config on a Linux runtime",
        ));
    }
    let m = modes(config)?;
    let s = sc(config);
    check_security(s)?;
    let str_list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    };
    let mut args = str_list(&i.image["Entrypoint"]);
    args.extend(str_list(&i.image["Cmd"]));
    if args.is_empty() {
        return Err(Error::invalid(
            "the sandbox image has neither an entrypoint nor a command",
        ));
    }
    let cwd = i.image["WorkingDir"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("/");
    let (uid, gid) = user(s, i.image)?;
    let mut groups: Vec<i64> = vec![i64::from(gid)];
    for g in s
        .map(|s| s.supplemental_groups.as_slice())
        .unwrap_or_default()
    {
        if u32::try_from(*g).is_err() {
            return Err(Error::invalid(format!(
                "linux.security_context.supplemental_groups: {g} is not a valid group id"
            )));
        }
        if !groups.contains(g) {
            groups.push(*g);
        }
    }
    let mut namespaces = vec![json!({"type": "mount"})];
    if !m.host_network {
        // The path is filled in by the network setup at task create.
        namespaces.push(json!({"type": "network"}));
        namespaces.push(json!({"type": "uts"}));
    }
    if !m.host_pid {
        namespaces.push(json!({"type": "pid"}));
    }
    if !m.host_ipc {
        namespaces.push(json!({"type": "ipc"}));
    }
    let ro_bind = |dst: &str, src: String| json!({"destination": dst, "type": "bind", "source": src, "options": ["rbind", "ro"]});
    // No /run (as the CRI's containers); the pod's own /dev/shm.
    let mut mounts = berth_proto::spec_defaults::mounts_except(&["/run", "/dev/shm"]);
    mounts.push(ro_bind(
        "/dev/shm",
        if m.host_ipc {
            "/dev/shm".into()
        } else {
            i.shm.to_string()
        },
    ));
    for (dst, src) in super::sandbox_files::paths(i.files_dir) {
        mounts.push(ro_bind(&dst, src.display().to_string()));
    }
    let sysctl: serde_json::Map<String, Value> = config
        .linux
        .as_ref()
        .map(|l| {
            l.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect()
        })
        .unwrap_or_default();
    let mut annotations = json!({
        "io.kubernetes.cri.container-type": "sandbox",
        "io.kubernetes.cri.sandbox-id": i.id,
        "io.kubernetes.cri.sandbox-namespace": config.metadata.as_ref().map(|m| m.namespace.as_str()).unwrap_or_default(),
        "io.kubernetes.cri.sandbox-name": config.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or_default(),
        "io.kubernetes.cri.sandbox-log-directory": config.log_directory,
    });
    if let Some(r) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        annotations["io.kubernetes.cri.sandbox-cpu-period"] = json!(r.cpu_period.to_string());
        annotations["io.kubernetes.cri.sandbox-cpu-quota"] = json!(r.cpu_quota.to_string());
        annotations["io.kubernetes.cri.sandbox-cpu-shares"] = json!(r.cpu_shares.to_string());
        annotations["io.kubernetes.cri.sandbox-memory"] =
            json!(r.memory_limit_in_bytes.to_string());
    }
    let caps = DEFAULT_CAPS.to_vec();
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": groups},
            "args": args,
            "env": str_list(&i.image["Env"]),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "oomScoreAdj": oom_score_adj(SANDBOX_OOM_SCORE_ADJ, i.restrict_oom_score_adj)?,
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "annotations": annotations,
        "linux": {
            "resources": {
                "devices": berth_proto::spec_defaults::device_rules(),
                "cpu": {"shares": SANDBOX_CPU_SHARES},
            },
            "cgroupsPath": cgroups_path(config, i.id)?,
            "namespaces": namespaces,
            "sysctl": sysctl,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    });
    // Seccomp as for a container (containerd: the sandbox's profile, none
    // when privileged).
    #[allow(deprecated)]
    if let Some(sc) = s {
        let as_container = cri::LinuxContainerSecurityContext {
            seccomp: sc.seccomp.clone(),
            seccomp_profile_path: sc.seccomp_profile_path.clone(),
            privileged: sc.privileged,
            ..Default::default()
        };
        let bounding: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        if let Some(p) = super::security::seccomp(Some(&as_container), &bounding)? {
            spec["linux"]["seccomp"] = p;
        }
    }
    // The pod's name needs its own UTS namespace; on the host's network
    // the pod has the host's (as containerd drops the UTS namespace).
    if !m.host_network && !config.hostname.is_empty() {
        spec["hostname"] = json!(config.hostname);
    }
    Ok(spec)
}

#[cfg(test)]
#[path = "sandbox_spec_tests.rs"]
mod tests;
