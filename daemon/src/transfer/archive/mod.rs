//! Image archives: import and export of OCI image-layout tars and
//! docker-archive (`docker save`) tars.
//!
//! Import streams the tar once: every blob goes through the content store's
//! upload path (digest verified), held by a temporary lease; small metadata
//! files are kept in memory. Only when the whole archive has been read and
//! every blob an image needs is present are the images created; on any
//! failure the lease is dropped and collected, so nothing partial stays
//! visible. Multi-platform indexes are kept whole; the blobs of the chosen
//! platform (the host's unless told otherwise) must be present.
//!
//! Owns no state; writes through the content, image and lease stores and the
//! unpacker (`transfer::stores::ImageStores`).

mod export;
mod import;
mod layout;

pub use export::{ExportOptions, export};
pub use import::{ImportOptions, Progress, import};
