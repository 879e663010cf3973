//! The container labels through which a client (berthctl, or any
//! containerd client) asks berthd for networking, and the value formats
//! both sides parse. berthd reads them when the container's task is
//! created; the containerd API itself is unchanged.

use std::fmt;
use std::net::Ipv4Addr;

/// The CNI networks the container joins, comma-separated, in interface
/// order (`eth0`, `eth1`, …). Absent or empty: berthd does no networking
/// and the spec's network namespace is used as it is.
pub const NETWORKS: &str = "berth.networks";
/// Published ports, comma-separated [`PortMapping`]s; they are set up on
/// the first network (through its `portmap` plugin).
pub const PORTS: &str = "berth.ports";
/// Name servers for `/etc/resolv.conf`, comma-separated IPv4 addresses
/// (absent: the host's, minus loopback ones).
pub const DNS: &str = "berth.dns";
/// Extra `/etc/hosts` entries, comma-separated `NAME:IPV4` (docker's
/// `--add-host`).
pub const EXTRA_HOSTS: &str = "berth.extra-hosts";

/// Extra `CNI_ARGS` for every network's plugins, `K=V` pairs separated
/// by `;` (what the CRI passes: `IgnoreUnknown=1;K8S_POD_NAMESPACE=…`).
pub const CNI_ARGS: &str = "berth.cni-args";

/// Parses a [`CNI_ARGS`] value.
pub fn parse_cni_args(value: &str) -> Result<Vec<(String, String)>, String> {
    value
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.contains(';') => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{kv:?} is not KEY=VALUE")),
        })
        .collect()
}

/// The restart policy berthd applies when the container's task exits:
/// [`RestartPolicy`] in its canonical form (`run --restart`).
pub const RESTART: &str = "berth.restart";
/// `"true"` once the user stopped or killed the container (`berthctl
/// stop`/`kill`), cleared by `berthctl start`: berthd does not restart a
/// container with it, so a stop is never undone.
pub const STOPPED: &str = "berth.stopped";
/// How often berthd restarted the container (kept across berthd restarts).
pub const RESTART_COUNT: &str = "berth.restart-count";
/// `"true"` once a task of a container with a [`RESTART`] policy started
/// (docker's "has been started before"): after a host reboot, whose empty
/// state directory holds no task at all, berthd restarts only such
/// containers — never one that was created and not started.
pub const STARTED: &str = "berth.started";
/// `json-file`: berthd keeps the container's output (see
/// [`crate::jsonlog`]) when its task is created with no stdout and stderr.
pub const LOG_DRIVER: &str = "berth.log-driver";
/// The one [`LOG_DRIVER`] there is.
pub const JSON_FILE: &str = "json-file";

/// docker's `--restart` policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    /// On a non-zero exit, at most this many times (`None`: no limit).
    OnFailure(Option<u32>),
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses `no|on-failure[:N]|always|unless-stopped`; the message says
    /// what is accepted.
    pub fn parse(s: &str) -> Result<Self, String> {
        let usage = "use no, on-failure[:MAX-RETRIES], always or unless-stopped";
        match s.split_once(':') {
            None => match s {
                "no" => Ok(Self::No),
                "on-failure" => Ok(Self::OnFailure(None)),
                "always" => Ok(Self::Always),
                "unless-stopped" => Ok(Self::UnlessStopped),
                _ => Err(format!("restart policy {s:?} is not known; {usage}")),
            },
            Some(("on-failure", n)) => match n.parse::<u32>() {
                // docker: 0 retries is no limit, like on-failure alone.
                Ok(0) => Ok(Self::OnFailure(None)),
                Ok(n) => Ok(Self::OnFailure(Some(n))),
                Err(_) => Err(format!(
                    "restart policy {s:?}: the maximum retry count {n:?} is not a number"
                )),
            },
            Some((p, _)) => Err(format!(
                "restart policy {s:?}: only on-failure takes a retry count ({p} does not); {usage}"
            )),
        }
    }
}

/// The canonical form (what the label holds).
impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::No => f.write_str("no"),
            Self::OnFailure(None) => f.write_str("on-failure"),
            Self::OnFailure(Some(n)) => write!(f, "on-failure:{n}"),
            Self::Always => f.write_str("always"),
            Self::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

/// The items of a comma-separated label value.
pub fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port: docker's `[HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// `None`: every host address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    /// Parses docker's syntax; the message says what is wrong and what is
    /// accepted. Ranges, random host ports and IPv6 are not supported.
    pub fn parse(s: &str) -> Result<Self, String> {
        let usage =
            "use [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp], e.g. 8080:80 or 127.0.0.1:8080:80/udp";
        let (addr, protocol) = match s.rsplit_once('/') {
            Some((a, "tcp")) => (a, Protocol::Tcp),
            Some((a, "udp")) => (a, Protocol::Udp),
            Some((_, p)) => {
                return Err(format!(
                    "port {s:?}: protocol {p:?} is not supported (tcp or udp)"
                ));
            }
            None => (s, Protocol::Tcp),
        };
        let parts: Vec<&str> = addr.split(':').collect();
        let (ip, host, ctr) = match parts.as_slice() {
            [h, c] => (None, *h, *c),
            [i, h, c] => (Some(*i), *h, *c),
            [_] => {
                return Err(format!(
                    "port {s:?}: a host port is required (random host ports are not supported); {usage}"
                ));
            }
            _ => return Err(format!("port {s:?}: {usage} (IPv6 is not supported)")),
        };
        let port = |what: &str, p: &str| -> Result<u16, String> {
            if p.contains('-') {
                return Err(format!(
                    "port {s:?}: port ranges are not supported; {usage}"
                ));
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!(
                    "port {s:?}: {what} port {p:?} is not a number from 1 to 65535; {usage}"
                )),
                Ok(n) => Ok(n),
            }
        };
        let host_ip = match ip {
            None | Some("") => None,
            Some(i) => Some(i.parse::<Ipv4Addr>().map_err(|_| {
                format!("port {s:?}: host address {i:?} is not an IPv4 address; {usage}")
            })?),
        };
        Ok(PortMapping {
            host_ip: host_ip.filter(|ip| !ip.is_unspecified()),
            host_port: port("host", host)?,
            container_port: port("container", ctr)?,
            protocol,
        })
    }

    /// Whether both claim the same host port: same protocol and port, and
    /// addresses that overlap (an unspecified one overlaps every address).
    pub fn conflicts_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

