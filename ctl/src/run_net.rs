//! `berthctl run`'s networks: which ones the container joins (the
//! daemon's default unless `--net` says), checked with the daemon before
//! anything is created, after [`request`] checked how the flags combine.
//! berthd attaches them at task create, from the labels [`labels`] makes.

use crate::cli::{NetArg, RunArgs};
use crate::ctx::Ctx;
use crate::error::{CtlError, status_error};
use anyhow::Result;
use berth_proto::labels as L;
use berth_proto::pb::berth::services::networks::v1 as api;
use berth_proto::pb::berth::services::networks::v1::networks_client::NetworksClient;
use tonic::{Code, Status};

/// The networking a run asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetRequest {
    /// No `--net`: the daemon's default network (none on a daemon without
    /// berth's networks service, as ctr).
    Default,
    Host,
    None,
    /// These networks, in interface order (eth0, eth1, …).
    Networks(Vec<String>),
}

/// A usage error of `run` (exit code 2, with its usage line), for what
/// clap cannot check itself: how the networking flags combine.
pub fn usage_error(msg: String) -> clap::Error {
    let mut cli = <crate::cli::Cli as clap::CommandFactory>::command();
    cli.build();
    let kind = clap::error::ErrorKind::ArgumentConflict;
    match cli.find_subcommand_mut("run") {
        Some(run) => run.error(kind, msg),
        None => cli.error(kind, msg),
    }
}

/// The labels the networking flags set, which `--label` may not set.
const NET_LABELS: [(&str, &str); 4] = [
    (L::NETWORKS, "--net"),
    (L::PORTS, "-p/--publish"),
    (L::DNS, "--dns"),
    (L::EXTRA_HOSTS, "--add-host"),
];

/// The networking `a` asks for, or why its flags do not go together.
pub fn request(a: &RunArgs) -> Result<NetRequest, String> {
    let mut nets = a.nets.clone();
    // The hidden `--net-host` is `--net host`.
    if a.net_host && !nets.contains(&NetArg::Host) {
        nets.push(NetArg::Host);
    }
    let req = match nets.as_slice() {
        [] => NetRequest::Default,
        [NetArg::Host] => NetRequest::Host,
        [NetArg::None] => NetRequest::None,
        _ => {
            let mut names: Vec<String> = Vec::new();
            for n in nets {
                let NetArg::Named(n) = n else {
                    return Err(
                        "--net host and --net none cannot be combined with other --net values"
                            .into(),
                    );
                };
                if names.contains(&n) {
                    return Err(format!("--net {n} is given twice"));
                }
                names.push(n);
            }
            NetRequest::Networks(names)
        }
    };
    if let Some(mode) = match req {
        NetRequest::Host => Some("host: the container uses the host's network"),
        NetRequest::None => Some("none: the container has no network"),
        _ => None,
    } {
        for (given, flag) in [
            (!a.publish.is_empty(), "-p/--publish"),
            (!a.dns.is_empty(), "--dns"),
            (!a.add_hosts.is_empty(), "--add-host"),
        ] {
            if given {
                return Err(format!("{flag} cannot be used with --net {mode}"));
            }
        }
    }
    for (i, p) in a.publish.iter().enumerate() {
        if let Some(q) = a.publish[..i].iter().find(|q| q.conflicts_with(p)) {
            return Err(format!(
                "-p {q} and -p {p} publish the same host port (a port can be published once)"
            ));
        }
    }
    for l in &a.labels {
        let key = l.split_once('=').map_or(l.as_str(), |(k, _)| k);
        if let Some((_, flag)) = NET_LABELS.iter().find(|(k, _)| *k == key) {
            return Err(format!(
                "--label {key}: this label is set by {flag}; use that flag"
            ));
        }
    }
    Ok(req)
}

/// The `berth.*` labels that ask berthd to attach the container to
/// `networks` (empty: no networking, no labels).
pub fn labels(a: &RunArgs, networks: &[String]) -> Vec<(&'static str, String)> {
    if networks.is_empty() {
        return Vec::new();
    }
    let join = |v: Vec<String>| v.join(",");
    let mut out = vec![(L::NETWORKS, networks.join(","))];
    if !a.publish.is_empty() {
        out.push((
            L::PORTS,
            join(a.publish.iter().map(ToString::to_string).collect()),
        ));
    }
    if !a.dns.is_empty() {
        out.push((
            L::DNS,
            join(a.dns.iter().map(ToString::to_string).collect()),
        ));
    }
    if !a.add_hosts.is_empty() {
        out.push((
            L::EXTRA_HOSTS,
            join(
                a.add_hosts
                    .iter()
                    .map(|(n, ip)| format!("{n}:{ip}"))
                    .collect(),
            ),
        ));
    }
    out
}

/// What a daemon without berth's networks service (containerd) is.
const NO_SERVICE: &str = "this daemon has no networks service (berth.services.networks.v1; \
                          containerd has none)";

