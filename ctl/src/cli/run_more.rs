//! More of `berthctl run`'s options (flattened into [`super::RunArgs`]):
//! the process (`--env-file`, `--entrypoint`, `-u`'s syntax), its
//! privileges (`--read-only`, `--cap-add/--cap-drop`, `--privileged`,
//! `--security-opt`) and its lifecycle (`--restart`, `--init`). Every value
//! is checked here, while parsing, so that a bad one is a usage error
//! naming its flag before anything is created.

use berth_proto::labels::RestartPolicy;
use clap::Args;
use serde_json::Value;

#[derive(Args, Debug, Clone, Default)]
pub struct RunMoreArgs {
    /// Read environment variables from a file: KEY=VALUE lines, or KEY to
    /// pass this shell's value; blank lines and # comments are skipped.
    /// Applied before -e, which overrides it.
    #[arg(long = "env-file", value_name = "FILE", value_parser = parse_env_file)]
    pub env_files: Vec<EnvFile>,
    /// Run this instead of the image's entrypoint; as with docker, the
    /// image's command is dropped too ("" clears both).
    #[arg(long, value_name = "PROGRAM")]
    pub entrypoint: Option<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Add a Linux capability (e.g. NET_ADMIN, or ALL).
    #[arg(long = "cap-add", value_name = "CAP", value_parser = parse_cap)]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability (e.g. CHOWN, or ALL).
    #[arg(long = "cap-drop", value_name = "CAP", value_parser = parse_cap)]
    pub cap_drop: Vec<String>,
    /// Give the container every capability, every device in the device
    /// cgroup, no masked or read-only /proc paths, and a writable /sys.
    #[arg(long)]
    pub privileged: bool,
    /// seccomp=unconfined, seccomp=PROFILE.json (an OCI linux.seccomp
    /// object), or no-new-privileges[=true|false].
    #[arg(long = "security-opt", value_name = "OPT", value_parser = parse_security_opt)]
    pub security_opts: Vec<SecurityOpt>,
    /// Restart policy, applied by berthd when the container exits:
    /// no, on-failure[:MAX-RETRIES], always or unless-stopped.
    #[arg(long, value_name = "POLICY", value_parser = RestartPolicy::parse)]
    pub restart: Option<RestartPolicy>,
    /// Not supported: berth has no init process to run as PID 1 (see
    /// `berthctl run --help`); refused with a message.
    #[arg(long)]
    pub init: bool,
}

/// The variables of one `--env-file`, read while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile(pub Vec<String>);

/// One `--security-opt`.
#[derive(Debug, Clone, PartialEq)]
pub enum SecurityOpt {
    /// `seccomp=unconfined` (`None`) or a profile (the `linux.seccomp` object).
    Seccomp(Option<Value>),
    NoNewPrivileges(bool),
}

impl RunMoreArgs {
    /// What clap cannot check while parsing a value: flags that do not
    /// combine (`rm`: whether `--rm` was given), and flags berth refuses.
    pub fn check(&self, rm: bool) -> Result<(), String> {
        if rm && self.restart.is_some_and(|p| p != RestartPolicy::No) {
            return Err(
                "--restart and --rm cannot be used together: a removed container cannot restart"
                    .into(),
            );
        }
        if self.init {
            return Err(
                "--init is not supported: berth has no init process to run as PID 1; \
                 put one in the image and name it with --entrypoint (e.g. --entrypoint /sbin/tini)"
                    .into(),
            );
        }
        let seccomps = self
            .security_opts
            .iter()
            .filter(|o| matches!(o, SecurityOpt::Seccomp(_)))
            .count();
        if seccomps > 1 {
            return Err("--security-opt seccomp= is given more than once".into());
        }
        Ok(())
    }

    /// The seccomp profile asked for: `None` when none was, `Some(None)`
    /// for unconfined.
    pub fn seccomp(&self) -> Option<Option<&Value>> {
        self.security_opts.iter().find_map(|o| match o {
            SecurityOpt::Seccomp(p) => Some(p.as_ref()),
            SecurityOpt::NoNewPrivileges(_) => None,
        })
    }

    /// `no-new-privileges`, when given.
    pub fn no_new_privileges(&self) -> Option<bool> {
        self.security_opts.iter().rev().find_map(|o| match o {
            SecurityOpt::NoNewPrivileges(b) => Some(*b),
            SecurityOpt::Seccomp(_) => None,
        })
    }
}

