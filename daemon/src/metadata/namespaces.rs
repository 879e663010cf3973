//! Namespaces: every object lives in one. A namespace is created explicitly
//! or implicitly by the first object created in it, and can only be deleted
//! once it holds no images, content, containers or snapshots.

use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::metadata::{Db, Read, Writer, kind, ns_key, prefix};
use crate::types::{Labels, apply_label_path, drop_empty, validate_labels};
use berth_proto::pb::containerd::events as ev;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What is stored for a namespace.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamespaceRecord {
    #[serde(default)]
    pub labels: Labels,
}

/// Validates a namespace name (the rule shared by all identifiers).
pub fn validate(name: &str) -> Result<()> {
    berth_proto::identifiers::validate(name).map_err(|e| Error::invalid(format!("namespace: {e}")))
}

/// Records `ns` inside a write transaction if it is not there yet.
pub fn ensure(w: &mut Writer<'_, '_>, ns: &str) -> Result<()> {
    let k = ns_key(ns);
    if !w.exists(&k)? {
        w.put(&k, &NamespaceRecord::default())?;
    }
    Ok(())
}

/// The namespaces service logic.
pub struct Namespaces {
    db: Arc<Db>,
    events: Arc<Exchange>,
}

impl Namespaces {
    pub fn new(db: Arc<Db>, events: Arc<Exchange>) -> Self {
        Self { db, events }
    }

    /// Creates a namespace; `AlreadyExists` if it exists.
    pub fn create(&self, name: &str, mut labels: Labels) -> Result<Labels> {
        validate(name)?;
        drop_empty(&mut labels);
        validate_labels(&labels)?;
        self.db.write(|w| {
            let k = ns_key(name);
            if w.exists(&k)? {
                return Err(Error::already_exists(format!(
                    "namespace {name:?}: already exists"
                )));
            }
            w.put(
                &k,
                &NamespaceRecord {
                    labels: labels.clone(),
                },
            )
        })?;
        self.events.publish(
            name,
            "/namespaces/create",
            &ev::NamespaceCreate {
                name: name.to_string(),
                labels: labels.clone(),
            },
        );
        Ok(labels)
    }

    /// The labels of a namespace. As in containerd, a namespace that holds
    /// no record yet has empty labels, not `NotFound`: engines (dockerd)
    /// `Get` their namespace before anything was created in it.
    pub fn get(&self, name: &str) -> Result<Labels> {
        validate(name)?;
        Ok(self
            .db
            .read(|r| r.get::<NamespaceRecord>(&ns_key(name)))?
            .map(|r| r.labels)
            .unwrap_or_default())
    }

    /// Every namespace with its labels.
    pub fn list(&self) -> Result<Vec<(String, Labels)>> {
        self.db.read(|r| {
            r.namespaces()?
                .into_iter()
                .map(|n| {
                    let rec: NamespaceRecord = r.get(&ns_key(&n))?.unwrap_or_default();
                    Ok((n, rec.labels))
                })
                .collect()
        })
    }

    /// Updates labels: with no paths the labels are replaced; otherwise
    /// `labels` / `labels.<key>` paths apply (an empty value removes a key).
    /// A namespace not recorded yet is created, as containerd does.
    pub fn update(&self, name: &str, labels: Labels, paths: &[String]) -> Result<Labels> {
        validate(name)?;
        let updated = self.db.write(|w| {
            let k = ns_key(name);
            let mut rec: NamespaceRecord = w.get(&k)?.unwrap_or_default();
            if paths.is_empty() {
                rec.labels = labels.clone();
            }
            for p in paths {
                if !apply_label_path(&mut rec.labels, &labels, p) {
                    return Err(Error::invalid(format!(
                        "cannot update {p:?} field on namespace {name:?}: only labels can be updated"
                    )));
                }
            }
            drop_empty(&mut rec.labels);
            validate_labels(&rec.labels)?;
            w.put(&k, &rec)?;
            Ok(rec.labels)
        })?;
        self.events.publish(
            name,
            "/namespaces/update",
            &ev::NamespaceUpdate {
                name: name.to_string(),
                labels: updated.clone(),
            },
        );
        Ok(updated)
    }

    /// Deletes an empty namespace (its leases and ingests go with it).
    /// `also_held` names what else still holds objects in it (snapshots live
    /// outside this database).
    pub fn delete(&self, name: &str, also_held: &[String]) -> Result<()> {
        self.db.write(|w| {
            let k = ns_key(name);
            if !w.exists(&k)? {
                return Err(Error::not_found(format!("namespace {name:?}: not found")));
            }
            let mut left = Vec::new();
            for (object, what) in [
                (kind::IMAGES, "images"),
                (kind::CONTENT, "blobs"),
                (kind::CONTAINERS, "containers"),
            ] {
                if w.any_under(&prefix(name, object))? {
                    left.push(what);
                }
            }
            let mut left: Vec<String> = left.into_iter().map(String::from).collect();
            left.extend(also_held.iter().cloned());
            if !left.is_empty() {
                return Err(Error::precondition(format!(
                    "namespace {name:?} must be empty, but it still has {}: remove them first",
                    left.join(", ")
                )));
            }
            w.delete_prefix(&format!("{k}/"))?;
            w.delete(&k)?;
            Ok(())
        })?;
        self.events.publish(
            name,
            "/namespaces/delete",
            &ev::NamespaceDelete {
                name: name.to_string(),
            },
        );
        Ok(())
    }
}
