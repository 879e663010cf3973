//! Named volumes: directories berthd keeps per namespace for containers to
//! bind-mount, as docker's local volume driver does. A volume is
//! `<root>/volumes/<ns>/<name>/` holding `_data` (what is mounted) and
//! `meta.json` (labels, creation time).
//!
//! Crash safety without a database: a volume is assembled in a dot-named
//! staging directory (names never start with a dot) and renamed into place
//! in one step, and a removal first renames it away; dot-entries left by a
//! crash are cleared on open. So a volume is either wholly there or absent.
//!
//! The whole tree is owner-only: containers reach `_data` through the bind
//! mount the shim makes as root, never by walking the host path, and other
//! host users must not read what containers keep there.

use crate::containers::Containers;
use crate::error::{Error, Result, io_err};
use crate::metadata::Db;
use crate::types::{Labels, now, validate_labels};
use berth_snapshotter::mount::private;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The directory a volume's containers mount.
pub const DATA: &str = "_data";
const META: &str = "meta.json";

/// What `meta.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    #[serde(default)]
    pub labels: Labels,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
}

/// A volume with its name and mountpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub name: String,
    pub mountpoint: PathBuf,
    pub record: VolumeRecord,
}

/// docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (so at
/// least two characters).
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid volume name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-]+ is allowed (at least 2 characters)"
        )))
    }
}

/// The volume store.
pub struct Volumes {
    root: PathBuf,
    db: Arc<Db>,
    containers: Arc<Containers>,
    /// Serializes create/delete/prune so a check (exists, unused) holds
    /// until the change it guards is made.
    lock: Mutex<()>,
}

impl Volumes {
    /// Opens the store at `root` (`<daemon root>/volumes`), clearing what a
    /// crash left half-made or half-removed.
    pub fn open(root: &Path, db: Arc<Db>, containers: Arc<Containers>) -> Result<Volumes> {
        private::dir(root, private::OWNER_ONLY)
            .map_err(|e| io_err(format!("create {}", root.display()), e))?;
        for ns in read_dir(root)? {
            let ns_dir = root.join(&ns);
            for entry in read_dir(&ns_dir)? {
                if entry.starts_with('.') {
                    let p = ns_dir.join(&entry);
                    std::fs::remove_dir_all(&p)
                        .map_err(|e| io_err(format!("remove leftover {}", p.display()), e))?;
                }
            }
        }
        Ok(Volumes {
            root: root.to_path_buf(),
            db,
            containers,
            lock: Mutex::new(()),
        })
    }

    fn ns_dir(&self, ns: &str) -> PathBuf {
        self.root.join(ns)
    }

