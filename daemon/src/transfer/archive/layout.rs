//! The file formats inside an archive: the OCI layout's `index.json`
//! and docker-archive's `manifest.json`.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Deserialize)]
pub(super) struct LayoutIndex {
    #[serde(default)]
    pub(super) manifests: Vec<LayoutDescriptor>,
}

#[derive(Deserialize, Serialize, Clone)]
pub(super) struct LayoutDescriptor {
    #[serde(rename = "mediaType", default)]
    pub(super) media_type: String,
    pub(super) digest: String,
    pub(super) size: i64,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub(super) annotations: HashMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) platform: Option<serde_json::Value>,
}

#[derive(Deserialize, Serialize)]
pub(super) struct DockerEntry {
    #[serde(rename = "Config")]
    pub(super) config: String,
    #[serde(rename = "RepoTags", default)]
    pub(super) repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    pub(super) layers: Vec<String>,
}
