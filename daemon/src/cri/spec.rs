//! The OCI runtime spec of a CRI container, as containerd's CRI builds it
//! (`container_create_linux.go` and `opts/spec*.go` of containerd 1.7):
//! containerd's default Unix spec without /run and rlimits, the image's
//! configuration, the kubelet's `ContainerConfig`, and the pod it joins.

use super::security;
use super::spec_mounts::{self, Bind};
use crate::error::{Error, Result};
use berth_proto::cri::{ContainerConfig, NamespaceMode, PodSandboxConfig, Signal};
use serde_json::{Value, json};

/// What a container's spec takes from its pod.
#[derive(Debug, Clone)]
pub struct Sandbox<'a> {
    pub id: &'a str,
    pub config: &'a PodSandboxConfig,
    /// The pod's network namespace ("": the infra's, e.g. host network).
    pub netns_path: &'a str,
    /// The infra (pause) process: the container joins its IPC, UTS and
    /// (unless CONTAINER mode) PID namespaces.
    pub pid: u32,
    /// Where the pod's hosts, resolv.conf and hostname files are ("": none).
    pub etc_dir: &'a str,
    pub shm_path: &'a str,
    pub cgroup_parent: &'a str,
}

impl Default for Sandbox<'_> {
    fn default() -> Self {
        static EMPTY: std::sync::LazyLock<PodSandboxConfig> =
            std::sync::LazyLock::new(PodSandboxConfig::default);
        Sandbox {
            id: "",
            config: &EMPTY,
            netns_path: "",
            pid: 0,
            etc_dir: "",
            shm_path: "",
            cgroup_parent: "",
        }
    }
}

/// The image's side: its name and the `config` object of its
/// configuration (Entrypoint, Cmd, Env, WorkingDir, User, StopSignal).
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    pub name: &'a str,
    pub config: &'a Value,
}

/// What the build reads from the host and the image's files; gathered by
/// the caller so the build stays a function of its inputs.
#[derive(Debug, Clone, Default)]
pub struct Host<'a> {
    /// The image's /etc/passwd and /etc/group (`None`: absent).
    pub passwd: Option<&'a str>,
    pub group: Option<&'a str>,
    /// The pid whose PID namespace TARGET mode joins.
    pub target_pid: Option<u32>,
    /// The host's name, for pods without one.
    pub hostname: &'a str,
    /// /proc/self/mountinfo, for propagation checks.
    pub mountinfo: &'a str,
    pub cgroup2: bool,
    pub swap_controller: bool,
    pub hugetlb_controller: bool,
    /// `[cri] restrict_oom_score_adj`: no score below berthd's own.
    pub restrict_oom_score_adj: bool,
}