/// The networks the container joins, in interface order; empty for
/// `--net host`, `--net none`, and the default on a daemon without
/// networks.
pub(crate) async fn networks(ctx: &Ctx, a: &RunArgs) -> Result<Vec<String>> {
    let mut cl = NetworksClient::new(ctx.ch.clone());
    match request(a).map_err(CtlError)? {
        NetRequest::Host | NetRequest::None => Ok(Vec::new()),
        NetRequest::Default => {
            let list = cl
                .list(ctx.req(api::ListNetworksRequest {}))
                .await
                .map(|r| r.into_inner().networks);
            Ok(default_network(a, list)?.into_iter().collect())
        }
        NetRequest::Networks(names) => {
            let mut out = Vec::new();
            for name in names {
                let got = cl
                    .get(ctx.req(api::GetNetworkRequest { name: name.clone() }))
                    .await
                    .map(|r| r.into_inner().network.unwrap_or_default());
                out.push(named_network(&name, got)?);
            }
            Ok(out)
        }
    }
}

/// The default network from the daemon's list; none (as ctr) where the
/// daemon has no networks service, unless flags need one.
fn default_network(
    a: &RunArgs,
    list: Result<Vec<api::Network>, Status>,
) -> Result<Option<String>, CtlError> {
    match list {
        Ok(nets) => match nets.into_iter().find(|n| n.default) {
            Some(n) => Ok(Some(n.name)),
            None => Err(CtlError(
                "the daemon lists no default network; give --net NAME or --net none".into(),
            )),
        },
        Err(s) if s.code() == Code::Unimplemented => {
            let needs = [
                (!a.publish.is_empty(), "-p/--publish"),
                (!a.dns.is_empty(), "--dns"),
                (!a.add_hosts.is_empty(), "--add-host"),
            ]
            .into_iter()
            .find_map(|(given, flag)| given.then_some(flag));
            match needs {
                Some(flag) => Err(CtlError(format!(
                    "{flag} needs a network, but {NO_SERVICE}: run without it (--net none is the default there)"
                ))),
                None => Ok(None),
            }
        }
        Err(s) => Err(CtlError(format!("list networks: {}", status_error(&s)))),
    }
}

