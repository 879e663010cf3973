//! Small shared pieces: timestamps, labels, digests and stored descriptors.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Object labels, as on the wire.
pub type Labels = HashMap<String, String>;

/// Largest label key + value, in bytes (containerd's limit).
pub const MAX_LABEL_SIZE: usize = 4096;

pub use berth_proto::time::{now, timestamp};

/// Nanoseconds since the epoch from a protobuf timestamp.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(ts.nanos))
}

/// Checks every label against containerd's rules (non-empty key, key and
/// value together at most 4096 bytes).
pub fn validate_labels(labels: &Labels) -> Result<()> {
    for (k, v) in labels {
        if k.is_empty() {
            return Err(Error::invalid("label key must not be empty"));
        }
        let size = k.len() + v.len();
        if size > MAX_LABEL_SIZE {
            return Err(Error::invalid(format!(
                "label {:?}: key and value length ({size} bytes) greater than maximum size ({MAX_LABEL_SIZE} bytes)",
                truncate(k, 64)
            )));
        }
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Drops labels whose value is empty. containerd stores no empty value (an
/// empty value is how a label is removed), so clients never see one back.
pub fn drop_empty(labels: &mut Labels) {
    labels.retain(|_, v| !v.is_empty());
}

/// Applies a field mask to labels the way containerd does: `labels`
/// replaces all, `labels.<key>` sets one (an empty value removes it).
/// Returns false for paths that are not label paths.
pub fn apply_label_path(current: &mut Labels, update: &Labels, path: &str) -> bool {
    if path == "labels" {
        *current = update.clone();
        return true;
    }
    if let Some(key) = path.strip_prefix("labels.") {
        match update.get(key) {
            Some(v) if !v.is_empty() => {
                current.insert(key.to_string(), v.clone());
            }
            _ => {
                current.remove(key);
            }
        }
        return true;
    }
    false
}

/// A validated `sha256:<hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates a digest string.
    pub fn parse(s: &str) -> Result<Digest> {
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(Error::invalid(format!(
                "digest {s:?} is invalid: expected sha256:<64 hex characters>"
            )));
        };
        if algo != "sha256" {
            return Err(Error::invalid(format!(
                "digest {s:?} uses unsupported algorithm {algo:?}: only sha256 is supported"
            )));
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::invalid(format!(
                "digest {s:?} is invalid: expected sha256:<64 lowercase hex characters>"
            )));
        }
        Ok(Digest(s.to_string()))
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_hash(&sha2::Sha256::digest(data))
    }

    /// A digest from a finished sha256 state.
    pub fn from_hash(hash: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A content descriptor as stored in image records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

impl From<berth_proto::types::Descriptor> for Descriptor {
    fn from(d: berth_proto::types::Descriptor) -> Self {
        Self {
            media_type: d.media_type,
            digest: d.digest,
            size: d.size,
            annotations: d.annotations,
        }
    }
}

impl From<Descriptor> for berth_proto::types::Descriptor {
    fn from(d: Descriptor) -> Self {
        Self {
            media_type: d.media_type,
            digest: d.digest,
            size: d.size,
            annotations: d.annotations,
        }
    }
}

/// Who a request acts for: its namespace and, optionally, the lease that new
/// objects are attached to (the `containerd-lease` header).
#[derive(Debug, Clone)]
pub struct Ctx {
    pub ns: String,
    pub lease: Option<String>,
}

impl Ctx {
    /// A context in `ns` without a lease.
    pub fn new(ns: impl Into<String>) -> Self {
        Self {
            ns: ns.into(),
            lease: None,
        }
    }

    /// The same context attached to `lease`.
    pub fn with_lease(mut self, lease: Option<String>) -> Self {
        self.lease = lease;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        for bad in ["", "sha256:", "md5:abc", "sha256:XYZ", &format!("{}0", d)] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        let mut l = Labels::new();
        l.insert("k".into(), "v".repeat(MAX_LABEL_SIZE));
        let e = validate_labels(&l).unwrap_err();
        assert!(e.message().contains("4097 bytes"), "{e}");
        let mut cur = Labels::from([("a".into(), "1".into()), ("b".into(), "2".into())]);
        let upd = Labels::from([("a".into(), "9".into())]);
        assert!(apply_label_path(&mut cur, &upd, "labels.a"));
        assert!(apply_label_path(&mut cur, &upd, "labels.b"));
        assert!(!apply_label_path(&mut cur, &upd, "name"));
        assert_eq!(cur, Labels::from([("a".into(), "9".into())]));
        let ts = timestamp(-1);
        assert_eq!((ts.seconds, ts.nanos), (-1, 999_999_999));
        assert_eq!(from_timestamp(&ts), -1);
    }
}