    /// The host path containers mount for volume `name` in `ns`.
    pub fn mountpoint(&self, ns: &str, name: &str) -> PathBuf {
        self.ns_dir(ns).join(name).join(DATA)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding it leaves nothing half-done on disk that
        // the next caller would trip over (renames are atomic).
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates volume `name` (a generated one when empty); an existing one
    /// is returned unchanged, as docker does. The flag says whether it is new.
    pub fn create(&self, ns: &str, name: &str, labels: Labels) -> Result<(Volume, bool)> {
        validate_labels(&labels)?;
        let name = if name.is_empty() {
            // docker's anonymous volumes: 64 hex digits.
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        } else {
            validate_name(name)?;
            name.to_string()
        };
        let _g = self.guard();
        match self.get_unlocked(ns, &name) {
            Ok(v) => return Ok((v, false)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        // Like every object, a volume makes its namespace exist.
        self.db
            .write(|w| crate::metadata::namespaces::ensure(w, ns))?;
        let ns_dir = self.ns_dir(ns);
        private::dir(&ns_dir, private::OWNER_ONLY)
            .map_err(|e| io_err(format!("create {}", ns_dir.display()), e))?;
        let staging = ns_dir.join(format!(".new-{name}"));
        let record = VolumeRecord {
            labels,
            created_at: now(),
        };
        let made = (|| -> std::io::Result<()> {
            if staging.exists() {
                std::fs::remove_dir_all(&staging)?;
            }
            private::dir(&staging, private::OWNER_ONLY)?;
            // docker's _data mode: containers running as other users can
            // read it through their mount.
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o755)
                .create(staging.join(DATA))?;
            let mut f = private::create_file(&staging.join(META))?;
            f.write_all(&serde_json::to_vec(&record).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            crate::durable::sync_dir(&staging)?;
            std::fs::rename(&staging, ns_dir.join(&name))?;
            crate::durable::sync_dir(&ns_dir)
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(io_err(format!("create volume {name}"), e));
        }
        Ok((
            Volume {
                mountpoint: self.mountpoint(ns, &name),
                name,
                record,
            },
            true,
        ))
    }

    /// Volume `name` in `ns`.
    pub fn get(&self, ns: &str, name: &str) -> Result<Volume> {
        validate_name(name)?;
        self.get_unlocked(ns, name)
    }

    fn get_unlocked(&self, ns: &str, name: &str) -> Result<Volume> {
        let meta = self.ns_dir(ns).join(name).join(META);
        let bytes = match std::fs::read(&meta) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("volume {name}: not found")));
            }
            Err(e) => return Err(io_err(format!("read {}", meta.display()), e)),
        };
        let record: VolumeRecord = serde_json::from_slice(&bytes).map_err(|e| {
            Error::internal(format!("volume {name}: corrupt {}: {e}", meta.display()))
        })?;
        Ok(Volume {
            name: name.to_string(),
            mountpoint: self.mountpoint(ns, name),
            record,
        })
    }