/// Network `name` as the daemon's Get answered.
fn named_network(name: &str, got: Result<api::Network, Status>) -> Result<String, CtlError> {
    match got {
        Ok(n) => Ok(n.name),
        Err(s) if s.code() == Code::NotFound => Err(CtlError(format!(
            "--net {name}: no such network (berthctl network ls lists them)"
        ))),
        Err(s) if s.code() == Code::Unimplemented => Err(CtlError(format!(
            "--net {name}: {NO_SERVICE}; only --net none and --net host work there"
        ))),
        Err(s) => Err(CtlError(format!("--net {name}: {}", status_error(&s)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(a: &[&str]) -> RunArgs {
        let mut v = vec!["berthctl", "run"];
        v.extend_from_slice(a);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Run(r) => r,
            c => panic!("parsed as {c:?}"),
        }
    }

    fn net(name: &str, default: bool) -> api::Network {
        api::Network {
            name: name.into(),
            default,
            ..Default::default()
        }
    }

    #[test]
    fn the_default_is_the_daemons_default_network() {
        let list = Ok(vec![net("n1", false), net("bridge", true)]);
        assert_eq!(
            default_network(&args(&["-p", "80:80", "bb"]), list).unwrap(),
            Some("bridge".into())
        );
        let e = default_network(&args(&["bb"]), Ok(vec![net("n1", false)])).unwrap_err();
        assert!(e.0.contains("no default network"), "{e}");
        let e = default_network(&args(&["bb"]), Err(Status::unavailable("down"))).unwrap_err();
        assert!(e.0.contains("down (unavailable)"), "{e}");
    }

    #[test]
    fn without_a_networks_service_the_default_is_none() {
        let unimpl = || Err(Status::unimplemented("unknown service"));
        assert_eq!(default_network(&args(&["bb"]), unimpl()).unwrap(), None);
        for (a, flag) in [
            (&["-p", "80:80", "bb"][..], "-p/--publish"),
            (&["--dns", "1.1.1.1", "bb"][..], "--dns"),
            (&["--add-host", "a:1.2.3.4", "bb"][..], "--add-host"),
        ] {
            let e = default_network(&args(a), unimpl()).unwrap_err();
            assert!(
                e.0.starts_with(&format!("{flag} needs a network")) && e.0.contains("containerd"),
                "{e}"
            );
        }
    }

    #[test]
    fn named_networks_must_exist() {
        assert_eq!(named_network("a", Ok(net("a", false))).unwrap(), "a");
        let e = named_network("nope", Err(Status::not_found("network \"nope\" not found")))
            .unwrap_err();
        assert!(
            e.0.contains("--net nope: no such network") && e.0.contains("network ls"),
            "{e}"
        );
        let e = named_network("a", Err(Status::unimplemented(""))).unwrap_err();
        assert!(
            e.0.contains("--net a: this daemon has no networks service"),
            "{e}"
        );
        let e = named_network("a", Err(Status::invalid_argument("bad name"))).unwrap_err();
        assert!(e.0.contains("bad name (invalid argument)"), "{e}");
    }

    fn req(a: &[&str]) -> Result<NetRequest, String> {
        super::request(&args(a))
    }

    #[test]
    fn net_values() {
        assert_eq!(req(&["bb"]), Ok(NetRequest::Default));
        assert_eq!(req(&["--net", "host", "bb"]), Ok(NetRequest::Host));
        assert_eq!(req(&["--network=none", "bb"]), Ok(NetRequest::None));
        // The old flag is a hidden alias, alone or repeated as --net host.
        assert_eq!(req(&["--net-host", "bb"]), Ok(NetRequest::Host));
        assert_eq!(
            req(&["--net-host", "--net", "host", "bb"]),
            Ok(NetRequest::Host)
        );
        assert_eq!(
            req(&["--net", "b", "--network", "a", "bb"]),
            Ok(NetRequest::Networks(vec!["b".into(), "a".into()]))
        );
        let help = Cli::try_parse_from(["berthctl", "run", "--help"])
            .unwrap_err()
            .to_string();
        assert!(help.contains("--net <NAME|host|none>"), "{help}");
        assert!(!help.contains("--net-host"), "{help}");
    }

    #[test]
    fn host_and_none_stand_alone() {
        for args in [
            &["--net", "host", "--net", "a", "bb"][..],
            &["--net", "none", "--net", "a", "bb"][..],
            &["--net", "none", "--net", "host", "bb"][..],
            &["--net-host", "--net", "none", "bb"][..],
            &["--net", "a", "--net-host", "bb"][..],
        ] {
            let e = req(args).unwrap_err();
            assert!(e.contains("cannot be combined"), "{args:?}: {e}");
        }
        let e = req(&["--net", "a", "--net", "a", "bb"]).unwrap_err();
        assert!(e.contains("--net a is given twice"), "{e}");
    }

    #[test]
    fn publish_dns_and_hosts_need_a_network() {
        for (args, says) in [
            (
                &["--net", "host", "-p", "80:80", "bb"][..],
                "-p/--publish cannot be used with --net host",
            ),
            (
                &["--net-host", "--dns", "1.1.1.1", "bb"][..],
                "--dns cannot be used with --net host",
            ),
            (
                &["--net", "none", "--add-host", "a:1.2.3.4", "bb"][..],
                "--add-host cannot be used with --net none",
            ),
        ] {
            let e = req(args).unwrap_err();
            assert!(e.contains(says), "{args:?}: {e}");
        }
        assert!(req(&["-p", "80:80", "--dns", "1.1.1.1", "bb"]).is_ok());
        assert!(req(&["--net", "a", "-p", "80:80", "bb"]).is_ok());
    }

    #[test]
    fn a_host_port_is_published_once() {
        let e = req(&["-p", "8080:80", "-p", "127.0.0.1:8080:81", "bb"]).unwrap_err();
        assert!(
            e.contains("-p 8080:80/tcp and -p 127.0.0.1:8080:81/tcp"),
            "{e}"
        );
        assert!(req(&["-p", "8080:80", "-p", "8080:80/udp", "bb"]).is_ok());
    }

    #[test]
    fn labels_set_by_flags_are_not_labels_to_set() {
        let e = req(&["--label", "berth.ports=1:1/tcp", "bb"]).unwrap_err();
        assert!(
            e.contains("--label berth.ports") && e.contains("-p/--publish"),
            "{e}"
        );
        let e = req(&["--label", "berth.networks", "bb"]).unwrap_err();
        assert!(e.contains("--net"), "{e}");
        assert!(req(&["--label", "berth.other=x", "bb"]).is_ok());
    }

    #[test]
    fn labels_in_canonical_form() {
        let r = args(&[
            "--net",
            "front",
            "--net",
            "back",
            "-p",
            "8080:80",
            "-p",
            "0.0.0.0:53:53/udp",
            "--publish",
            "127.0.0.1:9000:9000",
            "--dns",
            "10.0.0.2",
            "--dns",
            "1.1.1.1",
            "--add-host",
            "db:10.0.0.5",
            "--add-host",
            "cache.local:10.0.0.6",
            "bb",
        ]);
        let nets = vec!["front".to_string(), "back".to_string()];
        assert_eq!(
            labels(&r, &nets),
            [
                (L::NETWORKS, "front,back".to_string()),
                (
                    L::PORTS,
                    "8080:80/tcp,53:53/udp,127.0.0.1:9000:9000/tcp".to_string()
                ),
                (L::DNS, "10.0.0.2,1.1.1.1".to_string()),
                (
                    L::EXTRA_HOSTS,
                    "db:10.0.0.5,cache.local:10.0.0.6".to_string()
                ),
            ]
        );
        // What berthd parses back is what was asked for.
        let ports: Vec<L::PortMapping> = L::items(&labels(&r, &nets)[1].1)
            .map(|p| L::PortMapping::parse(p).unwrap())
            .collect();
        assert_eq!(ports, r.publish);
        // Only the network label when nothing else is asked; none at all
        // without a network.
        let r = args(&["--net", "n", "bb"]);
        assert_eq!(labels(&r, &["n".into()]), [(L::NETWORKS, "n".to_string())]);
        assert!(labels(&r, &[]).is_empty());
    }
}
