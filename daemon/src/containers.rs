//! Containers: metadata only — the OCI spec (as an `Any` carrying JSON),
//! the runtime and its options, the snapshot the root filesystem lives in,
//! labels and extensions. Running one is the tasks service's business.
//! A container holds its snapshot from garbage collection.

use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::metadata::namespaces;
use crate::metadata::{Db, Read, key, kind, prefix};
use crate::types::{Labels, apply_label_path, drop_empty, now, validate_labels};
use berth_proto::filters::{Adaptor, Filter, label_field};
use berth_proto::pb::containerd::events as ev;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// An `Any` as stored (value hex-encoded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnyRecord {
    pub type_url: String,
    #[serde(default)]
    pub value_hex: String,
}

impl From<prost_types::Any> for AnyRecord {
    fn from(a: prost_types::Any) -> Self {
        Self {
            type_url: a.type_url,
            value_hex: hex::encode(a.value),
        }
    }
}

impl From<AnyRecord> for prost_types::Any {
    fn from(a: AnyRecord) -> Self {
        Self {
            type_url: a.type_url,
            value: hex::decode(a.value_hex).unwrap_or_default(),
        }
    }
}

/// What is stored for a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub image: String,
    pub runtime: String,
    #[serde(default)]
    pub runtime_options: Option<AnyRecord>,
    #[serde(default)]
    pub spec: Option<AnyRecord>,
    #[serde(default)]
    pub snapshotter: String,
    #[serde(default)]
    pub snapshot_key: String,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub extensions: BTreeMap<String, AnyRecord>,
    #[serde(default)]
    pub sandbox: String,
}

/// A container with its id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Container {
    pub id: String,
    pub record: ContainerRecord,
}

impl Adaptor for Container {
    fn field(&self, path: &[String]) -> Option<String> {
        let r = &self.record;
        let nonempty = |s: &String| (!s.is_empty()).then(|| s.clone());
        match (path.first()?.as_str(), path.len()) {
            ("id", 1) => nonempty(&self.id),
            ("image", 1) => nonempty(&r.image),
            ("runtime", 2) if path[1] == "name" => nonempty(&r.runtime),
            ("labels", _) => label_field(&r.labels, &path[1..]),
            _ => None,
        }
    }
}

fn validate(c: &Container) -> Result<()> {
    berth_proto::identifiers::validate(&c.id)
        .map_err(|e| Error::invalid(format!("container.ID: {e}")))?;
    if c.record.extensions.keys().any(String::is_empty) {
        return Err(Error::invalid(
            "container.Extension keys must not be zero-length",
        ));
    }
    validate_labels(&c.record.labels).map_err(|e| e.context("container.Labels"))?;
    if c.record.runtime.is_empty() {
        return Err(Error::invalid("container.Runtime.Name must be set"));
    }
    if c.record.spec.is_none() {
        return Err(Error::invalid("container.Spec must be set"));
    }
    if !c.record.snapshot_key.is_empty() && c.record.snapshotter.is_empty() {
        return Err(Error::invalid(
            "container.Snapshotter must be set if container.SnapshotKey is set",
        ));
    }
    Ok(())
}

/// The containers service logic.
pub struct Containers {
    db: Arc<Db>,
    events: Arc<Exchange>,
    gc: crate::metadata::trigger::GcTrigger,
}

impl Containers {
    pub fn new(
        db: Arc<Db>,
        events: Arc<Exchange>,
        gc: crate::metadata::trigger::GcTrigger,
    ) -> Self {
        Self { db, events, gc }
    }

    /// One container; `NotFound` if absent.
    pub fn get(&self, ns: &str, id: &str) -> Result<Container> {
        self.db
            .read(|r| r.get::<ContainerRecord>(&key(ns, kind::CONTAINERS, id)))?
            .map(|record| Container {
                id: id.to_string(),
                record,
            })
            .ok_or_else(|| {
                Error::not_found(format!("container {id:?} in namespace {ns:?}: not found"))
            })
    }

    /// Containers matching any of `filters`.
    pub fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Container>> {
        let f = Filter::parse_all(filters)?;
        Ok(self
            .db
            .read(|r| r.scan::<ContainerRecord>(&prefix(ns, kind::CONTAINERS)))?
            .into_iter()
            .map(|(id, record)| Container { id, record })
            .filter(|c| f.matches(c))
            .collect())
    }

