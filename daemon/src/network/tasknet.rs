//! Networking of tasks: what the container's labels
//! ([`berth_proto::labels`]) ask for is set up before its task is created
//! (network namespace, CNI ADD per network, published ports, name files)
//! and torn down when the task is deleted, when its shim dies, and at
//! restart for tasks that died meanwhile. The container record's spec is
//! never changed; only the bundle's copy points at the namespace and files.

use super::cache::Cached;
use super::cni::{self, Attachment};
use super::etc::{self, EtcDir, Record};
use super::manager::{NetworkManager, cni_container_id};
use crate::error::{Error, Result};
use berth_proto::labels::{self, PortMapping, Protocol};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

/// What a container's labels ask for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Wanted {
    pub networks: Vec<String>,
    pub ports: Vec<PortMapping>,
    pub dns: Vec<Ipv4Addr>,
    pub extra_hosts: Vec<(String, Ipv4Addr)>,
    /// `CNI_ARGS` for every plugin call.
    pub cni_args: Vec<(String, String)>,
}

impl Wanted {
    /// `None` when the container asks for no networking. A malformed
    /// value is an invalid argument naming its label.
    pub fn from_labels(l: &HashMap<String, String>) -> Result<Option<Wanted>> {
        let get = |k: &str| l.get(k).map(String::as_str).unwrap_or_default();
        let networks: Vec<String> = labels::items(get(labels::NETWORKS))
            .map(String::from)
            .collect();
        let bad = |k: &str, e: String| Error::invalid(format!("label {k}: {e}"));
        if networks.is_empty() {
            for k in [
                labels::PORTS,
                labels::DNS,
                labels::EXTRA_HOSTS,
                labels::CNI_ARGS,
            ] {
                if !get(k).trim().is_empty() {
                    return Err(bad(
                        k,
                        format!("needs a network in {} (none is named)", labels::NETWORKS),
                    ));
                }
            }
            return Ok(None);
        }
        let mut seen = HashSet::new();
        if let Some(d) = networks.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(bad(
                labels::NETWORKS,
                format!("network {d:?} is named twice"),
            ));
        }
        let ports = labels::items(get(labels::PORTS))
            .map(PortMapping::parse)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(labels::PORTS, e))?;
        for (i, p) in ports.iter().enumerate() {
            if let Some(q) = ports[..i].iter().find(|q| q.conflicts_with(p)) {
                return Err(bad(
                    labels::PORTS,
                    format!("{q} and {p} claim the same host port"),
                ));
            }
        }
        let dns = labels::items(get(labels::DNS))
            .map(|s| {
                s.parse::<Ipv4Addr>()
                    .map_err(|_| bad(labels::DNS, format!("{s:?} is not an IPv4 address")))
            })
            .collect::<Result<Vec<_>>>()?;
        let extra_hosts = labels::items(get(labels::EXTRA_HOSTS))
            .map(labels::parse_extra_host)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(labels::EXTRA_HOSTS, e))?;
        let cni_args =
            labels::parse_cni_args(get(labels::CNI_ARGS)).map_err(|e| bad(labels::CNI_ARGS, e))?;
        Ok(Some(Wanted {
            networks,
            ports,
            dns,
            extra_hosts,
            cni_args,
        }))
    }
}

/// The `portMappings` capability argument (portmap's names).
fn port_mappings(ports: &[PortMapping]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| {
                let mut m = json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol.as_str(),
                });
                if let Some(ip) = p.host_ip {
                    m["hostIP"] = json!(ip.to_string());
                }
                m
            })
            .collect(),
    )
}

/// The published ports a cached ADD holds.
fn cached_ports(c: &Cached) -> Vec<PortMapping> {
    let Some(list) = c
        .runtime_config
        .get("portMappings")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|m| {
            let port = |k| m.get(k)?.as_u64().and_then(|p| u16::try_from(p).ok());
            Some(PortMapping {
                host_ip: m
                    .get("hostIP")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                    .filter(|ip: &Ipv4Addr| !ip.is_unspecified()),
                host_port: port("hostPort")?,
                container_port: port("containerPort")?,
                protocol: match m.get("protocol").and_then(Value::as_str) {
                    Some("udp") => Protocol::Udp,
                    _ => Protocol::Tcp,
                },
            })
        })
        .collect()
}

