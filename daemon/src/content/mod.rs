//! The content store: immutable blobs addressed by digest.
//!
//! Layout under `<root>/content`: `blobs/sha256/<hex>` holds committed
//! blobs, shared by all namespaces; `ingest/<sha256(ns/ref)>/data` holds an
//! upload in progress. A blob appears under `blobs/` only by an atomic rename
//! after its bytes are fsynced and its digest checked, so a crash leaves
//! either nothing or the whole blob there, never part of one. Which blobs a
//! namespace can see, and their labels, is metadata (`v1/<ns>/content/…`);
//! uploads are recorded (`v1/<ns>/ingests/<ref>`) before their first byte so
//! they can be resumed from their offset after a restart.
//!
//! Owns the blobs on disk and their per-namespace records. May use
//! `metadata` (records, leases, namespaces, the collection trigger) and
//! `events`; the collector reads [`Blobs`] to sweep files.

mod blobs;
mod records;
mod store;
mod writer;

#[cfg(test)]
mod tests;

pub use blobs::Blobs;
pub use records::{ContentRecord, INGEST_EXPIRY_NANOS, Info, IngestRecord, Status};
pub use store::ContentStore;
pub use writer::Writer;