    /// Every volume in `ns`, by name.
    pub fn list(&self, ns: &str) -> Result<Vec<Volume>> {
        let dir = self.ns_dir(ns);
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = read_dir(&dir)?
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            match self.get_unlocked(ns, &n) {
                Ok(v) => out.push(v),
                // Removed meanwhile.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The containers in `ns` whose spec bind-mounts `mountpoint`.
    fn users(&self, ns: &str, mountpoint: &Path) -> Result<Vec<String>> {
        let want = mountpoint.to_string_lossy();
        Ok(self
            .containers
            .list(ns, &[])?
            .into_iter()
            .filter(|c| {
                let Some(spec) = &c.record.spec else {
                    return false;
                };
                let Ok(bytes) = hex::decode(&spec.value_hex) else {
                    return false;
                };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                    return false;
                };
                v["mounts"].as_array().is_some_and(|ms| {
                    ms.iter().any(|m| {
                        m["source"]
                            .as_str()
                            .is_some_and(|s| Path::new(s) == Path::new(want.as_ref()))
                    })
                })
            })
            .map(|c| c.id)
            .collect())
    }

    /// Removes volume `name`; refused while a container uses it.
    pub fn delete(&self, ns: &str, name: &str) -> Result<()> {
        validate_name(name)?;
        let _g = self.guard();
        let v = self.get_unlocked(ns, name)?;
        let users = self.users(ns, &v.mountpoint)?;
        if !users.is_empty() {
            return Err(Error::precondition(format!(
                "volume {name} is in use by container(s) {}: remove them first",
                users.join(", ")
            )));
        }
        self.remove(ns, name).map(|_| ())
    }

    /// Renames the volume away (it is gone from then on), then deletes its
    /// files; returns the bytes they held.
    fn remove(&self, ns: &str, name: &str) -> Result<u64> {
        let ns_dir = self.ns_dir(ns);
        let gone = ns_dir.join(format!(".rm-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::rename(ns_dir.join(name), &gone)
            .and_then(|()| crate::durable::sync_dir(&ns_dir))
            .map_err(|e| io_err(format!("remove volume {name}"), e))?;
        let bytes = du(&gone.join(DATA));
        std::fs::remove_dir_all(&gone).map_err(|e| io_err(format!("remove volume {name}"), e))?;
        Ok(bytes)
    }

    /// Removes every volume in `ns` no container uses; returns their names
    /// and the bytes their data held.
    pub fn prune(&self, ns: &str) -> Result<(Vec<String>, u64)> {
        let _g = self.guard();
        let mut deleted = Vec::new();
        let mut bytes = 0;
        for v in self.list(ns)? {
            if self.users(ns, &v.mountpoint)?.is_empty() {
                bytes += self.remove(ns, &v.name)?;
                deleted.push(v.name);
            }
        }
        Ok((deleted, bytes))
    }
}

fn read_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("read {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| io_err(format!("read {}", dir.display()), e))?;
        out.push(e.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// Bytes the regular files under `dir` hold (links not followed; what
/// cannot be read counts as nothing).
fn du(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Exchange;
    use crate::metadata::Db;
    use crate::metadata::trigger::GcTrigger;
    use std::os::unix::fs::PermissionsExt;

    fn store(dir: &Path) -> Volumes {
        let db = Arc::new(Db::open(&dir.join("meta.redb")).unwrap());
        let (gc, _rx) = GcTrigger::new();
        let containers = Arc::new(Containers::new(db.clone(), Arc::new(Exchange::new()), gc));
        Volumes::open(&dir.join("volumes"), db, containers).unwrap()
    }

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["ab", "a1", "data_1.x-y", "0abc"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "", "a", "_ab", ".ab", "-ab", "a/b", "a b", "a:b", "..", "ä1",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn create_is_idempotent_and_namespaced() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path());
        let labels: Labels = [("a".to_string(), "1".to_string())].into();
        let (v, new) = s.create("ns1", "data", labels.clone()).unwrap();
        assert!(new);
        assert_eq!(v.mountpoint, t.path().join("volumes/ns1/data/_data"));
        assert!(v.mountpoint.is_dir());
        let (again, new) = s.create("ns1", "data", Labels::new()).unwrap();
        assert!(!new);
        assert_eq!(again.record, v.record);
        assert!(s.list("ns2").unwrap().is_empty());
        assert!(s.get("ns2", "data").unwrap_err().is_not_found());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&t.path().join("volumes")), 0o700);
        assert_eq!(mode(&t.path().join("volumes/ns1")), 0o700);
        let (anon, _) = s.create("ns1", "", Labels::new()).unwrap();
        assert_eq!(anon.name.len(), 64);
    }

    #[test]
    fn crash_leftovers_are_cleared_and_never_listed() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path());
        s.create("ns", "kept", Labels::new()).unwrap();
        // What a crash mid-create or mid-remove leaves.
        let ns = t.path().join("volumes/ns");
        std::fs::create_dir_all(ns.join(".new-half/_data")).unwrap();
        std::fs::create_dir_all(ns.join(".rm-old-1/_data")).unwrap();
        let names = |s: &Volumes| -> Vec<String> {
            s.list("ns").unwrap().into_iter().map(|v| v.name).collect()
        };
        assert_eq!(names(&s), ["kept"]);
        // The database allows one opener at a time.
        drop(s);
        let s = store(t.path());
        assert_eq!(names(&s), ["kept"]);
        assert!(!ns.join(".new-half").exists());
        assert!(!ns.join(".rm-old-1").exists());
    }

    #[test]
    fn prune_reports_names_and_bytes() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path());
        let (v, _) = s.create("ns", "full", Labels::new()).unwrap();
        std::fs::create_dir(v.mountpoint.join("d")).unwrap();
        std::fs::write(v.mountpoint.join("d/f"), [0u8; 1000]).unwrap();
        s.create("ns", "empty", Labels::new()).unwrap();
        let (mut deleted, bytes) = s.prune("ns").unwrap();
        deleted.sort();
        assert_eq!(deleted, ["empty", "full"]);
        assert_eq!(bytes, 1000);
        assert!(s.list("ns").unwrap().is_empty());
        assert!(s.delete("ns", "full").unwrap_err().is_not_found());
    }
}
