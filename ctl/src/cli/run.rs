//! `berthctl run`'s options, and the checks on their values that clap runs
//! while parsing, so that a bad value is a usage error naming its flag
//! before anything is created.

use super::net::{NetArg, parse_add_host, parse_dns, parse_net, parse_publish};
use super::run_more::{RunMoreArgs, parse_user};
use berth_proto::labels::PortMapping;
use clap::Args;
use std::net::Ipv4Addr;

/// `berthctl run [OPTIONS] IMAGE [COMMAND] [ARG...]`, docker's grammar:
/// options only before IMAGE; everything after it is the command, hyphens
/// and all (`run busybox ls -l`).
#[derive(Args, Debug, Clone)]
#[command(
    override_usage = "berthctl run [OPTIONS] IMAGE [COMMAND] [ARG...]",
    after_help = "The container is named by --name (or a generated 12-hex-digit name, printed with -d); \
                  that name is its containerd container ID, used by every later command."
)]
pub struct RunArgs {
    /// Name of the container, which is also its containerd ID
    /// ([a-zA-Z0-9][a-zA-Z0-9_.-]*; generated when absent).
    #[arg(long, value_parser = parse_name)]
    pub name: Option<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Start the container, print its name and return.
    #[arg(short, long)]
    pub detach: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Keep stdin open and forward it.
    #[arg(short, long)]
    pub interactive: bool,
    /// Environment variable: KEY=VALUE, or KEY to pass this shell's value
    /// (KEY is unset when this shell has none, as with docker).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Volume or bind mount: NAME:/path[:ro|rw] (a named volume, created on
    /// first use) or /host/path:/path[:ro|rw] (the host path must exist).
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]", value_parser = parse_volume)]
    pub volumes: Vec<VolumeArg>,
    /// Extra mounts: type=bind,src=/a,dst=/b,options=rbind:ro
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Memory limit: bytes, or with a unit b, k, m, g, t (1024-based, e.g. 64m);
    /// at least 6m, as docker requires.
    #[arg(
        short = 'm',
        long = "memory",
        visible_alias = "memory-limit",
        value_name = "BYTES",
        value_parser = parse_memory
    )]
    pub memory_limit: Option<i64>,
    /// CPU quota, in CPUs (0.01 up to this host's CPU count, e.g. 0.5).
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<f64>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long, value_parser = parse_pids_limit, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// User as USER[:GROUP], names (from the image's /etc/passwd and
    /// /etc/group) or numbers.
    #[arg(long, short = 'u', value_name = "USER[:GROUP]", value_parser = parse_user)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", visible_alias = "cwd")]
    pub cwd: Option<String>,
    /// Hostname (default: the container's name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Network to join: NAME (repeat to join several, eth0 first), host
    /// or none (default: the daemon's default network; none on containerd).
    #[arg(
        long = "net",
        visible_alias = "network",
        value_name = "NAME|host|none",
        value_parser = parse_net
    )]
    pub nets: Vec<NetArg>,
    /// Old spelling of `--net host`, kept for scripts.
    #[arg(long, hide = true)]
    pub net_host: bool,
    /// Publish a container port on the host (on the first network).
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]",
        value_parser = parse_publish
    )]
    pub publish: Vec<PortMapping>,
    /// Name server for /etc/resolv.conf (IPv4; default: the host's, minus
    /// loopback ones).
    #[arg(long, value_name = "IP", value_parser = parse_dns)]
    pub dns: Vec<Ipv4Addr>,
    /// Extra /etc/hosts entry.
    #[arg(long = "add-host", value_name = "NAME:IP", value_parser = parse_add_host)]
    pub add_hosts: Vec<(String, Ipv4Addr)>,
    /// Container labels (key=value).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Runtime name.
    #[arg(long, default_value = "io.containerd.runc.v2")]
    pub runtime: String,
    /// Have the shim drive this runc-compatible binary (runc, crun) instead
    /// of its built-in runtime, like ctr's --runc-binary.
    #[arg(long)]
    pub runc_binary: Option<String>,
    /// Platform of the image to run (default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub more: RunMoreArgs,
    /// The image, then the command and its arguments (default: the image's).
    // One list, so that option parsing stops at IMAGE as docker's does:
    // everything after it, options included, belongs to the command.
    #[arg(
        value_name = "IMAGE [COMMAND] [ARG...]",
        required = true,
        trailing_var_arg = true
    )]
    pub argv: Vec<String>,
}

