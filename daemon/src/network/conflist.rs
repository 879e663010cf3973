//! Networks as CNI conflists in `network.cni_conf_dir`: reading them (the
//! `*.conflist` files in name order; the first file naming a network wins,
//! as libcni picks), the default network's definition, and user networks
//! created and removed as files of their own.

use super::cache::write_atomic;
use super::cni::CNI_VERSION;
use super::subnet::Subnet;
use crate::config::valid_network_name;
use crate::error::{Error, Result, io_err};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// One network definition as read from its file.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    /// Each plugin's configuration object, in chain order.
    pub plugins: Vec<Value>,
    /// The whole file, kept so DEL can use exactly what ADD used.
    pub raw: Value,
    pub path: PathBuf,
}

impl NetConfList {
    /// Reads and checks one conflist value.
    pub fn parse(raw: Value, path: PathBuf) -> Result<NetConfList> {
        let bad = |why: String| Error::invalid(format!("network config {}: {why}", path.display()));
        let s = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_string);
        let name = s("name").ok_or_else(|| bad("no \"name\"".into()))?;
        let cni_version = s("cniVersion").ok_or_else(|| bad("no \"cniVersion\"".into()))?;
        let plugins = raw
            .get("plugins")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| bad("no \"plugins\" list".into()))?;
        if plugins.is_empty() {
            return Err(bad("\"plugins\" is empty".into()));
        }
        for (i, p) in plugins.iter().enumerate() {
            if p.get("type").and_then(Value::as_str).is_none() {
                return Err(bad(format!("plugin {i} has no \"type\"")));
            }
        }
        let disable_check = raw
            .get("disableCheck")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(NetConfList {
            name,
            cni_version,
            disable_check,
            plugins,
            raw,
            path,
        })
    }

    /// The subnets the network's IPAM hands out from (host-local's
    /// `ranges` and its older `subnet`).
    pub fn subnets(&self) -> Vec<Subnet> {
        let mut out = Vec::new();
        for p in &self.plugins {
            let Some(ipam) = p.get("ipam") else { continue };
            let mut cidrs: Vec<&str> = Vec::new();
            if let Some(s) = ipam.get("subnet").and_then(Value::as_str) {
                cidrs.push(s);
            }
            for set in ipam
                .get("ranges")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for r in set.as_array().into_iter().flatten() {
                    if let Some(s) = r.get("subnet").and_then(Value::as_str) {
                        cidrs.push(s);
                    }
                }
            }
            out.extend(cidrs.into_iter().filter_map(|c| Subnet::parse(c).ok()));
        }
        out
    }
}

/// Every network in `dir`, first definition of each name only.
pub fn load_all(dir: &Path) -> Result<Vec<NetConfList>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("read {}", dir.display()), e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
        .collect();
    files.sort();
    let mut out: Vec<NetConfList> = Vec::new();
    for f in files {
        let text = std::fs::read(&f).map_err(|e| io_err(format!("read {}", f.display()), e))?;
        let raw: Value = serde_json::from_slice(&text)
            .map_err(|e| Error::invalid(format!("network config {}: {e}", f.display())))?;
        let n = NetConfList::parse(raw, f)?;
        if !out.iter().any(|o| o.name == n.name) {
            out.push(n);
        }
    }
    Ok(out)
}

/// What a user asks for when creating a network.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkSpec {
    pub name: String,
    /// Chosen from 10.89.0.0/24 upwards when absent.
    pub subnet: Option<String>,
    /// The subnet's first address when absent.
    pub gateway: Option<String>,
    /// No masquerading and no default route: containers reach each other
    /// and the bridge's address only.
    pub internal: bool,
}

/// The linux bridge of a network: `berth0` for the default one, else a
/// name derived from the network's (at most 15 bytes, as IFNAMSIZ allows).
pub fn bridge_name(network: &str, default_network: &str) -> String {
    if network == default_network {
        return "berth0".into();
    }
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(network.as_bytes()));
    format!("br-{}", &h[..12])
}

