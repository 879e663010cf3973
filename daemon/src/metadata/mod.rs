//! The metadata layer, lowest of the stores: the database ([`Db`]),
//! namespaces, leases, and the trigger stores use to ask for collection
//! (`trigger`). May use only `error`, `types` and `events`; every other
//! store builds on it.
//!
//! The metadata database: one redb file under the root holding every
//! namespaced record, keyed `v1/<namespace>/<object>/<key>` (the namespace
//! record itself is `v1/<namespace>`), values JSON. Every multi-key update
//! happens inside one [`Db::write`] transaction, which commits durably or not
//! at all.

pub mod leases;
pub mod namespaces;
pub mod trigger;

use crate::error::{Error, Result};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};
use std::path::Path;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Version of the key layout and record shapes; bump with a migration.
pub const SCHEMA_VERSION: u32 = 1;

/// Object kinds stored under a namespace.
pub mod kind {
    pub const IMAGES: &str = "images";
    pub const CONTENT: &str = "content";
    pub const INGESTS: &str = "ingests";
    pub const LEASES: &str = "leases";
    pub const CONTAINERS: &str = "containers";
}

/// Key of a namespace's own record.
pub fn ns_key(ns: &str) -> String {
    format!("v1/{ns}")
}

/// Key of an object in a namespace.
pub fn key(ns: &str, object: &str, id: &str) -> String {
    format!("v1/{ns}/{object}/{id}")
}

/// Prefix of every object of one kind in a namespace.
pub fn prefix(ns: &str, object: &str) -> String {
    format!("v1/{ns}/{object}/")
}

/// The metadata database.
pub struct Db {
    db: redb::Database,
}

/// Read access inside a transaction (read-only or read-write).
pub struct Reader<'a, T: ReadableTable<&'static str, &'static [u8]>> {
    table: &'a T,
}

/// Read-write access inside a write transaction.
pub struct Writer<'a, 'txn> {
    table: &'a mut redb::Table<'txn, &'static str, &'static [u8]>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and checks that its
    /// schema version is one this build understands.
    pub fn open(path: &Path) -> Result<Db> {
        // redb creates its file with the umask's mode; it holds secrets.
        berth_snapshotter::mount::private::ensure_file(path)
            .map_err(|e| crate::error::io_err(format!("create {}", path.display()), e))?;
        // A process killed a moment ago may still hold the file's lock
        // while the kernel tears it down: wait a few seconds for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match redb::Database::create(path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => {
                    break r.map_err(|e| {
                        Error::internal(format!("open metadata {}: {e}", path.display()))
                    })?;
                }
            }
        };
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta
                .get("schema_version")?
                .map(|v| u32::from_be_bytes(v.value().try_into().unwrap_or([0; 4])));
            match found {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION.to_be_bytes().as_slice())?;
                }
                Some(v) if v == SCHEMA_VERSION => {}
                Some(v) if v < SCHEMA_VERSION => {
                    // Migrations from older layouts go here, in order.
                    meta.insert("schema_version", SCHEMA_VERSION.to_be_bytes().as_slice())?;
                }
                Some(v) => {
                    return Err(Error::precondition(format!(
                        "metadata {} has schema version {v}, newer than this berthd ({SCHEMA_VERSION}); run a newer berthd",
                        path.display()
                    )));
                }
            }
            txn.open_table(OBJECTS)?;
        }
        txn.commit()?;
        Ok(Db { db })
    }

    /// Runs `f` in a read transaction.
    pub fn read<R>(
        &self,
        f: impl FnOnce(&Reader<'_, redb::ReadOnlyTable<&'static str, &'static [u8]>>) -> Result<R>,
    ) -> Result<R> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        f(&Reader { table: &table })
    }

    /// Runs `f` in a write transaction: committed durably when `f` returns
    /// `Ok`, discarded when it returns `Err`.
    pub fn write<R>(&self, f: impl FnOnce(&mut Writer<'_, '_>) -> Result<R>) -> Result<R> {
        let txn = self.db.begin_write()?;
        let out = {
            let mut table = txn.open_table(OBJECTS)?;
            f(&mut Writer { table: &mut table })
        };
        match out {
            Ok(v) => {
                txn.commit()?;
                Ok(v)
            }
            Err(e) => {
                let _ = txn.abort();
                Err(e)
            }
        }
    }

    /// A value from the daemon-wide meta table, created by `init` if absent.
    pub fn meta_get_or_init(&self, name: &str, init: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>> {
        {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            if let Some(v) = meta.get(name)? {
                return Ok(v.value().to_vec());
            }
        }
        let txn = self.db.begin_write()?;
        let value = {
            let mut meta = txn.open_table(META)?;
            let existing = meta.get(name)?.map(|v| v.value().to_vec());
            match existing {
                Some(v) => v,
                None => {
                    let v = init();
                    meta.insert(name, v.as_slice())?;
                    v
                }
            }
        };
        txn.commit()?;
        Ok(value)
    }
}

/// Reads shared by [`Reader`] and [`Writer`].
pub trait Read {
    /// Raw value at `key`.
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// All `(key, value)` pairs whose key starts with `prefix`, in key order.
    fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;
    /// The first key at or after `from`.
    fn first_key_from(&self, from: &str) -> Result<Option<String>>;