/// Whether a host process holds the port: a bind in berthd's own network
/// namespace (portmap's DNAT does not refuse a taken port by itself).
fn host_port_free(p: &PortMapping) -> Result<()> {
    let addr = (p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), p.host_port);
    let r = match p.protocol {
        Protocol::Tcp => std::net::TcpListener::bind(addr).map(drop),
        Protocol::Udp => std::net::UdpSocket::bind(addr).map(drop),
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::precondition(format!(
            "host port {p} is already in use by a process on the host: publish another host port"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Err(Error::invalid(format!(
            "host port {p}: the address is not one of this host's"
        ))),
        Err(e) => Err(Error::internal(format!("check host port {p}: {e}"))),
    }
}

/// The ports of attachments being set up, not yet in the cache.
type Reserved = Mutex<HashMap<(String, String), Vec<PortMapping>>>;

/// Sets up and tears down the networking of tasks.
#[derive(Debug)]
pub struct TaskNetworks {
    mgr: Arc<NetworkManager>,
    etc: EtcDir,
    reserved: Reserved,
    /// Serializes hosts-file rewrites (file writes only, never a plugin).
    hosts: Mutex<()>,
}

/// Drops a port reservation however the attach ends.
struct Reservation<'a> {
    reserved: &'a Reserved,
    key: (String, String),
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl TaskNetworks {
    pub fn new(mgr: Arc<NetworkManager>, state: &std::path::Path) -> Self {
        TaskNetworks {
            mgr,
            etc: EtcDir::new(state),
            reserved: Mutex::new(HashMap::new()),
            hosts: Mutex::new(()),
        }
    }

    pub fn etc(&self) -> &EtcDir {
        &self.etc
    }

    /// Sets up what the container's labels ask for and returns the spec
    /// (JSON) its runtime gets: unchanged when it asks for nothing. On
    /// failure nothing of it is left.
    pub async fn attach(
        &self,
        ns: &str,
        id: &str,
        labels: &HashMap<String, String>,
        spec: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let Some(want) = Wanted::from_labels(labels)? else {
            return Ok(spec);
        };
        let mut spec: Value = serde_json::from_slice(&spec)
            .map_err(|e| Error::invalid(format!("container {id}: spec is not JSON: {e}")))?;
        check_new_netns(&spec, id)?;
        for n in &want.networks {
            self.mgr.network(n).await.map_err(|e| {
                e.context(format!(
                    "container {id} joins network {n:?} (label {})",
                    labels::NETWORKS
                ))
            })?;
        }
        let _reservation = self.reserve(ns, id, &want.ports)?;
        // Left by a crash mid-create of a task with this id: undo it first.
        if self.mgr.netns().path(ns, id)?.exists() || !self.entries_of(ns, id)?.is_empty() {
            self.detach(ns, id).await?;
        }
        match self.set_up(ns, id, &want, &mut spec).await {
            Ok(()) => serde_json::to_vec(&spec)
                .map_err(|e| Error::internal(format!("encode the spec of {id}: {e}"))),
            Err(e) => Err(match self.detach(ns, id).await {
                Ok(()) => e,
                Err(d) => e.context(format!(
                    "and undoing it failed too ({}); berthd retries at its next start",
                    d.chain()
                )),
            }),
        }
    }

    /// Checks and reserves the ports against every other attachment (of
    /// any namespace: host ports are the host's) and host processes.
    fn reserve(
        &self,
        ns: &str,
        id: &str,
        ports: &[PortMapping],
    ) -> Result<Option<Reservation<'_>>> {
        if ports.is_empty() {
            return Ok(None);
        }
        let me = cni_container_id(ns, id);
        let taken: Vec<(String, PortMapping)> = self
            .mgr
            .attachments()?
            .iter()
            .filter(|c| c.attachment.container_id != me)
            .flat_map(|c| {
                let who = c
                    .owner
                    .clone()
                    .unwrap_or_else(|| "another container".into());
                cached_ports(c).into_iter().map(move |p| (who.clone(), p))
            })
            .collect();
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        for p in ports {
            let held = taken.iter().cloned().chain(
                reserved
                    .iter()
                    .filter(|(k, _)| k.0 != ns || k.1 != id)
                    .flat_map(|(k, v)| v.iter().map(move |q| (format!("{}/{}", k.0, k.1), *q))),
            );
            if let Some((who, q)) = held.into_iter().find(|(_, q)| q.conflicts_with(p)) {
                return Err(Error::precondition(format!(
                    "host port {p} is already published by container {who} (as {q}): publish another host port"
                )));
            }
            host_port_free(p)?;
        }
        reserved.insert((ns.into(), id.into()), ports.to_vec());
        Ok(Some(Reservation {
            reserved: &self.reserved,
            key: (ns.into(), id.into()),
        }))
    }

    async fn set_up(&self, ns: &str, id: &str, want: &Wanted, spec: &mut Value) -> Result<()> {
        let netns = self.mgr.netns().create(ns, id)?;
        let mut networks = Vec::new();
        for (i, name) in want.networks.iter().enumerate() {
            let att = Attachment {
                container_id: cni_container_id(ns, id),
                netns: netns.clone(),
                ifname: format!("eth{i}"),
                args: want.cni_args.clone(),
            };
            let mut rc = Map::new();
            if i == 0 && !want.ports.is_empty() {
                rc.insert("portMappings".into(), port_mappings(&want.ports));
            }
            let result = self
                .mgr
                .add_owned(name, &att, &rc, &format!("{ns}/{id}"))
                .await?;
            networks.push((name.clone(), cni::view(&result).addresses()));
        }
        let hostname = spec
            .get("hostname")
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
            .unwrap_or(id)
            .to_string();
        let me = Record {
            id: id.into(),
            hostname,
            networks,
            extra_hosts: want.extra_hosts.clone(),
        };
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv = etc::resolv_conf(&host_resolv, &want.dns);
        let dir = {
            let _g = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            let mut all = self.etc.records(ns)?;
            all.retain(|r| r.id != id);
            let dir = self.etc.write(ns, &me, &etc::hosts(&me, &all), &resolv)?;
            all.push(me.clone());
            self.refresh_peers(ns, &all, &me);
            dir
        };
        point_spec_at(spec, &netns, &dir);
        Ok(())
    }

    /// Rewrites the hosts files of the containers sharing a network with
    /// `changed`. A failure is logged: the peer still runs, and its next
    /// refresh writes the whole file again.
    fn refresh_peers(&self, ns: &str, all: &[Record], changed: &Record) {
        for p in all.iter().filter(|p| p.id != changed.id) {
            if p.networks
                .iter()
                .any(|(n, _)| changed.networks.iter().any(|(m, _)| m == n))
                && let Err(e) = self.etc.rewrite_hosts(ns, &p.id, &etc::hosts(p, all))
            {
                tracing::warn!("update /etc/hosts of {ns}/{}: {}", p.id, e.chain());
            }
        }
    }

    /// The addresses task `id` got on its networks, in network order
    /// (none when it has no networking).
    pub fn addresses(&self, ns: &str, id: &str) -> Result<Vec<std::net::IpAddr>> {
        Ok(self
            .etc
            .records(ns)?
            .into_iter()
            .find(|r| r.id == id)
            .map(|r| r.networks.into_iter().flat_map(|(_, a)| a).collect())
            .unwrap_or_default())
    }

    fn entries_of(&self, ns: &str, id: &str) -> Result<Vec<Cached>> {
        let me = cni_container_id(ns, id);
        Ok(self
            .mgr
            .attachments()?
            .into_iter()
            .filter(|c| c.attachment.container_id == me)
            .collect())
    }

    /// Tears down a task's networking: DEL on every attachment, the
    /// namespace and the files; peers' hosts files lose it. Repeatable;
    /// an attachment whose DEL fails stays cached for a later retry.
    pub async fn detach(&self, ns: &str, id: &str) -> Result<()> {
        let mut failed = Vec::new();
        for c in self.entries_of(ns, id)? {
            if let Err(e) = self.mgr.del(&c.network_name, &c.attachment).await {
                failed.push(e.chain());
            }
        }
        self.mgr.netns().remove(ns, id)?;
        let gone = {
            let _g = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            let all = self.etc.records(ns)?;
            let gone = all.iter().find(|r| r.id == id).cloned();
            self.etc.remove(ns, id)?;
            if let Some(g) = &gone {
                let rest: Vec<Record> = all.into_iter().filter(|r| r.id != id).collect();
                self.refresh_peers(ns, &rest, g);
            }
            gone
        };
        drop(gone);
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::internal(format!(
                "tear down the networks of {ns}/{id}: {}",
                failed.join("; ")
            )))
        }
    }

    /// [`detach`](Self::detach) for any task, networked or not: without
    /// its namespace or files there is nothing to tear down, and no file
    /// is read (task deletes pay nothing for networking they never had).
    /// Attachments left with neither (a DEL that failed after the
    /// namespace went) are [`reconcile`](Self::reconcile)'s.
    pub async fn detach_task(&self, ns: &str, id: &str) -> Result<()> {
        if !self.mgr.netns().path(ns, id)?.exists() && !self.etc.dir(ns, id).exists() {
            return Ok(());
        }
        self.detach(ns, id).await
    }

    /// Tears down every attachment, namespace and file whose task is not
    /// in `live` (tasks that died while berthd was down, or a crash mid-
    /// create or mid-delete); returns how many containers it cleaned.
    pub async fn reconcile(&self, live: &HashSet<(String, String)>) -> Result<usize> {
        let mut stale: HashSet<(String, String)> = HashSet::new();
        for ns in self
            .etc
            .namespaces()?
            .into_iter()
            .chain(self.mgr.netns().namespaces()?)
        {
            for id in self
                .etc
                .ids(&ns)?
                .into_iter()
                .chain(self.mgr.netns().list(&ns)?)
            {
                if !live.contains(&(ns.clone(), id.clone())) {
                    stale.insert((ns.clone(), id));
                }
            }
        }
        for (ns, id) in &stale {
            self.detach(ns, id).await?;
        }
        // Attachments whose namespace and files are gone already.
        let live_ids: HashSet<String> = live
            .iter()
            .map(|(ns, id)| cni_container_id(ns, id))
            .collect();
        let mut orphans = 0;
        for c in self.mgr.attachments()? {
            if !live_ids.contains(&c.attachment.container_id) {
                self.mgr.del(&c.network_name, &c.attachment).await?;
                orphans += 1;
            }
        }
        Ok(stale.len() + orphans)
    }
}