/// `-u USER[:GROUP]`: names or numbers, resolved later in the image's
/// /etc/passwd and /etc/group.
pub fn parse_user(s: &str) -> Result<String, String> {
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'))
    };
    if !ok(user) || group.is_some_and(|g| !ok(g)) {
        return Err(format!(
            "{s:?}: give USER[:GROUP], each a name or a number (e.g. nobody, 1000:1000)"
        ));
    }
    Ok(s.to_string())
}

/// Reads an `--env-file` as docker does: `KEY=VALUE` taken as it is (no
/// quotes removed), `KEY` alone from this shell (dropped when unset),
/// blank lines and lines starting with `#` skipped.
pub fn parse_env_file(path: &str) -> Result<EnvFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    env_lines(&text, |k| std::env::var(k).ok()).map_err(|e| format!("{path}: {e}"))
}

fn env_lines(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<EnvFile, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split('=').next().unwrap_or_default();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!(
                "line {}: {key:?} is not a variable name (KEY=VALUE or KEY)",
                n + 1
            ));
        }
        if line.contains('=') {
            out.push(line.to_string());
        } else if let Some(v) = lookup(key) {
            out.push(format!("{key}={v}"));
        }
    }
    Ok(EnvFile(out))
}

/// `--cap-add/--cap-drop`: a capability with or without `CAP_`, any case,
/// or `ALL`; the canonical `CAP_…` name.
pub fn parse_cap(s: &str) -> Result<String, String> {
    let up = s.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let name = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    name.parse::<caps::Capability>()
        .map(|_| name.clone())
        .map_err(|_| format!("{s:?} is not a Linux capability (e.g. NET_ADMIN, SYS_TIME, ALL)"))
}

/// `--security-opt`: seccomp (unconfined or a profile file, checked here
/// as an OCI `linux.seccomp` object) and no-new-privileges. Others
/// (apparmor=, label=) are refused: berth applies neither.
pub fn parse_security_opt(s: &str) -> Result<SecurityOpt, String> {
    // docker accepts both key=value and the old key:value.
    let (key, value) = match s.split_once(['=', ':']) {
        Some((k, v)) => (k, Some(v)),
        None => (s, None),
    };
    match (key, value) {
        ("seccomp", Some("unconfined")) => Ok(SecurityOpt::Seccomp(None)),
        ("seccomp", Some(path)) if !path.is_empty() => seccomp_profile(path),
        ("seccomp", _) => {
            Err("seccomp needs a value: seccomp=unconfined or seccomp=PROFILE.json".into())
        }
        ("no-new-privileges", None | Some("true")) => Ok(SecurityOpt::NoNewPrivileges(true)),
        ("no-new-privileges", Some("false")) => Ok(SecurityOpt::NoNewPrivileges(false)),
        ("no-new-privileges", Some(v)) => {
            Err(format!("no-new-privileges takes true or false, not {v:?}"))
        }
        ("apparmor" | "label" | "systempaths", _) => Err(format!(
            "{s:?} is not supported: berth applies no AppArmor or SELinux profile and no systempaths option \
             (supported: seccomp=unconfined|PROFILE, no-new-privileges)"
        )),
        _ => Err(format!(
            "{s:?} is not a security option (seccomp=unconfined|PROFILE, no-new-privileges[=true|false])"
        )),
    }
}

/// A seccomp profile file: an OCI `linux.seccomp` object (what runc and
/// containerd take). docker's own format adds conditions (`archMap`,
/// `includes`, `excludes`) berth would have to evaluate; they are refused
/// by name rather than silently dropped.
fn seccomp_profile(path: &str) -> Result<SecurityOpt, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("seccomp profile {path}: {e}"))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("seccomp profile {path} is not JSON: {e}"))?;
    check_seccomp(&v).map_err(|e| format!("seccomp profile {path}: {e}"))?;
    Ok(SecurityOpt::Seccomp(Some(v)))
}

