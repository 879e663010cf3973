//! Container networking through CNI plugins, owned by berthd.
//!
//! Owns the CNI exec protocol ([`cni`]: plugin lookup, environment,
//! stdin, results, errors, timeouts), the result cache under
//! `<state>/cni/results` ([`cache`]), networks as conflists in
//! `network.cni_conf_dir` ([`conflist`], with [`subnet`] arithmetic),
//! network namespaces bind-mounted under `<state>/netns` ([`netns`]) and
//! the [`NetworkManager`] that ties them: ADD along a chain with
//! `prevResult`, DEL in reverse with the cached result, CHECK. On top,
//! [`TaskNetworks`] ([`tasknet`]) gives a task what its container's labels
//! ask for (namespace, attachments, published ports, and the `/etc` files
//! of [`etc`]) and takes it away again. [`localnet`] keeps containers off
//! the host's loopback, which portmap opens to them.
//! May use `config`, `durable`, `error` and `berth-snapshotter`'s `private` modes;
//! nothing else of ours. The task service uses it; no store does.

pub mod cache;
pub mod cni;
pub mod conflist;
pub mod etc;
pub mod localnet;
pub mod manager;
pub mod netns;
pub mod subnet;
pub mod tasknet;

#[cfg(test)]
mod tests;

pub use cni::{Attachment, Command, Exec};
pub use conflist::{NetConfList, NetworkSpec};
pub use manager::{DEFAULT_SUBNET, NetworkManager, cni_container_id};
pub use netns::NetnsDir;
pub use tasknet::TaskNetworks;

/// The container label listing the networks a container joins
/// (comma-separated names). Set when a container is created; the network
/// service refuses to remove a network any container's label names.
pub const NETWORKS_LABEL: &str = berth_proto::labels::NETWORKS;

/// The network names in a [`NETWORKS_LABEL`] value.
pub fn networks_in_label(value: &str) -> impl Iterator<Item = &str> {
    berth_proto::labels::items(value)
}
