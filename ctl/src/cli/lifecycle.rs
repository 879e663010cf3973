//! The docker-grammar container commands' options: `ps`, `stop`, `start`,
//! `restart`, `kill`, `rm`, `wait`, `top`, `inspect`, `exec`, `stats`.
//! Containers are named by their containerd ID (which `run --name` sets).

use super::run_more::{EnvFile, parse_env_file, parse_user};
use clap::Args;

/// `berthctl ps`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct PsArgs {
    /// Show every container (default: running ones only).
    #[arg(short, long)]
    pub all: bool,
    /// Print names only.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `berthctl stop` and `restart`'s grace period.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL (-1: wait forever).
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "timeout",
        value_name = "SECS",
        default_value_t = 10,
        allow_negative_numbers = true,
        value_parser = parse_grace
    )]
    pub time: i64,
    /// Signal to stop with (default: the image's STOPSIGNAL, else TERM).
    #[arg(short, long, value_parser = parse_signal)]
    pub signal: Option<u32>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub names: Vec<String>,
}

/// `berthctl start`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct StartArgs {
    /// Attach to the container's output and wait for it to exit (its exit
    /// code becomes berthctl's).
    #[arg(short, long)]
    pub attach: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub names: Vec<String>,
}

/// `berthctl kill`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct KillArgs {
    /// Signal to send: a name (KILL, SIGHUP) or a number.
    #[arg(short, long, default_value = "KILL", value_parser = parse_signal)]
    pub signal: u32,
    #[arg(required = true, value_name = "CONTAINER")]
    pub names: Vec<String>,
}

/// `berthctl rm`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct RmArgs {
    /// Kill a running container (SIGKILL) before removing it.
    #[arg(short, long)]
    pub force: bool,
    /// Also remove anonymous volumes (berth has none: `-v` needs a name,
    /// and named volumes are kept, as docker keeps them).
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub names: Vec<String>,
}

/// `berthctl wait`, `inspect`: containers only.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct NamesArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    pub names: Vec<String>,
}

/// `berthctl top CONTAINER [ps OPTIONS]`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct TopArgs {
    pub name: String,
    /// Options for ps(1) (default: -ef).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PS OPTIONS"
    )]
    pub ps_args: Vec<String>,
}

/// `berthctl exec [OPTIONS] CONTAINER COMMAND [ARG...]`, docker's grammar:
/// options only before CONTAINER.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
#[command(override_usage = "berthctl exec [OPTIONS] CONTAINER COMMAND [ARG...]")]
pub struct ExecArgs {
    /// Keep stdin open and forward it.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Start the process and return.
    #[arg(short, long)]
    pub detach: bool,
    /// Environment variable: KEY=VALUE, or KEY to pass this shell's value.
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Read environment variables from a file (as `run --env-file`).
    #[arg(long = "env-file", value_name = "FILE", value_parser = parse_env_file)]
    pub env_files: Vec<EnvFile>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User as USER[:GROUP] (names from the container's /etc/passwd and
    /// /etc/group) or numbers.
    #[arg(short, long, value_name = "USER[:GROUP]", value_parser = parse_user)]
    pub user: Option<String>,
    /// The container, then the command and its arguments.
    // One list, so that option parsing stops at CONTAINER, as docker's.
    #[arg(
        value_name = "CONTAINER COMMAND [ARG...]",
        required = true,
        num_args = 2..,
        trailing_var_arg = true
    )]
    pub argv: Vec<String>,
}

impl ExecArgs {
    pub fn container(&self) -> &str {
        &self.argv[0]
    }

    pub fn command(&self) -> &[String] {
        &self.argv[1..]
    }
}

/// `berthctl stats`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct StatsArgs {
    /// Print one sample and exit.
    #[arg(long)]
    pub no_stream: bool,
    /// Containers (default: every running one).
    #[arg(value_name = "CONTAINER")]
    pub names: Vec<String>,
}

/// `-t`: seconds, or -1 (docker's "wait forever").
pub fn parse_grace(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if (-1..=24 * 3600).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?}: give whole seconds from 0 to 86400, or -1 to wait forever"
        )),
    }
}

