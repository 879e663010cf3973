//! What the metadata database records about blobs and uploads, and how
//! clients see them (filterable).

use crate::types::Labels;
use berth_proto::filters::{Adaptor, label_field};
use serde::{Deserialize, Serialize};

/// How long an upload outside any lease is kept before collection.
pub const INGEST_EXPIRY_NANOS: i64 = 24 * 3600 * 1_000_000_000;

/// A namespace's record of a blob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContentRecord {
    pub size: i64,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub labels: Labels,
}

/// A blob as a namespace sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub digest: String,
    pub record: ContentRecord,
}

impl Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "digest" if path.len() == 1 => Some(self.digest.clone()),
            "size" if path.len() == 1 => Some(self.record.size.to_string()),
            "labels" => label_field(&self.record.labels, &path[1..]),
            _ => None,
        }
    }
}

/// A namespace's record of an upload in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestRecord {
    pub started_at: i64,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub expected: String,
    /// When an upload outside any lease becomes collectable (0 = leased).
    #[serde(default)]
    pub expires_at: i64,
}

/// Progress of an upload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub reference: String,
    pub offset: i64,
    pub total: i64,
    pub expected: String,
    pub started_at: i64,
    pub updated_at: i64,
}

impl Adaptor for Status {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path.first()?.as_str(), path.len()) {
            ("ref", 1) => Some(self.reference.clone()),
            ("expected", 1) => Some(self.expected.clone()),
            _ => None,
        }
    }
}
