//! Kubernetes CRI v1 (`runtime.v1`): berthd as a kubelet's runtime. CRI
//! objects live in the containerd namespace [`NAMESPACE`], as containerd's
//! CRI keeps them.

pub mod images;

/// The containerd namespace of every CRI object.
pub const NAMESPACE: &str = "k8s.io";