/// containerd's default PATH.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The process's argv: the kubelet's command and args over the image's
/// Entrypoint and Cmd (containerd's `WithProcessArgs`).
pub fn process_args(config: &ContainerConfig, image: &Value) -> Result<Vec<String>> {
    let (mut command, mut args) = (config.command.clone(), config.args.clone());
    if command.is_empty() {
        if args.is_empty() {
            args = strings(&image["Cmd"]);
        }
        let ep = strings(&image["Entrypoint"]);
        // An Entrypoint of [""] is docker's way of clearing it.
        if !(ep.len() == 1 && ep[0].is_empty()) {
            command = ep;
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(Error::invalid(
            "no command specified: neither the container config nor the image gives one",
        ));
    }
    Ok(command)
}

/// Sets `KEY=VALUE` in `env`, replacing an earlier value of KEY in place.
fn set_env(env: &mut Vec<String>, kv: String) {
    let key = kv.split('=').next().unwrap_or_default().to_string();
    match env
        .iter_mut()
        .find(|e| e.split('=').next() == Some(key.as_str()))
    {
        Some(e) => *e = kv,
        None => env.push(kv),
    }
}

/// The signal Stop sends first: the kubelet's, else the image's
/// StopSignal, else SIGTERM.
pub fn stop_signal(config: &ContainerConfig, image: &Value) -> String {
    match Signal::try_from(config.stop_signal) {
        Ok(Signal::RuntimeDefault) | Err(_) => image["StopSignal"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("SIGTERM")
            .to_string(),
        Ok(s) => s.as_str_name().to_string(),
    }
}

/// containerd's base spec for a CRI container.
fn base(ns: &str, id: &str) -> Value {
    let caps = berth_proto::capabilities::DEFAULT_CAPS;
    json!({
        "ociVersion": "1.1.0",
        "root": {"path": "rootfs"},
        "process": {
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": false,
        },
        // containerd's CRI drops the default /run (WithoutRunMount).
        "mounts": berth_proto::spec_defaults::mounts_except(&["/run"]),
        "linux": {
            "cgroupsPath": format!("/{ns}/{id}"),
            // The devices every container may use (runc's defaults; the
            // built-in runtime allows only what the spec lists).
            "resources": {"devices": berth_proto::spec_defaults::device_rules()},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
            "maskedPaths": [],
            "readonlyPaths": [],
        },
    })
}

fn cgroups_path(parent: &str, id: &str) -> Result<String> {
    if parent.ends_with(".slice") {
        return Err(Error::invalid(format!(
            "cgroup_parent {parent:?} is a systemd slice; berth uses the cgroupfs driver"
        )));
    }
    Ok(format!("{}/{id}", parent.trim_end_matches('/')))
}

/// The spec's `linux.resources` and `process.oomScoreAdj` from the
/// kubelet's resources (containerd's `WithResources`/`WithOOMScoreAdj`).
pub fn apply_resources(
    spec: &mut Value,
    r: &berth_proto::cri::LinuxContainerResources,
    host: &Host,
) -> Result<()> {
    let res = &mut spec["linux"]["resources"];
    if r.cpu_period != 0 {
        res["cpu"]["period"] = json!(r.cpu_period);
    }
    if r.cpu_quota != 0 {
        res["cpu"]["quota"] = json!(r.cpu_quota);
    }
    if r.cpu_shares != 0 {
        res["cpu"]["shares"] = json!(r.cpu_shares);
    }
    if !r.cpuset_cpus.is_empty() {
        res["cpu"]["cpus"] = json!(r.cpuset_cpus);
    }
    if !r.cpuset_mems.is_empty() {
        res["cpu"]["mems"] = json!(r.cpuset_mems);
    }
    if r.memory_limit_in_bytes != 0 {
        res["memory"]["limit"] = json!(r.memory_limit_in_bytes);
        // No swap beyond the limit, where the host can say so.
        if r.memory_swap_limit_in_bytes == 0 && host.swap_controller {
            res["memory"]["swap"] = json!(r.memory_limit_in_bytes);
        }
    }
    if r.memory_swap_limit_in_bytes != 0 && host.swap_controller {
        res["memory"]["swap"] = json!(r.memory_swap_limit_in_bytes);
    }
    if !r.hugepage_limits.is_empty() {
        if !host.hugetlb_controller {
            return Err(Error::invalid(
                "linux.resources.hugepage_limits: the hugetlb cgroup controller is missing",
            ));
        }
        res["hugepageLimits"] = r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
    }
    if !r.unified.is_empty() {
        if !host.cgroup2 {
            return Err(Error::invalid(
                "linux.resources.unified: this host's cgroups are v1 (unified needs cgroup v2)",
            ));
        }
        res["unified"] = json!(r.unified);
    }
    spec["process"]["oomScoreAdj"] = json!(super::sandbox_spec::oom_score_adj(
        r.oom_score_adj,
        host.restrict_oom_score_adj
    )?);
    Ok(())
}

/// The OCI spec of container `id` in namespace `ns`.
pub fn build(
    ns: &str,
    id: &str,
    config: &ContainerConfig,
    sandbox: &Sandbox,
    image: &Image,
    host: &Host,
) -> Result<Value> {
    spec_mounts::check(config)?;
    let linux = config.linux.as_ref();
    let sc = linux.and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    if let Some(o) = sc.and_then(|s| s.selinux_options.as_ref())
        && !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty())
    {
        return Err(Error::invalid(
            "linux.security_context.selinux_options: SELinux is not supported by berth",
        ));
    }
    let mut spec = base(ns, id);
    let icfg = image.config;

    // Process: argv, env, cwd, terminal.
    spec["process"]["args"] = json!(process_args(config, icfg)?);
    let mut env = vec![DEFAULT_PATH.to_string()];
    if config.tty {
        env.push("TERM=xterm".into());
        spec["process"]["terminal"] = json!(true);
    }
    let hostname = match sandbox.config.hostname.as_str() {
        "" => host.hostname,
        h => h,
    };
    set_env(&mut env, format!("HOSTNAME={hostname}"));
    for e in strings(&icfg["Env"]) {
        set_env(&mut env, e);
    }
    for kv in &config.envs {
        set_env(
            &mut env,
            format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)),
        );
    }
    spec["process"]["env"] = json!(env);
    let cwd = match (config.working_dir.as_str(), icfg["WorkingDir"].as_str()) {
        ("", Some(w)) if !w.is_empty() => w.to_string(),
        ("", _) => "/".into(),
        (w, _) => w.to_string(),
    };
    spec["process"]["cwd"] = json!(cwd);

    // Mounts: the pod's files, then the kubelet's binds.
    let host_ipc = sc
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|n| n.ipc == NamespaceMode::Node as i32);
    let readonly_rootfs = sc.is_some_and(|s| s.readonly_rootfs);
    let extra =
        spec_mounts::sandbox_binds(sandbox.etc_dir, sandbox.shm_path, host_ipc, readonly_rootfs);
    let user_binds: Vec<Bind> = config.mounts.iter().map(Bind::from).collect();
    spec_mounts::apply(&mut spec, &user_binds, &extra, host.mountinfo)?;
    if let Some(sc) = sc {
        spec["linux"]["maskedPaths"] = json!(sc.masked_paths);
        spec["linux"]["readonlyPaths"] = json!(sc.readonly_paths);
    }
    spec_mounts::add_devices(&mut spec, config)?;

    // Capabilities, then privileged (which needs a privileged pod).
    let mut caps = security::capabilities(sc)?;
    if privileged {
        let pod_privileged = sandbox
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged);
        if !pod_privileged {
            return Err(Error::invalid(
                "linux.security_context.privileged: no privileged container allowed in a sandbox that is not privileged",
            ));
        }
        caps = security::all_caps();
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
        for m in spec["mounts"].as_array_mut().into_iter().flatten() {
            if m["type"] == "sysfs" || m["type"] == "cgroup" {
                let opts: Vec<Value> = strings(&m["options"])
                    .into_iter()
                    .filter(|o| o != "ro")
                    .map(Value::from)
                    .collect();
                m["options"] = Value::Array(opts);
            }
        }
        spec_mounts::host_devices(&mut spec)?;
    }
    spec["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    if sc.is_some_and(|s| s.no_new_privs) {
        spec["process"]["noNewPrivileges"] = json!(true);
    }
    if readonly_rootfs {
        spec["root"]["readonly"] = json!(true);
    }

    // Cgroup and resources.
    if !sandbox.cgroup_parent.is_empty() {
        spec["linux"]["cgroupsPath"] = json!(cgroups_path(sandbox.cgroup_parent, id)?);
    }
    if let Some(r) = linux.and_then(|l| l.resources.as_ref()) {
        apply_resources(&mut spec, r, host)?;
    }

    // The pod's namespaces.
    apply_namespaces(&mut spec, sc, sandbox, host, privileged)?;

    // User: the context's, else the image's.
    let user = match security::user_string(sc)? {
        Some(u) => u,
        None => icfg["User"].as_str().unwrap_or_default().to_string(),
    };
    let supplemental = sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or(&[]);
    let strict = sc.is_some_and(|s| {
        s.supplemental_groups_policy == berth_proto::cri::SupplementalGroupsPolicy::Strict as i32
    });
    let creds = security::resolve_user(
        if user.is_empty() { "0" } else { &user },
        host.passwd,
        host.group,
        supplemental,
        strict,
    )?;
    spec["process"]["user"] = json!({"uid": creds.uid, "gid": creds.gid,
        "additionalGids": creds.additional_gids});

    // Seccomp and AppArmor.
    security::check_apparmor(sc)?;
    if let Some(p) = security::seccomp(sc, &caps)? {
        spec["linux"]["seccomp"] = p;
    }

    // containerd's CRI annotations, which runtimes and hooks read.
    let md = sandbox.config.metadata.clone().unwrap_or_default();
    spec["annotations"] = json!({
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": config.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or_default(),
        "io.kubernetes.cri.image-name": image.name,
        "io.kubernetes.cri.sandbox-id": sandbox.id,
        "io.kubernetes.cri.sandbox-name": md.name,
        "io.kubernetes.cri.sandbox-namespace": md.namespace,
        "io.kubernetes.cri.sandbox-uid": md.uid,
    });
    // Checked against the spec's shape, so a mistake here is caught at
    // create, not by the runtime at start.
    serde_json::from_value::<oci_spec::runtime::Spec>(spec.clone())
        .map_err(|e| Error::internal(format!("the container's OCI spec is malformed: {e}")))?;
    Ok(spec)
}

