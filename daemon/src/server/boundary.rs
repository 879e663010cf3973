//! The gRPC boundary: daemon errors become statuses here (with their whole
//! cause chain), and request metadata (namespace, lease, field masks) is
//! read here. Every adapter of `server` uses it; it uses none of them.

use crate::error::Error;
use crate::types::Ctx;
use berth_proto::{LEASE_HEADER, NAMESPACE_HEADER, errdefs};
use tonic::{Request, Status};

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        errdefs::to_status(&e)
    }
}

/// The namespace a request names in its `containerd-namespace` header.
pub(crate) fn namespace<T>(req: &Request<T>) -> Result<String, Status> {
    let ns = req
        .metadata()
        .get(NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "namespace is required: set the {NAMESPACE_HEADER} gRPC metadata header (ctr -n NS, berthctl -n NS)"
            ))
        })?;
    crate::metadata::namespaces::validate(ns)?;
    Ok(ns.to_string())
}

/// Namespace plus the optional `containerd-lease` header.
pub(crate) fn ctx<T>(req: &Request<T>) -> Result<Ctx, Status> {
    let ns = namespace(req)?;
    let lease = req
        .metadata()
        .get(LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    Ok(Ctx::new(ns).with_lease(lease))
}

/// Field-mask paths of an update request.
pub(crate) fn paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}
