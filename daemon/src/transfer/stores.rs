//! What an import or a pull writes to: blobs, image records, the lease
//! that holds them meanwhile, and the unpacker — and nothing else of the
//! daemon (no containers, tasks or namespaces).

use crate::content::ContentStore;
use crate::images::Images;
use crate::metadata::leases::Leases;
use crate::snapshots::unpack::Unpacker;
use std::sync::Arc;

/// The stores an image transfer fills; cheap to clone into tasks.
#[derive(Clone)]
pub struct ImageStores {
    pub content: Arc<ContentStore>,
    pub images: Arc<Images>,
    pub leases: Arc<Leases>,
    pub unpacker: Arc<Unpacker>,
}