/// The canonical form (what the label holds): `[HOSTIP:]HOSTPORT:CTRPORT/PROTO`.
impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.container_port,
            self.protocol.as_str()
        )
    }
}

/// One `--add-host NAME:IPV4`.
pub fn parse_extra_host(s: &str) -> Result<(String, Ipv4Addr), String> {
    let (name, ip) = s
        .split_once(':')
        .ok_or_else(|| format!("extra host {s:?}: use NAME:IPV4, e.g. db:10.0.0.5"))?;
    let ok_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !ok_name {
        return Err(format!(
            "extra host {s:?}: {name:?} is not a host name (letters, digits, '-', '.', '_')"
        ));
    }
    let ip = ip
        .parse::<Ipv4Addr>()
        .map_err(|_| format!("extra host {s:?}: {ip:?} is not an IPv4 address"))?;
    Ok((name.to_string(), ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_to_their_canonical_form() {
        for (input, canonical) in [
            ("8080:80", "8080:80/tcp"),
            ("8080:80/udp", "8080:80/udp"),
            ("127.0.0.1:8080:80", "127.0.0.1:8080:80/tcp"),
            ("0.0.0.0:53:53/udp", "53:53/udp"),
            (":81:80", "81:80/tcp"),
        ] {
            let p = PortMapping::parse(input).unwrap();
            assert_eq!(p.to_string(), canonical, "{input}");
            assert_eq!(PortMapping::parse(canonical).unwrap(), p);
        }
    }

    #[test]
    fn bad_ports_say_what_is_wrong() {
        for (input, says) in [
            ("80", "a host port is required"),
            ("0:80", "host port \"0\""),
            ("8080:70000", "container port \"70000\""),
            ("8000-8001:80", "ranges"),
            ("8080:80/sctp", "protocol \"sctp\""),
            ("::1:8080:80", "IPv6"),
            ("localhost:8080:80", "not an IPv4 address"),
        ] {
            let e = PortMapping::parse(input).unwrap_err();
            assert!(e.contains(says), "{input}: {e}");
        }
    }

    #[test]
    fn conflicts_need_the_same_port_protocol_and_overlapping_address() {
        let p = |s| PortMapping::parse(s).unwrap();
        assert!(p("8080:80").conflicts_with(&p("8080:81")));
        assert!(p("8080:80").conflicts_with(&p("127.0.0.1:8080:80")));
        assert!(!p("8080:80").conflicts_with(&p("8080:80/udp")));
        assert!(!p("8080:80").conflicts_with(&p("8081:80")));
        assert!(!p("127.0.0.1:8080:80").conflicts_with(&p("127.0.0.2:8080:80")));
    }

    #[test]
    fn restart_policies() {
        for (input, want, canonical) in [
            ("no", RestartPolicy::No, "no"),
            ("always", RestartPolicy::Always, "always"),
            (
                "unless-stopped",
                RestartPolicy::UnlessStopped,
                "unless-stopped",
            ),
            ("on-failure", RestartPolicy::OnFailure(None), "on-failure"),
            ("on-failure:0", RestartPolicy::OnFailure(None), "on-failure"),
            (
                "on-failure:2",
                RestartPolicy::OnFailure(Some(2)),
                "on-failure:2",
            ),
        ] {
            let p = RestartPolicy::parse(input).unwrap();
            assert_eq!(p, want, "{input}");
            assert_eq!(p.to_string(), canonical);
            assert_eq!(RestartPolicy::parse(canonical).unwrap(), p);
        }
        for (bad, says) in [
            ("sometimes", "not known"),
            ("", "not known"),
            ("on-failure:x", "not a number"),
            ("on-failure:-1", "not a number"),
            ("always:3", "only on-failure"),
        ] {
            let e = RestartPolicy::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn extra_hosts() {
        assert_eq!(
            parse_extra_host("db:10.0.0.5").unwrap(),
            ("db".to_string(), Ipv4Addr::new(10, 0, 0, 5))
        );
        assert!(parse_extra_host("db").unwrap_err().contains("NAME:IPV4"));
        assert!(parse_extra_host("d b:1.2.3.4").is_err());
        assert!(parse_extra_host("db:x").unwrap_err().contains("IPv4"));
        assert_eq!(items(" a, ,b ,").collect::<Vec<_>>(), vec!["a", "b"]);
    }
}