/// A bridge network conflist: bridge, host-local IPAM (reservations in
/// `ipam_dir`), portmap, firewall (isolated from other bridges).
pub fn bridge_conflist(
    name: &str,
    bridge: &str,
    subnet: Subnet,
    gateway: std::net::IpAddr,
    internal: bool,
    ipam_dir: &Path,
) -> Value {
    let mut ipam = json!({
        "type": "host-local",
        "ranges": [[{ "subnet": subnet.to_string(), "gateway": gateway.to_string() }]],
        "dataDir": ipam_dir,
    });
    if !internal {
        let any = if subnet.addr.is_ipv4() {
            "0.0.0.0/0"
        } else {
            "::/0"
        };
        ipam["routes"] = json!([{ "dst": any }]);
    }
    json!({
        "cniVersion": CNI_VERSION,
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": !internal,
                "hairpinMode": true,
                "ipam": ipam,
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
            // Only this bridge may reach its containers, as docker isolates
            // its networks: without it the host forwards between bridges.
            { "type": "firewall", "ingressPolicy": "same-bridge" },
        ],
    })
}

/// Creates `spec` as `<dir>/<name>.conflist`, refusing names in use,
/// reserved names and subnets overlapping another network's.
pub fn create(
    dir: &Path,
    spec: &NetworkSpec,
    default_network: &str,
    ipam_dir: &Path,
) -> Result<NetConfList> {
    if !valid_network_name(&spec.name) {
        return Err(Error::invalid(format!(
            "network name {:?} is invalid: letters, digits, '_', '.', '-', starting with a letter or digit, at most 64",
            spec.name
        )));
    }
    if matches!(spec.name.as_str(), "host" | "none") {
        return Err(Error::invalid(format!(
            "network name {:?} is reserved (it is a network mode)",
            spec.name
        )));
    }
    let existing = load_all(dir)?;
    if let Some(o) = existing.iter().find(|o| o.name == spec.name) {
        return Err(Error::already_exists(format!(
            "network {:?} already exists ({})",
            spec.name,
            o.path.display()
        )));
    }
    let taken: Vec<(String, Subnet)> = existing
        .iter()
        .flat_map(|o| o.subnets().into_iter().map(|s| (o.name.clone(), s)))
        .collect();
    let subnet = match &spec.subnet {
        Some(s) => {
            let s = Subnet::parse(s)?;
            if let Some((n, t)) = taken.iter().find(|(_, t)| t.overlaps(&s)) {
                return Err(Error::already_exists(format!(
                    "subnet {s} overlaps network {n:?}'s subnet {t}"
                )));
            }
            s
        }
        None => (0..=255u8)
            .map(|i| Subnet::parse(&format!("10.89.{i}.0/24")).expect("valid subnet"))
            .find(|s| !taken.iter().any(|(_, t)| t.overlaps(s)))
            .ok_or_else(|| {
                Error::new(
                    berth_proto::errdefs::Kind::ResourceExhausted,
                    "no free subnet left in 10.89.0.0/16; give one with --subnet",
                )
            })?,
    };
    let gateway = match &spec.gateway {
        Some(g) => {
            let ip: std::net::IpAddr = g
                .parse()
                .map_err(|_| Error::invalid(format!("gateway {g:?} is not an IP address")))?;
            if !subnet.contains(ip) || ip == subnet.addr {
                return Err(Error::invalid(format!(
                    "gateway {ip} is not a host address of subnet {subnet}"
                )));
            }
            ip
        }
        None => subnet.nth(1),
    };
    let bridge = bridge_name(&spec.name, default_network);
    let raw = bridge_conflist(
        &spec.name,
        &bridge,
        subnet,
        gateway,
        spec.internal,
        ipam_dir,
    );
    write_conflist(dir, &spec.name, raw)
}

/// Writes a network's file (the directory is made if missing).
pub fn write_conflist(dir: &Path, name: &str, raw: Value) -> Result<NetConfList> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(format!("create {}", dir.display()), e))?;
    let path = dir.join(format!("{name}.conflist"));
    let mut bytes = serde_json::to_vec_pretty(&raw)
        .map_err(|e| Error::internal(format!("encode network {name}: {e}")))?;
    bytes.push(b'\n');
    // Readable by all like any file under /etc; nothing secret in it.
    write_atomic(&path, &bytes, false)?;
    NetConfList::parse(raw, path)
}

/// Removes network `name`'s file.
pub fn remove(dir: &Path, name: &str) -> Result<()> {
    let n = load_all(dir)?
        .into_iter()
        .find(|n| n.name == name)
        .ok_or_else(|| Error::not_found(format!("network {name:?} not found")))?;
    std::fs::remove_file(&n.path).map_err(|e| io_err(format!("remove {}", n.path.display()), e))
}
