//! The distribution-source label: which repositories of which registries
//! hold a blob, so a push can mount it instead of uploading it again.

use crate::content::ContentStore;
use crate::error::{Error, Result};
use std::sync::Arc;

/// Label containerd puts on content fetched from a registry:
/// `containerd.io/distribution.source.<host>=<repository>`. Push uses it to
/// mount blobs across repositories instead of uploading them again.
pub const LABEL_SOURCE_PREFIX: &str = "containerd.io/distribution.source.";

/// The source label's key for a registry host: containerd keys it by host
/// name without the port.
pub fn source_label_key(host: &str) -> String {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    format!(
        "{LABEL_SOURCE_PREFIX}{}",
        name.trim_start_matches('[').trim_end_matches(']')
    )
}

/// Records on `digest` that `repo` of `host` holds it, in containerd's
/// comma-separated source label (so a later push can mount it from there).
pub(crate) async fn add_source(
    content: &Arc<ContentStore>,
    ns: &str,
    digest: &str,
    host: &str,
    repo: &str,
) -> Result<()> {
    let (content, ns, digest) = (
        content.clone(),
        ns.to_string(),
        crate::types::Digest::parse(digest)?,
    );
    let (key, repo) = (source_label_key(host), repo.to_string());
    tokio::task::spawn_blocking(move || {
        let info = content.info(&ns, &digest)?;
        let current = info.record.labels.get(&key).cloned().unwrap_or_default();
        if current.split(',').any(|r| r == repo) {
            return Ok(());
        }
        let value = if current.is_empty() {
            repo
        } else {
            format!("{current},{repo}")
        };
        let path = format!("labels.{key}");
        content
            .update(
                &ns,
                &digest,
                &crate::types::Labels::from([(key, value)]),
                &[path],
            )
            .map(|_| ())
    })
    .await
    .map_err(|e| Error::internal(format!("label source: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::source_label_key;

    #[test]
    fn source_label_keys_drop_the_port() {
        assert_eq!(
            source_label_key("127.0.0.1:5000"),
            "containerd.io/distribution.source.127.0.0.1"
        );
        assert_eq!(
            source_label_key("docker.io"),
            "containerd.io/distribution.source.docker.io"
        );
        assert_eq!(
            source_label_key("[::1]:5000"),
            "containerd.io/distribution.source.::1"
        );
    }
}
