//! berth's wire contract.
//!
//! * [`pb`]: every protobuf message and gRPC service of containerd's v1 API
//!   that berth speaks, generated at build time from `protos/` by protox and
//!   tonic-prost-build, plus ttrpc bindings for the shim task API.
//! * [`ttrpc`]: a small ttrpc implementation (framing, client, server).
//! * [`errdefs`]: the one place error kinds meet gRPC status codes.
//! * [`filters`]: containerd's list-filter language.
//! * [`archive`]: the image-archive rules berthd and berthctl share (names,
//!   docker-archive conversion).
//! * [`typeurl`]: packing messages into `Any` with the type URLs containerd's
//!   clients decode.
//! * [`userdb`], [`capabilities`] and [`spec_defaults`]: a container's users
//!   and groups, its default capabilities, mounts and device rules, the same
//!   for berthctl and berthd's CRI.

pub mod archive;
pub mod capabilities;
pub mod client;
pub mod crilog;
pub mod errdefs;
pub mod fieldpath;
pub mod filters;
pub mod identifiers;
pub mod jsonlog;
pub mod labels;
pub mod logrotate;
pub mod metadata;
pub mod reference;
pub mod spec_defaults;
pub mod time;
pub mod ttrpc;
pub mod typeurl;
pub mod userdb;

/// Generated protobuf types, gRPC services and ttrpc bindings.
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/berth_proto.rs"));
}

pub use metadata::{LEASE_HEADER, NAMESPACE_HEADER, NAMESPACE_TTRPC_HEADER};
pub use pb::containerd::services;
pub use pb::containerd::types;
/// Kubernetes' Container Runtime Interface (`runtime.v1`).
pub use pb::runtime::v1 as cri;