/// Networks need a network namespace of the container's own, made by the
/// runtime at the path berthd gives: not the host's, not one joined.
fn check_new_netns(spec: &Value, id: &str) -> Result<()> {
    let nss = spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let net = nss
        .iter()
        .find(|n| n.get("type").and_then(Value::as_str) == Some("network"));
    match net {
        None => Err(Error::precondition(format!(
            "container {id} joins networks (label {}) but its spec shares the host's network \
             namespace: drop the label or give the spec a network namespace",
            labels::NETWORKS
        ))),
        Some(n)
            if n.get("path")
                .and_then(Value::as_str)
                .is_some_and(|p| !p.is_empty()) =>
        {
            Err(Error::precondition(format!(
                "container {id} joins networks (label {}) but its spec joins the network \
                 namespace at {}: drop one of them",
                labels::NETWORKS,
                n["path"]
            )))
        }
        Some(_)
            if nss
                .iter()
                .any(|n| n.get("type").and_then(Value::as_str) == Some("user")) =>
        {
            // The namespace berthd makes belongs to the host's user
            // namespace: a container in its own could not mount /sys in it.
            Err(Error::precondition(format!(
                "container {id} joins networks (label {}) and has a user namespace: berth cannot give a user-namespaced container CNI networks yet; drop one of them",
                labels::NETWORKS
            )))
        }
        Some(_) => Ok(()),
    }
}

/// The bundle's spec: the namespace by path, and the files bind-mounted
/// read-only where the spec mounts nothing already (a container writing
/// them would fill berthd's state).
fn point_spec_at(spec: &mut Value, netns: &std::path::Path, dir: &std::path::Path) {
    if let Some(nss) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    {
        for n in nss.iter_mut() {
            if n.get("type").and_then(Value::as_str) == Some("network") {
                n["path"] = json!(netns.display().to_string());
            }
        }
    }
    let Some(obj) = spec.as_object_mut() else {
        return;
    };
    let mounts = obj.entry("mounts").or_insert_with(|| json!([]));
    let Some(mounts) = mounts.as_array_mut() else {
        return;
    };
    for f in etc::FILES {
        let dest = format!("/etc/{f}");
        if mounts
            .iter()
            .any(|m| m.get("destination").and_then(Value::as_str) == Some(dest.as_str()))
        {
            continue;
        }
        mounts.push(json!({
            "destination": dest,
            "type": "bind",
            "source": dir.join(f).display().to_string(),
            "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
        }));
    }
}

#[cfg(test)]
#[path = "tasknet_tests.rs"]
mod tests;
