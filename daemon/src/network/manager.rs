//! The network manager: networks (conflists) and attachments (a chain of
//! plugin calls per network and container, with the result cached).

use super::cache::{Cache, Cached, KIND};
use super::cni::{Attachment, CNI_VERSION, Command, Exec};
use super::conflist::{self, NetConfList, NetworkSpec};
use super::localnet::LocalnetGuard;
use super::netns::NetnsDir;
use crate::config::NetworkConfig;
use crate::error::{Error, Result, io_err};
use berth_snapshotter::mount::private;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default network's subnet.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";

/// The CNI container ID of container `id` in containerd namespace `ns`:
/// IDs are unique only per namespace, while plugins key IP reservations
/// and firewall rules by this value host-wide. A digest keeps it unique
/// and within the spec's characters.
pub fn cni_container_id(ns: &str, id: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(ns.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    hex::encode(h.finalize())
}

/// Networks and attachments of one daemon.
#[derive(Debug)]
pub struct NetworkManager {
    exec: Exec,
    conf_dir: PathBuf,
    default_network: String,
    /// host-local's reservations (`dataDir`).
    ipam_dir: PathBuf,
    cache: Cache,
    netns: NetnsDir,
    /// Serializes changes to the conf dir (duplicate and overlap checks
    /// read it, then write).
    conf_lock: tokio::sync::Mutex<()>,
    /// Serializes plugin chains (ADD and DEL), host-wide: plugins create
    /// shared host state on first use (portmap's CNI-HOSTPORT-* chains,
    /// the bridge) without locking, so two first ADDs at once fail with
    /// "Chain already exists". podman and netavark lock their network
    /// setup for the same reason.
    chain_lock: tokio::sync::Mutex<()>,
    localnet: LocalnetGuard,
}

impl NetworkManager {
    /// A manager keeping its files under `state/cni` and `state/netns`.
    pub fn new(cfg: &NetworkConfig, state: &Path) -> Self {
        let cni = state.join("cni");
        NetworkManager {
            exec: Exec {
                bin_dirs: cfg.cni_bin_dirs.clone(),
                timeout: Duration::from_secs(cfg.plugin_timeout_secs),
            },
            conf_dir: cfg.cni_conf_dir.clone(),
            default_network: cfg.default_network.clone(),
            ipam_dir: cni.join("networks"),
            cache: Cache::new(cni.join("results")),
            netns: NetnsDir::new(state),
            conf_lock: tokio::sync::Mutex::new(()),
            chain_lock: tokio::sync::Mutex::new(()),
            localnet: LocalnetGuard::new("iptables"),
        }
    }

    pub fn exec(&self) -> &Exec {
        &self.exec
    }

    pub fn netns(&self) -> &NetnsDir {
        &self.netns
    }

    pub fn ipam_dir(&self) -> &Path {
        &self.ipam_dir
    }

    pub fn default_network(&self) -> &str {
        &self.default_network
    }

    /// Every network in the conf dir.
    pub fn list(&self) -> Result<Vec<NetConfList>> {
        conflist::load_all(&self.conf_dir)
    }

    /// Network `name`; the default one is written on first use.
    pub async fn network(&self, name: &str) -> Result<NetConfList> {
        if name == self.default_network {
            return self.ensure_default().await;
        }
        self.list()?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| Error::not_found(format!("network {name:?} not found")))
    }

    /// The default network, written if missing: bridge `berth0`,
    /// 10.88.0.0/16, host-local, portmap, firewall.
    pub async fn ensure_default(&self) -> Result<NetConfList> {
        let _g = self.conf_lock.lock().await;
        if let Some(n) = self
            .list()?
            .into_iter()
            .find(|n| n.name == self.default_network)
        {
            return Ok(n);
        }
        self.prepare_state()?;
        let spec = NetworkSpec {
            name: self.default_network.clone(),
            subnet: Some(DEFAULT_SUBNET.into()),
            ..Default::default()
        };
        conflist::create(&self.conf_dir, &spec, &self.default_network, &self.ipam_dir)
            .map_err(|e| e.context(format!("create the default network {:?}", spec.name)))
    }

    /// Creates a user network.
    pub async fn create(&self, spec: &NetworkSpec) -> Result<NetConfList> {
        if spec.name == self.default_network {
            return Err(Error::already_exists(format!(
                "{:?} is the default network's name",
                spec.name
            )));
        }
        let _g = self.conf_lock.lock().await;
        self.prepare_state()?;
        conflist::create(&self.conf_dir, spec, &self.default_network, &self.ipam_dir)
    }

    /// Removes a user network's file. Whether containers still use it is
    /// the caller's check (it knows the containers).
    pub async fn remove(&self, name: &str) -> Result<()> {
        if name == self.default_network {
            return Err(Error::precondition(format!(
                "{name:?} is the default network; it cannot be removed"
            )));
        }
        let _g = self.conf_lock.lock().await;
        conflist::remove(&self.conf_dir, name)
    }

    /// `state/cni` is owner-only: reservations and results name containers.
    fn prepare_state(&self) -> Result<()> {
        if let Some(cni) = self.ipam_dir.parent() {
            private::dir(cni, private::OWNER_ONLY)
                .map_err(|e| io_err(format!("create {}", cni.display()), e))?;
        }
        Ok(())
    }

    /// Attaches `att` to network `name`: ADD through every plugin, each
    /// given the previous one's result. `runtime_config` holds capability
    /// arguments (`portMappings`, ...) for the plugins that declare them.
    /// On failure the plugins that ran are deleted again.
    pub async fn add(
        &self,
        name: &str,
        att: &Attachment,
        runtime_config: &Map<String, Value>,
    ) -> Result<Value> {
        self.add_with(name, att, runtime_config, None).await
    }

    /// [`add`](Self::add) for a container, recording `owner` (`ns/id`).
    pub async fn add_owned(
        &self,
        name: &str,
        att: &Attachment,
        runtime_config: &Map<String, Value>,
        owner: &str,
    ) -> Result<Value> {
        self.add_with(name, att, runtime_config, Some(owner.to_string()))
            .await
    }

    async fn add_with(
        &self,
        name: &str,
        att: &Attachment,
        runtime_config: &Map<String, Value>,
        owner: Option<String>,
    ) -> Result<Value> {
        let net = self.network(name).await?;
        if self.cache.load(name, att)?.is_some() {
            return Err(Error::already_exists(format!(
                "container {} is already attached to network {name:?} as {}",
                att.container_id, att.ifname
            )));
        }
        if net.plugins.iter().any(|p| plugin_type(p) == "portmap") {
            self.localnet.ensure().await?;
        }
        self.prepare_state()?;
        let mut entry = Cached {
            kind: KIND.into(),
            network_name: name.into(),
            attachment: att.clone(),
            config: net.raw.clone(),
            runtime_config: Value::Object(runtime_config.clone()),
            result: Value::Null,
            owner,
        };
        // Written before any plugin runs: after a crash mid-ADD, DEL still
        // finds the configuration to undo.
        self.cache.store(&entry)?;
        let mut prev: Option<Value> = None;
        let chain = self.chain_lock.lock().await;
        for p in &net.plugins {
            let kind = plugin_type(p);
            let cfg = plugin_config(&net, p, prev.as_ref(), runtime_config);
            match self.exec.run(kind, Command::Add, Some(att), &cfg).await {
                Ok(r) => prev = Some(r),
                Err(e) => {
                    // The undo takes the lock itself.
                    drop(chain);
                    let e = e.context(format!("attach to network {name:?}"));
                    return Err(match self.del(name, att).await {
                        Ok(()) => e,
                        Err(d) => e.context(format!(
                            "and undoing it failed too ({}); the next delete retries",
                            d.chain()
                        )),
                    });
                }
            }
        }
        drop(chain);
        entry.result = prev.unwrap_or(Value::Null);
        self.cache.store(&entry)?;
        Ok(entry.result)
    }

    /// Detaches `att` from network `name`: DEL through the plugins in
    /// reverse order with the cached configuration and result. Nothing
    /// cached means nothing was added (or it was already deleted). Every
    /// plugin runs even when one fails, and the cache entry stays then, so
    /// a later DEL retries.
    pub async fn del(&self, name: &str, att: &Attachment) -> Result<()> {
        let Some(entry) = self.cache.load(name, att)? else {
            return Ok(());
        };
        let net = NetConfList::parse(entry.config.clone(), PathBuf::from("<cached>"))?;
        let prev = (!entry.result.is_null()).then_some(&entry.result);
        let rc = runtime_config_of(&entry);
        let mut failed = Vec::new();
        let _chain = self.chain_lock.lock().await;
        for p in net.plugins.iter().rev() {
            let cfg = plugin_config(&net, p, prev, &rc);
            if let Err(e) = self
                .exec
                .run(plugin_type(p), Command::Del, Some(att), &cfg)
                .await
            {
                failed.push(e.chain());
            }
        }
        if !failed.is_empty() {
            return Err(Error::internal(format!(
                "detach {} from network {name:?}: {}",
                att.container_id,
                failed.join("; ")
            )));
        }
        self.cache.remove(name, att)
    }

    /// CHECK: asks every plugin whether the attachment is still as added.
    pub async fn check(&self, name: &str, att: &Attachment) -> Result<()> {
        let entry = self
            .cache
            .load(name, att)?
            .filter(|e| !e.result.is_null())
            .ok_or_else(|| {
                Error::not_found(format!(
                    "container {} is not attached to network {name:?}",
                    att.container_id
                ))
            })?;
        let net = NetConfList::parse(entry.config.clone(), PathBuf::from("<cached>"))?;
        if net.disable_check {
            return Ok(());
        }
        if ["0.1.", "0.2.", "0.3."]
            .iter()
            .any(|v| net.cni_version.starts_with(v))
        {
            return Err(Error::precondition(format!(
                "network {name:?} is CNI {}; CHECK needs 0.4.0 or later",
                net.cni_version
            )));
        }
        let rc = runtime_config_of(&entry);
        for p in &net.plugins {
            let cfg = plugin_config(&net, p, Some(&entry.result), &rc);
            self.exec
                .run(plugin_type(p), Command::Check, Some(att), &cfg)
                .await
                .map_err(|e| e.context(format!("check network {name:?}")))?;
        }
        Ok(())
    }

    /// Every attachment (completed or not) of every network.
    pub fn attachments(&self) -> Result<Vec<Cached>> {
        self.cache.entries()
    }

    /// The cached result of an attachment, if it completed.
    pub fn result(&self, name: &str, att: &Attachment) -> Result<Option<Value>> {
        Ok(self
            .cache
            .load(name, att)?
            .map(|e| e.result)
            .filter(|r| !r.is_null()))
    }
}