fn check_seccomp(v: &Value) -> Result<(), String> {
    if !v.is_object() {
        return Err("expected a JSON object with defaultAction".into());
    }
    if v.get("archMap").is_some_and(|a| !a.is_null()) {
        return Err(
            "archMap (docker's format) is not supported; list architectures instead".into(),
        );
    }
    for s in v["syscalls"].as_array().into_iter().flatten() {
        for field in ["includes", "excludes"] {
            if s.get(field)
                .is_some_and(|c| c.as_object().is_some_and(|o| !o.is_empty()))
            {
                return Err(format!(
                    "syscall rule conditions ({field}, docker's format) are not supported"
                ));
            }
        }
    }
    // The shape and every action and architecture name, as the runtime reads them.
    serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(v.clone())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::testing::{assert_bad_value, parse_run as run};

    #[test]
    fn flags_parse() {
        let r = run(&[
            "--entrypoint",
            "/bin/sh",
            "--read-only",
            "--cap-add",
            "net_admin",
            "--cap-drop",
            "CAP_CHOWN",
            "--cap-drop",
            "all",
            "--privileged",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "no-new-privileges:false",
            "--restart",
            "on-failure:3",
            "-u",
            "nobody:nogroup",
            "bb",
        ])
        .unwrap();
        let m = &r.more;
        assert_eq!(m.entrypoint.as_deref(), Some("/bin/sh"));
        assert!(m.read_only && m.privileged && !m.init);
        assert_eq!(m.cap_add, ["CAP_NET_ADMIN"]);
        assert_eq!(m.cap_drop, ["CAP_CHOWN", "ALL"]);
        assert_eq!(m.seccomp(), Some(None));
        assert_eq!(m.no_new_privileges(), Some(false));
        assert_eq!(m.restart, Some(RestartPolicy::OnFailure(Some(3))));
        assert_eq!(r.user.as_deref(), Some("nobody:nogroup"));
        assert!(m.check(false).is_ok());
        let r = run(&["bb"]).unwrap();
        assert_eq!(r.more.seccomp(), None);
        assert_eq!(r.more.restart, None);
    }

    #[test]
    fn bad_values_are_usage_errors_naming_the_flag() {
        for (args, flag) in [
            (&["--restart", "sometimes", "bb"][..], "--restart"),
            (&["--restart", "on-failure:x", "bb"][..], "--restart"),
            (&["--restart", "always:2", "bb"][..], "--restart"),
            (&["--cap-add", "FLY", "bb"][..], "--cap-add"),
            (&["--cap-drop", "", "bb"][..], "--cap-drop"),
            (
                &["--security-opt", "apparmor=x", "bb"][..],
                "--security-opt",
            ),
            (&["--security-opt", "seccomp", "bb"][..], "--security-opt"),
            (
                &["--security-opt", "seccomp=/no/such/profile.json", "bb"][..],
                "--security-opt",
            ),
            (&["--security-opt", "bogus", "bb"][..], "--security-opt"),
            (&["--env-file", "/no/such/env", "bb"][..], "--env-file"),
            (&["-u", "a:b:c", "bb"][..], "--user"),
            (&["-u", ":1", "bb"][..], "--user"),
            (&["-u", "", "bb"][..], "--user"),
        ] {
            assert_bad_value(run(args), args, flag, &[]);
        }
        let r = run(&["--init", "bb"]).unwrap();
        assert!(
            r.more
                .check(false)
                .unwrap_err()
                .contains("--init is not supported")
        );
        let r = run(&["--rm", "--restart", "always", "bb"]).unwrap();
        assert!(
            r.more
                .check(r.rm)
                .unwrap_err()
                .contains("--restart and --rm")
        );
        let r = run(&["--rm", "--restart", "no", "bb"]).unwrap();
        assert!(r.more.check(r.rm).is_ok());
        let r = run(&[
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "seccomp:unconfined",
            "bb",
        ])
        .unwrap();
        assert!(r.more.check(false).unwrap_err().contains("more than once"));
    }

    #[test]
    fn env_files_read_like_dockers() {
        let lookup = |k: &str| (k == "HOME_X").then(|| "/h".to_string());
        let f = env_lines(
            "# comment\n\nA=1\n  B=2 \nC=\"q\"\nHOME_X\nUNSET_Y\nD=x=y\n",
            lookup,
        )
        .unwrap();
        assert_eq!(f.0, ["A=1", "B=2 ", "C=\"q\"", "HOME_X=/h", "D=x=y"]);
        // As docker: a name with spaces is an error, not a guess.
        assert!(env_lines("B = 2\n", lookup).unwrap_err().contains("line 1"));
        assert!(env_lines("=x\n", lookup).unwrap_err().contains("line 1"));
        assert!(
            env_lines("A=1\nB C\n", lookup)
                .unwrap_err()
                .contains("line 2")
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("env");
        std::fs::write(&p, "K=v\n").unwrap();
        let r = run(&["--env-file", p.to_str().unwrap(), "bb"]).unwrap();
        assert_eq!(r.more.env_files, [EnvFile(vec!["K=v".into()])]);
    }

    #[test]
    fn seccomp_profiles_are_checked() {
        let ok = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["chown"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]});
        assert!(check_seccomp(&ok).is_ok());
        for (bad, says) in [
            (serde_json::json!([]), "object"),
            (serde_json::json!({"defaultAction": "SCMP_ACT_NOPE"}), ""),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "archMap": []}),
                "archMap",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                  "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}),
                "includes",
            ),
        ] {
            let e = check_seccomp(&bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