/// A signal by name (`KILL`, `SIGKILL`, any case) or number (1 to 64).
pub fn parse_signal(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(format!("signal {n} is out of range (1 to 64)"))
        };
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as u32)
        .map_err(|_| format!("unknown signal {s:?} (e.g. KILL, TERM, HUP, or a number)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use crate::cli::testing::{assert_bad_value, parse};

    #[test]
    fn docker_forms_parse() {
        let Command::Ps(p) = parse(&["ps", "-aq"]).unwrap() else {
            panic!()
        };
        assert!(p.all && p.quiet);
        let Command::Stop(s) = parse(&["stop", "-t", "1", "a", "b"]).unwrap() else {
            panic!()
        };
        assert_eq!((s.time, s.names.len()), (1, 2));
        let Command::Stop(s) = parse(&["stop", "a"]).unwrap() else {
            panic!()
        };
        assert_eq!((s.time, s.signal), (10, None));
        let Command::Stop(s) = parse(&["stop", "-s", "QUIT", "a"]).unwrap() else {
            panic!()
        };
        assert_eq!(s.signal, Some(libc::SIGQUIT as u32));
        let Command::Restart(s) = parse(&["restart", "-t", "-1", "a"]).unwrap() else {
            panic!()
        };
        assert_eq!(s.time, -1);
        let Command::Kill(k) = parse(&["kill", "-s", "hup", "a"]).unwrap() else {
            panic!()
        };
        assert_eq!(k.signal, libc::SIGHUP as u32);
        let Command::Kill(k) = parse(&["kill", "a"]).unwrap() else {
            panic!()
        };
        assert_eq!(k.signal, libc::SIGKILL as u32);
        let Command::Rm(r) = parse(&["rm", "-fv", "a"]).unwrap() else {
            panic!()
        };
        assert!(r.force && r.volumes);
        let Command::Top(t) = parse(&["top", "a", "-o", "pid,comm"]).unwrap() else {
            panic!()
        };
        assert_eq!(t.ps_args, ["-o", "pid,comm"]);
        let Command::Start(s) = parse(&["start", "-a", "a"]).unwrap() else {
            panic!()
        };
        assert!(s.attach);
        let Command::Stats(s) = parse(&["stats", "--no-stream"]).unwrap() else {
            panic!()
        };
        assert!(s.no_stream && s.names.is_empty());
    }

    #[test]
    fn exec_options_stop_at_the_container() {
        let Command::Exec(e) = parse(&[
            "exec", "-it", "-e", "A=1", "-w", "/tmp", "-u", "nobody", "web", "ls", "-l", "-u",
        ])
        .unwrap() else {
            panic!()
        };
        assert!(e.interactive && e.tty && !e.detach);
        assert_eq!(e.env, ["A=1"]);
        assert_eq!(e.workdir.as_deref(), Some("/tmp"));
        assert_eq!(e.user.as_deref(), Some("nobody"));
        assert_eq!(e.container(), "web");
        assert_eq!(e.command(), ["ls", "-l", "-u"]);
        let err = parse(&["exec", "web"]).unwrap_err();
        assert!(err.to_string().contains("CONTAINER COMMAND"), "{err}");
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (&["stop", "-t", "x", "a"][..], "--time"),
            (&["stop", "-t", "-2", "a"][..], "--time"),
            (&["kill", "-s", "NOPE", "a"][..], "--signal"),
            (&["kill", "-s", "65", "a"][..], "--signal"),
            (&["kill", "-s", "0", "a"][..], "--signal"),
            (&["exec", "-u", "a:b:c", "web", "id"][..], "--user"),
        ] {
            assert_bad_value(parse(args), args, flag, &[]);
        }
        for args in [&["stop"][..], &["rm"][..], &["inspect"][..], &["wait"][..]] {
            let e = parse(args).expect_err("accepted");
            assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("SIGTERM"), Ok(libc::SIGTERM as u32));
        assert_eq!(parse_signal("term"), Ok(libc::SIGTERM as u32));
        assert_eq!(parse_signal("Usr1"), Ok(libc::SIGUSR1 as u32));
        assert!(parse_signal("SIGNOPE").is_err());
        assert_eq!(parse_grace("0"), Ok(0));
        assert!(parse_grace("1.5").is_err());
    }
}
