//! The metadata keys requests carry (namespace, lease), for gRPC and ttrpc.
//! A leaf module, so the client helpers and the ttrpc context can use the
//! keys without depending on the crate root.

/// gRPC metadata key carrying the namespace of a request.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// ttrpc metadata key carrying the namespace of a shim request.
pub const NAMESPACE_TTRPC_HEADER: &str = "containerd-namespace-ttrpc";
/// gRPC metadata key naming the lease a request's new objects belong to.
pub const LEASE_HEADER: &str = "containerd-lease";
