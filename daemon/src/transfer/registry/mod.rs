//! Image pull and push over the OCI distribution protocol, daemon-side, on
//! the `oci-client` crate (HTTP, auth challenges, token flow, range
//! requests, uploads).
//!
//! What this module adds around it: every blob goes through the content
//! store's upload path (digest verified, resumable by ref after an
//! interruption), transient failures are retried with backoff, the
//! credentials come from the client that asked (never logged), and every
//! registry failure becomes an error that says which registry, what it
//! answered, and what to do.

//!
//! Owns no state. `request` is what a transfer is asked with, `hosts` which
//! hosts serve a registry (mirrors from `hosts.toml`), `remote` one
//! authenticated connection to one of them, `source` the distribution-source labels, and
//! `pull` (with `fetch`, one resumable blob download) and `push` the two
//! directions. May use `content`, `images` and `snapshots::unpack`.

mod fetch;
mod hosts;
mod pull;
mod push;
mod remote;
mod request;
mod source;

pub use hosts::is_localhost;
pub use hosts::{Capabilities, RegistryHost, hosts};
pub use pull::{PullRequest, pull};
pub use push::{PushRequest, push};
pub use request::{Credentials, ProgressEvent, ProgressFn, ResolverOptions};
pub use source::{LABEL_SOURCE_PREFIX, source_label_key};
