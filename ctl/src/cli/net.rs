//! The values of `berthctl run`'s networking options (`--net`, `-p`,
//! `--dns`, `--add-host`), parsed by clap so that a bad one is a usage error
//! naming its flag. How they combine is `crate::run_net`'s to check.

use berth_proto::labels::{self, PortMapping};
use std::net::Ipv4Addr;

/// One `--net` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetArg {
    /// The host's network namespace.
    Host,
    /// A network namespace of its own with only `lo`.
    None,
    /// A network of the daemon's.
    Named(String),
}

/// `--net`: `host`, `none` or a network name. The label listing the names
/// is comma-separated, so a name cannot hold a comma; docker's other modes
/// (`container:ID`, `ns:PATH`) are not offered.
pub fn parse_net(s: &str) -> Result<NetArg, String> {
    match s {
        "host" => Ok(NetArg::Host),
        "none" => Ok(NetArg::None),
        "" => Err("give a network name, host or none".into()),
        _ if s.contains(':') => Err(format!(
            "{s:?}: only a network name, host or none is supported (no container: or other modes)"
        )),
        _ if s.contains(|c: char| c == ',' || c.is_whitespace()) => Err(format!(
            "{s:?}: one network per --net (repeat the flag to join several)"
        )),
        _ => Ok(NetArg::Named(s.to_string())),
    }
}

/// `-p`: docker's `[HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]`.
pub fn parse_publish(s: &str) -> Result<PortMapping, String> {
    PortMapping::parse(s)
}

/// `--dns`: an IPv4 name server.
pub fn parse_dns(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address (IPv6 name servers are not supported)"))
}

/// `--add-host NAME:IPV4`.
pub fn parse_add_host(s: &str) -> Result<(String, Ipv4Addr), String> {
    labels::parse_extra_host(s)
}

#[cfg(test)]
mod tests {
    use crate::cli::testing::{assert_bad_value, parse_run as run};

    #[test]
    fn bad_values_are_usage_errors_naming_the_flag() {
        for (args, flag, says) in [
            (
                &["--net", "container:x", "bb"][..],
                "--net",
                "no container:",
            ),
            (
                &["--net", "a,b", "bb"][..],
                "--net",
                "one network per --net",
            ),
            (&["--net=", "bb"][..], "--net", "network name"),
            (
                &["-p", "80", "bb"][..],
                "--publish",
                "a host port is required",
            ),
            (&["--publish", "1:2/sctp", "bb"][..], "--publish", "sctp"),
            (&["-p", "8000-8001:80", "bb"][..], "--publish", "ranges"),
            (&["--dns", "::1", "bb"][..], "--dns", "not an IPv4 address"),
            (&["--dns", "dns.example", "bb"][..], "--dns", "IPv4"),
            (&["--add-host", "db", "bb"][..], "--add-host", "NAME:IPV4"),
            (&["--add-host", "db:h", "bb"][..], "--add-host", "IPv4"),
        ] {
            assert_bad_value(run(args), args, flag, &[says]);
        }
    }
}