/// Joins the pod's namespaces (containerd's `WithPodNamespaces`): its
/// network namespace, the infra's IPC and UTS, and its PID unless the
/// container has its own (CONTAINER) or targets another's (TARGET).
fn apply_namespaces(
    spec: &mut Value,
    sc: Option<&berth_proto::cri::LinuxContainerSecurityContext>,
    sandbox: &Sandbox,
    host: &Host,
    privileged: bool,
) -> Result<()> {
    let nsopts = sc
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    if let Some(u) = &nsopts.userns_options
        && u.mode != NamespaceMode::Node as i32
    {
        return Err(Error::invalid(
            "linux.security_context.namespace_options.userns_options: user namespaces for pods are not supported",
        ));
    }
    if sandbox.pid == 0 {
        return Err(Error::precondition(format!(
            "sandbox {} has no running infra process to join",
            sandbox.id
        )));
    }
    let proc_ns = |pid: u32, t: &str| format!("/proc/{pid}/ns/{t}");
    let net = if sandbox.netns_path.is_empty() {
        proc_ns(sandbox.pid, "net")
    } else {
        sandbox.netns_path.to_string()
    };
    let mut namespaces = vec![
        json!({"type": "mount"}),
        json!({"type": "network", "path": net}),
        json!({"type": "ipc", "path": proc_ns(sandbox.pid, "ipc")}),
        json!({"type": "uts", "path": proc_ns(sandbox.pid, "uts")}),
    ];
    match NamespaceMode::try_from(nsopts.pid) {
        Ok(NamespaceMode::Container) => namespaces.push(json!({"type": "pid"})),
        Ok(NamespaceMode::Target) => {
            let pid = host.target_pid.ok_or_else(|| {
                Error::invalid(format!(
                    "namespace_options.target_id {:?}: the target container is not running",
                    nsopts.target_id
                ))
            })?;
            namespaces.push(json!({"type": "pid", "path": proc_ns(pid, "pid")}));
        }
        _ => namespaces.push(json!({"type": "pid", "path": proc_ns(sandbox.pid, "pid")})),
    }
    if host.cgroup2 && !privileged {
        namespaces.push(json!({"type": "cgroup"}));
    }
    spec["linux"]["namespaces"] = Value::Array(namespaces);
    Ok(())
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