    /// The containers of every namespace that have label `name`, with
    /// their namespace.
    pub fn all_labelled(&self, name: &str) -> Result<Vec<(String, Container)>> {
        self.db.read(|r| {
            let mut out = Vec::new();
            for ns in r.namespaces()? {
                for (id, record) in r.scan::<ContainerRecord>(&prefix(&ns, kind::CONTAINERS))? {
                    if record.labels.contains_key(name) {
                        out.push((ns.clone(), Container { id, record }));
                    }
                }
            }
            Ok(out)
        })
    }

    /// Creates a container.
    pub fn create(&self, ns: &str, mut c: Container) -> Result<Container> {
        let t = now();
        c.record.created_at = t;
        c.record.updated_at = t;
        drop_empty(&mut c.record.labels);
        validate(&c).map_err(|e| e.context("create container failed validation"))?;
        self.db.write(|w| {
            namespaces::ensure(w, ns)?;
            let k = key(ns, kind::CONTAINERS, &c.id);
            if w.exists(&k)? {
                return Err(Error::already_exists(format!(
                    "container {:?}: already exists",
                    c.id
                )));
            }
            w.put(&k, &c.record)
        })?;
        self.events.publish(
            ns,
            "/containers/create",
            &ev::ContainerCreate {
                id: c.id.clone(),
                image: c.record.image.clone(),
                runtime: Some(ev::container_create::Runtime {
                    name: c.record.runtime.clone(),
                    options: c.record.runtime_options.clone().map(Into::into),
                }),
            },
        );
        Ok(c)
    }

    /// Updates a container: with no paths labels, spec, extensions, image and
    /// snapshot key are replaced (snapshotter and runtime are immutable);
    /// otherwise only the named fields change.
    pub fn update(&self, ns: &str, c: Container, paths: &[String]) -> Result<Container> {
        if c.id.is_empty() {
            return Err(Error::invalid("must specify a container id"));
        }
        let updated = self.db.write(|w| {
            let k = key(ns, kind::CONTAINERS, &c.id);
            let mut cur: ContainerRecord = w.get(&k)?.ok_or_else(|| {
                Error::not_found(format!(
                    "cannot update container {:?} in namespace {ns:?}: not found",
                    c.id
                ))
            })?;
            let mut paths = paths.to_vec();
            if paths.is_empty() {
                if c.record.snapshotter != cur.snapshotter {
                    return Err(Error::invalid("container.Snapshotter field is immutable"));
                }
                if c.record.runtime != cur.runtime {
                    return Err(Error::invalid("container.Runtime.Name field is immutable"));
                }
                paths = ["labels", "spec", "extensions", "image", "snapshotkey"]
                    .map(String::from)
                    .to_vec();
            }
            for p in &paths {
                if apply_label_path(&mut cur.labels, &c.record.labels, p) {
                    continue;
                }
                if let Some(x) = p.strip_prefix("extensions.") {
                    match c.record.extensions.get(x) {
                        Some(v) => cur.extensions.insert(x.to_string(), v.clone()),
                        None => cur.extensions.remove(x),
                    };
                    continue;
                }
                match p.as_str() {
                    "spec" => cur.spec = c.record.spec.clone(),
                    "extensions" => cur.extensions = c.record.extensions.clone(),
                    "image" => cur.image = c.record.image.clone(),
                    "snapshotkey" => cur.snapshot_key = c.record.snapshot_key.clone(),
                    other => {
                        return Err(Error::invalid(format!(
                            "cannot update {other:?} field on {:?}",
                            c.id
                        )));
                    }
                }
            }
            cur.updated_at = now();
            drop_empty(&mut cur.labels);
            let out = Container {
                id: c.id.clone(),
                record: cur,
            };
            validate(&out).map_err(|e| e.context("update failed validation"))?;
            w.put(&k, &out.record)?;
            Ok(out)
        })?;
        self.events.publish(
            ns,
            "/containers/update",
            &ev::ContainerUpdate {
                id: updated.id.clone(),
                image: updated.record.image.clone(),
                labels: updated.record.labels.clone(),
                snapshot_key: updated.record.snapshot_key.clone(),
            },
        );
        Ok(updated)
    }

    /// Deletes a container; its snapshot becomes collectable.
    pub fn delete(&self, ns: &str, id: &str) -> Result<()> {
        self.db.write(|w| {
            if !w.delete(&key(ns, kind::CONTAINERS, id))? {
                return Err(Error::not_found(format!(
                    "cannot delete container {id:?} in namespace {ns:?}: not found"
                )));
            }
            Ok(())
        })?;
        self.events.publish(
            ns,
            "/containers/delete",
            &ev::ContainerDelete { id: id.to_string() },
        );
        self.gc.schedule();
        Ok(())
    }
}