fn plugin_type(p: &Value) -> &str {
    // NetConfList::parse checked every plugin has one.
    p.get("type").and_then(Value::as_str).unwrap_or_default()
}

fn runtime_config_of(e: &Cached) -> Map<String, Value> {
    e.runtime_config.as_object().cloned().unwrap_or_default()
}

/// One plugin's stdin: its object with the list's `name` and `cniVersion`,
/// the previous result, and the runtime arguments of the capabilities it
/// declares (as libcni builds it).
fn plugin_config(
    net: &NetConfList,
    plugin: &Value,
    prev: Option<&Value>,
    runtime_config: &Map<String, Value>,
) -> Value {
    let mut c = plugin.as_object().cloned().unwrap_or_default();
    c.insert("name".into(), Value::String(net.name.clone()));
    c.insert(
        "cniVersion".into(),
        Value::String(if net.cni_version.is_empty() {
            CNI_VERSION.into()
        } else {
            net.cni_version.clone()
        }),
    );
    if let Some(r) = prev {
        c.insert("prevResult".into(), r.clone());
    }
    let caps = plugin.get("capabilities").and_then(Value::as_object);
    let rc: Map<String, Value> = runtime_config
        .iter()
        .filter(|(k, _)| {
            caps.and_then(|c| c.get(k.as_str()))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !rc.is_empty() {
        c.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(c)
}