impl RunArgs {
    /// Whether the container shares the host's network namespace.
    pub fn host_network(&self) -> bool {
        self.net_host || self.nets.contains(&NetArg::Host)
    }

    /// The image to run.
    pub fn image(&self) -> &str {
        &self.argv[0]
    }

    /// The command given after the image (empty: the image's).
    pub fn command(&self) -> &[String] {
        &self.argv[1..]
    }
}

/// `--name`: docker's rule for container names.
pub fn parse_name(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid container name {s:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-]* is allowed"
        ))
    }
}

/// Where a `-v` mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A named volume of the daemon's.
    Named(String),
    /// A host path (absolute, existing).
    Host(std::path::PathBuf),
}

/// One `-v SRC:DST[:MODE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeArg {
    pub source: VolumeSource,
    pub target: String,
    pub readonly: bool,
}

/// `-v`: docker's short volume syntax. A source starting with `/` is a host
/// path (which must exist: docker's `-v` would create it, but its `--mount`
/// refuses, and a typo silently becoming an empty directory helps no one);
/// anything else names a volume.
pub fn parse_volume(s: &str) -> Result<VolumeArg, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [src, dst] => (*src, *dst, None),
        [src, dst, mode] => (*src, *dst, Some(*mode)),
        [_] => {
            return Err(format!(
                "{s:?}: anonymous volumes are not supported; give SRC:DST (e.g. data:{s})"
            ));
        }
        _ => return Err(format!("{s:?}: expected SRC:DST[:ro|rw]")),
    };
    let readonly = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => {
            return Err(format!(
                "{s:?}: unsupported mode {m:?} (only ro and rw are supported)"
            ));
        }
    };
    if !dst.starts_with('/') {
        return Err(format!(
            "{s:?}: the container path {dst:?} must be absolute"
        ));
    }
    if std::path::Path::new(dst) == std::path::Path::new("/") {
        return Err(format!("{s:?}: cannot mount a volume over /"));
    }
    let source = if src.starts_with('/') {
        let p = std::path::PathBuf::from(src);
        if !p.exists() {
            return Err(format!("{s:?}: the host path {src} does not exist"));
        }
        VolumeSource::Host(p)
    } else {
        let mut chars = src.chars();
        let ok = src.len() >= 2
            && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(format!(
                "{s:?}: {src:?} is not a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+); \
                 a host path must be absolute"
            ));
        }
        VolumeSource::Named(src.to_string())
    };
    Ok(VolumeArg {
        source,
        target: dst.to_string(),
        readonly,
    })
}

/// docker's minimum memory limit: below it the container cannot start.
const MIN_MEMORY: i64 = 6 << 20;

/// `--memory`: docker's byte sizes (`RAMInBytes`): a number with an optional
/// 1024-based unit b/k/m/g/t/p, optionally followed by `b` or `ib`. Written
/// here because the size crates default to 1000-based units or a different
/// suffix grammar, and docker's is the one users type.
pub fn parse_memory(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u32 = match unit.trim() {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(format!("{s:?} is not a size (e.g. 64m, 1g, 1048576)")),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 64m, 1g, 1048576)"))?;
    let bytes = (n * 1024f64.powi(mult as i32)).floor();
    if bytes >= i64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    // In 0..i64::MAX and integral: checked above.
    #[allow(clippy::cast_possible_truncation)]
    let bytes = bytes as i64;
    if bytes < MIN_MEMORY {
        return Err(format!("{s:?} is below the minimum memory limit of 6m"));
    }
    Ok(bytes)
}