    /// Decoded record at `key`.
    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get_raw(key)?
            .map(|v| serde_json::from_slice(&v).map_err(Error::from))
            .transpose()
    }

    /// True if a record exists at `key`.
    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.get_raw(key)?.is_some())
    }

    /// Decoded records under `prefix`, with the key part after the prefix.
    fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>> {
        self.scan_raw(prefix)?
            .into_iter()
            .map(|(k, v)| Ok((k[prefix.len()..].to_string(), serde_json::from_slice(&v)?)))
            .collect()
    }

    /// True if any key starts with `prefix`.
    fn any_under(&self, prefix: &str) -> Result<bool> {
        Ok(self
            .first_key_from(prefix)?
            .is_some_and(|k| k.starts_with(prefix)))
    }

    /// Every namespace with a record, in name order.
    fn namespaces(&self) -> Result<Vec<String>> {
        // Walk namespace records, jumping over each namespace's objects: after
        // `v1/<ns>/…` the next candidate is `v1/<ns>0` ('0' follows '/').
        let mut out = Vec::new();
        let mut from = "v1/".to_string();
        while let Some(k) = self.first_key_from(&from)? {
            let Some(rest) = k.strip_prefix("v1/") else {
                break;
            };
            match rest.split_once('/') {
                None => {
                    out.push(rest.to_string());
                    from = format!("{k}\u{0}");
                }
                Some((ns, _)) => from = format!("v1/{ns}0"),
            }
        }
        Ok(out)
    }
}

impl<T: ReadableTable<&'static str, &'static [u8]>> Read for Reader<'_, T> {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.table.get(key)?.map(|v| v.value().to_vec()))
    }

    fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        scan(self.table, prefix)
    }

    fn first_key_from(&self, from: &str) -> Result<Option<String>> {
        first_from(self.table, from)
    }
}

impl Read for Writer<'_, '_> {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.table.get(key)?.map(|v| v.value().to_vec()))
    }

    fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        scan(&*self.table, prefix)
    }

    fn first_key_from(&self, from: &str) -> Result<Option<String>> {
        first_from(&*self.table, from)
    }
}

fn scan<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for item in table.range::<&str>(prefix..)? {
        let (k, v) = item?;
        let k = k.value();
        if !k.starts_with(prefix) {
            break;
        }
        out.push((k.to_string(), v.value().to_vec()));
    }
    Ok(out)
}

fn first_from<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
    from: &str,
) -> Result<Option<String>> {
    let mut it = table.range::<&str>(from..)?;
    match it.next() {
        Some(item) => Ok(Some(item?.0.value().to_string())),
        None => Ok(None),
    }
}

impl Writer<'_, '_> {
    /// Stores a raw value.
    pub fn put_raw(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.table.insert(key, value)?;
        Ok(())
    }

    /// Stores a record.
    pub fn put<T: Serialize>(&mut self, key: &str, value: &T) -> Result<()> {
        let v = serde_json::to_vec(value)?;
        self.put_raw(key, &v)
    }

    /// Removes a record; true if it existed.
    pub fn delete(&mut self, key: &str) -> Result<bool> {
        Ok(self.table.remove(key)?.is_some())
    }

    /// Removes every record under `prefix`; returns how many.
    pub fn delete_prefix(&mut self, prefix: &str) -> Result<usize> {
        let keys: Vec<String> = self.scan_raw(prefix)?.into_iter().map(|(k, _)| k).collect();
        for k in &keys {
            self.table.remove(k.as_str())?;
        }
        Ok(keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_owner_only_whatever_it_was() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.redb");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        drop(Db::open(&p).unwrap());
        assert_eq!(mode(&p), 0o600);
        // An older berthd's 0644 database is tightened and still opens.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Db::open(&p).unwrap());
        assert_eq!(mode(&p), 0o600);
    }

    #[test]
    fn namespaces_skip_objects_and_keys_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("m.redb")).unwrap();
        db.write(|w| {
            for ns in ["a", "a-b", "a.b", "b"] {
                w.put(&ns_key(ns), &serde_json::json!({}))?;
            }
            w.put(&key("a", kind::IMAGES, "x/y:1"), &1)?;
            w.put(&key("a-b", kind::IMAGES, "z"), &2)?;
            Ok(())
        })
        .unwrap();
        let ns = db.read(|r| r.namespaces()).unwrap();
        assert_eq!(ns, vec!["a", "a-b", "a.b", "b"]);
        let imgs: Vec<(String, i32)> = db.read(|r| r.scan(&prefix("a", kind::IMAGES))).unwrap();
        assert_eq!(imgs, vec![("x/y:1".to_string(), 1)]);
        // A failed transaction leaves nothing behind.
        let r: Result<()> = db.write(|w| {
            w.put(&key("b", kind::IMAGES, "q"), &3)?;
            Err(Error::invalid("no"))
        });
        assert!(r.is_err());
        assert!(
            !db.read(|r| r.any_under(&prefix("b", kind::IMAGES)))
                .unwrap()
        );
        drop(db);
        // Reopening keeps data and the schema version.
        let db = Db::open(&dir.path().join("m.redb")).unwrap();
        assert!(
            db.read(|r| r.exists(&key("a-b", kind::IMAGES, "z")))
                .unwrap()
        );
        let id1 = db.meta_get_or_init("uuid", || b"one".to_vec()).unwrap();
        let id2 = db.meta_get_or_init("uuid", || b"two".to_vec()).unwrap();
        assert_eq!(id1, id2);
    }
}
