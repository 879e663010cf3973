//! Snapshot metadata shared by the implementations: a redb database mapping
//! keys to records (numeric id, kind, parent, labels, usage). Directory
//! changes happen inside the same write transaction as the metadata change
//! they belong to, so either both land or neither does.

use crate::contract::{Info, Kind, Labels, Usage};
use crate::error::{Error, Result};
use berth_proto::time::now;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_VERSION: u64 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: u64,
    kind: Kind,
    #[serde(default)]
    parent: String,
    created_at: i64,
    updated_at: i64,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    usage: Usage,
}

/// A stored snapshot.
#[derive(Debug, Clone)]
pub struct Snap {
    pub info: Info,
    /// Directory id on disk.
    pub id: u64,
    /// Usage recorded at commit (committed snapshots only).
    pub usage: Usage,
}

fn snap(key: &str, r: Record) -> Snap {
    Snap {
        info: Info {
            name: key.to_string(),
            parent: r.parent,
            kind: r.kind,
            created_at: r.created_at,
            updated_at: r.updated_at,
            labels: r.labels,
        },
        id: r.id,
        usage: r.usage,
    }
}

/// Drops labels with an empty value (as containerd, which stores none: an
/// empty value is how a label is removed), then checks the rest.
fn clean_labels(labels: &mut Labels) -> Result<()> {
    labels.retain(|_, v| !v.is_empty());
    for (k, v) in labels.iter() {
        if k.is_empty() {
            return Err(Error::invalid("label key must not be empty"));
        }
        if k.len() + v.len() > 4096 {
            return Err(Error::invalid(format!(
                "label {k:?}: key and value length ({} bytes) greater than maximum size (4096 bytes)",
                k.len() + v.len()
            )));
        }
    }
    Ok(())
}

/// The metadata database of one snapshotter.
pub struct Store {
    db: redb::Database,
}

fn get<T: ReadableTable<&'static str, &'static [u8]>>(t: &T, key: &str) -> Result<Option<Record>> {
    match t.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

fn not_found(key: &str) -> Error {
    Error::not_found(format!("snapshot {key:?} does not exist"))
}

/// Ids of `parent` and its ancestors, nearest first.
fn chain<T: ReadableTable<&'static str, &'static [u8]>>(t: &T, parent: &str) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let mut p = parent.to_string();
    while !p.is_empty() {
        let r = get(t, &p)?.ok_or_else(|| {
            Error::internal(format!(
                "snapshot metadata is inconsistent: parent {p:?} is missing"
            ))
        })?;
        ids.push(r.id);
        p = r.parent;
    }
    Ok(ids)
}