/// `--cpus`: from 0.01 up to the CPUs this host has (as docker checks).
pub fn parse_cpus(s: &str) -> Result<f64, String> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus_in_range(s, n)
}

fn cpus_in_range(s: &str, ncpu: usize) -> Result<f64, String> {
    let c: f64 = s
        .trim()
        .parse()
        .ok()
        .filter(|c: &f64| c.is_finite())
        .ok_or_else(|| format!("{s:?} is not a number of CPUs (e.g. 0.5)"))?;
    if !(0.01..=ncpu as f64).contains(&c) {
        return Err(format!(
            "{s} is out of range: from 0.01 to {ncpu}, as there are only {ncpu} CPUs available"
        ));
    }
    Ok(c)
}

/// `--pids-limit`: a positive number, or -1 for no limit.
pub fn parse_pids_limit(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(-1) => Ok(-1),
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{s:?}: give a positive number of processes, or -1 for no limit"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::testing::{assert_bad_value, parse_run as run};

    fn refused(args: &[&str]) -> String {
        run(args).expect_err("accepted").to_string()
    }

    #[test]
    fn volume_flags_parse_like_dockers() {
        let r = run(&[
            "-v",
            "data:/srv",
            "-v",
            "/tmp:/h:ro",
            "--volume",
            "x1:/y:rw",
            "bb",
        ])
        .unwrap();
        assert_eq!(
            r.volumes,
            [
                VolumeArg {
                    source: VolumeSource::Named("data".into()),
                    target: "/srv".into(),
                    readonly: false
                },
                VolumeArg {
                    source: VolumeSource::Host("/tmp".into()),
                    target: "/h".into(),
                    readonly: true
                },
                VolumeArg {
                    source: VolumeSource::Named("x1".into()),
                    target: "/y".into(),
                    readonly: false
                },
            ]
        );
        for (bad, why) in [
            ("data:rel", "must be absolute"),
            ("data:/", "over /"),
            ("/srv", "anonymous volumes"),
            ("data:/a:z", "unsupported mode"),
            ("a/b:/x", "not a valid volume name"),
            ("d:/x", "not a valid volume name"),
            ("/no/such/berth/path:/x", "does not exist"),
            ("a:b:c:d", "expected SRC:DST"),
        ] {
            let e = refused(&["-v", bad, "bb"]);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn image_then_command_not_an_id() {
        let r = run(&["--rm", "local/busybox", "echo", "hi"]).unwrap();
        assert_eq!(r.image(), "local/busybox");
        assert_eq!(r.command(), ["echo", "hi"]);
        assert!(r.rm);
        assert_eq!(r.name, None);
        let r = run(&["busybox"]).unwrap();
        assert!(r.command().is_empty());
    }

    #[test]
    fn everything_after_image_is_the_command() {
        let r = run(&["busybox", "ls", "-l", "--rm", "-d", "--name", "x"]).unwrap();
        assert_eq!(r.command(), ["ls", "-l", "--rm", "-d", "--name", "x"]);
        assert!(!r.rm && !r.detach);
        assert_eq!(r.name, None);
        // Even a known option right after IMAGE is the command's.
        let r = run(&["busybox", "--rm"]).unwrap();
        assert_eq!(r.command(), ["--rm"]);
        assert!(!r.rm);
        let r = run(&["-d", "busybox", "sh", "-c", "echo -n x"]).unwrap();
        assert_eq!(r.command(), ["sh", "-c", "echo -n x"]);
        assert!(r.detach);
    }

    #[test]
    fn docker_short_forms() {
        let r = run(&[
            "-e", "A=1", "--env", "B", "-w", "/tmp", "-u", "1:2", "-m", "64m", "-dit", "--name",
            "web.1", "busybox", "top",
        ])
        .unwrap();
        assert_eq!(r.env, ["A=1", "B"]);
        assert_eq!(r.cwd.as_deref(), Some("/tmp"));
        assert_eq!(r.user.as_deref(), Some("1:2"));
        assert_eq!(r.memory_limit, Some(64 << 20));
        assert!(r.detach && r.interactive && r.tty);
        assert_eq!(r.name.as_deref(), Some("web.1"));
        // The old long spellings still work.
        let r = run(&["--memory-limit", "67108864", "--cwd", "/x", "bb", "true"]).unwrap();
        assert_eq!(r.memory_limit, Some(67_108_864));
        assert_eq!(r.cwd.as_deref(), Some("/x"));
        let r = run(&["--memory=1g", "--pids-limit", "-1", "bb"]).unwrap();
        assert_eq!(r.memory_limit, Some(1 << 30));
        assert_eq!(r.pids_limit, Some(-1));
    }

    #[test]
    fn names_are_validated() {
        for ok in ["a", "web", "Web_1.x-y", "0abc"] {
            assert_eq!(parse_name(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "-x", "_x", ".x", "a/b", "a b", "é", "a:b"] {
            assert!(parse_name(bad).is_err(), "{bad:?} accepted");
        }
        let e = refused(&["--name", "a/b", "busybox"]);
        assert!(e.contains("--name") && e.contains("a/b"), "{e}");
    }

    #[test]
    fn generated_names_are_valid_and_differ() {
        let a = crate::run::generate_name();
        let b = crate::run::generate_name();
        assert_eq!(a.len(), 12);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(parse_name(&a).as_deref(), Ok(a.as_str()));
        assert_ne!(a, b);
    }

    #[test]
    fn memory_units() {
        let cases = [
            ("6m", 6 << 20),
            ("64m", 64 << 20),
            ("64M", 64 << 20),
            ("64mb", 64 << 20),
            ("64MiB", 64 << 20),
            ("1g", 1 << 30),
            ("1.5g", 3 << 29),
            ("10000k", 10_000 << 10),
            ("67108864", 67_108_864),
            ("67108864b", 67_108_864),
            ("2t", 2 << 40),
        ];
        for (s, want) in cases {
            assert_eq!(parse_memory(s), Ok(want), "{s}");
        }
        for bad in ["", "m", "64x", "-1", "1..2m", "64 mm", "nan", "inf"] {
            assert!(parse_memory(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn zero_and_absurd_limits_are_usage_errors_naming_the_flag() {
        for (args, flag) in [
            (&["--memory-limit", "0", "bb"][..], "--memory"),
            (&["-m", "1k", "bb"][..], "--memory"),
            (&["-m", "99999999p", "bb"][..], "--memory"),
            (&["--cpus", "0", "bb"][..], "--cpus"),
            (&["--cpus", "100000", "bb"][..], "--cpus"),
            (&["--cpus", "x", "bb"][..], "--cpus"),
            (&["--pids-limit", "0", "bb"][..], "--pids-limit"),
            (&["--pids-limit", "-2", "bb"][..], "--pids-limit"),
        ] {
            assert_bad_value(run(args), args, flag, &[]);
        }
        // The message docker users know, with this host's count.
        assert_eq!(cpus_in_range("0.5", 2), Ok(0.5));
        assert_eq!(cpus_in_range("2", 2), Ok(2.0));
        let e = cpus_in_range("3", 2).unwrap_err();
        assert!(e.contains("from 0.01 to 2"), "{e}");
        assert!(cpus_in_range("0.001", 2).is_err());
    }

    #[test]
    fn unknown_options_before_image_are_refused() {
        let e = run(&["--bogus", "busybox"]).expect_err("accepted");
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn image_is_required() {
        let e = run(&["--rm"]).expect_err("accepted");
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }
}