impl Store {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        // redb creates its file with the umask's mode; it must be owner-only.
        crate::mount::private::ensure_file(path)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        let db = redb::Database::create(path).map_err(|e| {
            Error::with_source(
                berth_proto::errdefs::Kind::Internal,
                format!("open {}", path.display()),
                e,
            )
        })?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let v = meta.get("schema_version")?.map(|v| v.value());
            match v {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
                Some(v) if v <= SCHEMA_VERSION => {}
                Some(v) => {
                    return Err(Error::precondition(format!(
                        "snapshot metadata {} has schema version {v}, newer than this build ({SCHEMA_VERSION})",
                        path.display()
                    )));
                }
            }
            txn.open_table(SNAPSHOTS)?;
        }
        txn.commit()?;
        Ok(Store { db })
    }

    /// A snapshot and the ids of its ancestors, nearest first.
    pub fn get(&self, key: &str) -> Result<(Snap, Vec<u64>)> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SNAPSHOTS)?;
        let r = get(&t, key)?.ok_or_else(|| not_found(key))?;
        let ids = chain(&t, &r.parent)?;
        Ok((snap(key, r), ids))
    }

    /// Every snapshot.
    pub fn list(&self) -> Result<Vec<Snap>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push(snap(k.value(), serde_json::from_slice(v.value())?));
        }
        Ok(out)
    }

    /// Ids of every snapshot.
    pub fn ids(&self) -> Result<HashSet<u64>> {
        Ok(self.list()?.into_iter().map(|s| s.id).collect())
    }

    /// Creates an active snapshot or view. `f` gets the new id and the
    /// parent chain's ids and does the filesystem work; the record is
    /// committed only if it succeeds.
    pub fn create<R>(
        &self,
        key: &str,
        parent: &str,
        kind: Kind,
        labels: Labels,
        f: impl FnOnce(u64, &[u64]) -> Result<R>,
    ) -> Result<R> {
        if key.is_empty() {
            return Err(Error::invalid("snapshot key must not be empty"));
        }
        let mut labels = labels;
        clean_labels(&mut labels)?;
        let txn = self.db.begin_write()?;
        let out = {
            let mut t = txn.open_table(SNAPSHOTS)?;
            let mut meta = txn.open_table(META)?;
            if get(&t, key)?.is_some() {
                return Err(Error::already_exists(format!(
                    "snapshot {key:?} already exists"
                )));
            }
            if !parent.is_empty() {
                let p = get(&t, parent)?.ok_or_else(|| {
                    Error::not_found(format!("parent snapshot {parent:?} does not exist"))
                })?;
                if p.kind != Kind::Committed {
                    // InvalidArgument, as containerd's snapshotters answer.
                    return Err(Error::invalid(format!(
                        "parent {parent:?} is not committed: only committed snapshots can be parents"
                    )));
                }
            }
            let ids = chain(&t, parent)?;
            let id = meta.get("next_id")?.map_or(1, |v| v.value());
            meta.insert("next_id", id + 1)?;
            let t0 = now();
            let rec = Record {
                id,
                kind,
                parent: parent.to_string(),
                created_at: t0,
                updated_at: t0,
                labels,
                usage: Usage::default(),
            };
            t.insert(key, serde_json::to_vec(&rec)?.as_slice())?;
            f(id, &ids)?
        };
        txn.commit()?;
        Ok(out)
    }

    /// Commits active `key` as `name` with its measured usage.
    pub fn commit(&self, name: &str, key: &str, labels: Labels, usage: Usage) -> Result<()> {
        if name.is_empty() {
            return Err(Error::invalid("snapshot name must not be empty"));
        }
        let mut labels = labels;
        clean_labels(&mut labels)?;
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(SNAPSHOTS)?;
            let mut r = get(&t, key)?.ok_or_else(|| not_found(key))?;
            if r.kind != Kind::Active {
                return Err(Error::precondition(format!(
                    "snapshot {key:?} is {}, not active: only active snapshots can be committed",
                    r.kind.as_str()
                )));
            }
            if get(&t, name)?.is_some() {
                return Err(Error::already_exists(format!(
                    "snapshot {name:?} already exists"
                )));
            }
            r.kind = Kind::Committed;
            r.updated_at = now();
            r.usage = usage;
            // The committed snapshot carries the commit's labels, not the
            // active one's (as containerd: an active gc.root must not outlive it).
            r.labels = labels;
            t.remove(key)?;
            t.insert(name, serde_json::to_vec(&r)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes `key`, which must have no children; `f` gets its id and
    /// moves its directory out of the way inside the transaction.
    pub fn remove<R>(&self, key: &str, f: impl FnOnce(u64) -> Result<R>) -> Result<R> {
        let txn = self.db.begin_write()?;
        let out = {
            let mut t = txn.open_table(SNAPSHOTS)?;
            let r = get(&t, key)?.ok_or_else(|| not_found(key))?;
            for item in t.iter()? {
                let (k, v) = item?;
                let child: Record = serde_json::from_slice(v.value())?;
                if child.parent == key {
                    return Err(Error::precondition(format!(
                        "cannot remove snapshot {key:?}: snapshot {:?} is its child; remove the children first",
                        k.value()
                    )));
                }
            }
            t.remove(key)?;
            f(r.id)?
        };
        txn.commit()?;
        Ok(out)
    }

    /// Updates labels.
    pub fn update(&self, info: &Info, paths: &[String]) -> Result<Info> {
        let txn = self.db.begin_write()?;
        let out = {
            let mut t = txn.open_table(SNAPSHOTS)?;
            let mut r = get(&t, &info.name)?.ok_or_else(|| not_found(&info.name))?;
            if paths.is_empty() {
                r.labels = info.labels.clone();
            }
            for p in paths {
                if p == "labels" {
                    r.labels = info.labels.clone();
                } else if let Some(k) = p.strip_prefix("labels.") {
                    match info.labels.get(k).filter(|v| !v.is_empty()) {
                        Some(v) => r.labels.insert(k.to_string(), v.clone()),
                        None => r.labels.remove(k),
                    };
                } else {
                    return Err(Error::invalid(format!(
                        "cannot update {p:?} field on snapshot {:?}: only labels can be updated",
                        info.name
                    )));
                }
            }
            clean_labels(&mut r.labels)?;
            r.updated_at = now();
            t.insert(info.name.as_str(), serde_json::to_vec(&r)?.as_slice())?;
            snap(&info.name, r).info
        };
        txn.commit()?;
        Ok(out)
    }
}
