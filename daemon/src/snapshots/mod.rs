//! Snapshots: the namespaced store over the loaded snapshotters, the diff
//! service (`diff`: apply a layer, compute one) and unpacking images into
//! snapshots (`unpack`). May use `metadata`, `content`, `images::oci` and
//! `events`.
//!
//! Namespaced snapshots over the loaded snapshotters.
//!
//! Each snapshotter (overlayfs by default, native) lives under
//! `<root>/snapshots/<name>`. Keys are stored as `<namespace>/<key>`, so one
//! namespace never sees another's snapshots. Calls here do blocking work.
//! Every call that creates a snapshot holds [`Snapshots::gc_guard`] for
//! reading until the snapshot is attached to the request's lease, so the
//! collector (which holds it for writing) never sees it unreferenced.

pub mod diff;
pub mod unpack;

use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::metadata::Db;
use crate::metadata::leases;
use crate::metadata::namespaces;
use crate::types::{Ctx, Labels};
use berth_proto::filters::Filter;
use berth_proto::pb::containerd::events as ev;
use berth_snapshotter::native::Native;
use berth_snapshotter::overlay::Overlay;
use berth_snapshotter::{Info, Mount, Snapshotter, Usage};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Name used when a request names none.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

fn convert(e: berth_snapshotter::Error) -> Error {
    Error::new(e.kind(), e.message())
}

/// The loaded snapshotters.
pub struct Snapshots {
    map: BTreeMap<String, Arc<dyn Snapshotter>>,
    db: Arc<Db>,
    events: Arc<Exchange>,
    gc: RwLock<()>,
}

/// Backend key of `key` in `ns`.
pub fn bkey(ns: &str, key: &str) -> String {
    format!("{ns}/{key}")
}

/// Splits a backend key into namespace and key.
pub fn split(bkey: &str) -> Option<(&str, &str)> {
    bkey.split_once('/')
}

impl Snapshots {
    /// Loads overlayfs (when the kernel has it) and native under `root`.
    pub fn open(root: &Path, db: Arc<Db>, events: Arc<Exchange>) -> Result<Snapshots> {
        berth_snapshotter::mount::private::dir(root, berth_snapshotter::mount::private::OWNER_ONLY)
            .map_err(|e| crate::error::io_err(format!("create {}", root.display()), e))?;
        let mut map: BTreeMap<String, Arc<dyn Snapshotter>> = BTreeMap::new();
        match Overlay::open(&root.join("overlayfs")) {
            Ok(o) => {
                map.insert("overlayfs".into(), Arc::new(o));
            }
            Err(e) => tracing::warn!("overlayfs snapshotter not loaded: {e}"),
        }
        map.insert(
            "native".into(),
            Arc::new(Native::open(&root.join("native")).map_err(convert)?),
        );
        for (name, s) in &map {
            if let Err(e) = s.cleanup() {
                tracing::warn!("{name}: cleanup after restart: {e}");
            }
        }
        Ok(Snapshots {
            map,
            db,
            events,
            gc: RwLock::new(()),
        })
    }

    /// Names of the loaded snapshotters.
    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// The snapshotter called `name` (empty: the default).
    pub fn get(&self, name: &str) -> Result<(String, Arc<dyn Snapshotter>)> {
        let name = if name.is_empty() {
            if self.map.contains_key(DEFAULT_SNAPSHOTTER) {
                DEFAULT_SNAPSHOTTER
            } else {
                "native"
            }
        } else {
            name
        };
        self.map
            .get(name)
            .map(|s| (name.to_string(), s.clone()))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "snapshotter {name:?} is not loaded (available: {})",
                    self.names().join(", ")
                ))
            })
    }

    /// Held for reading by operations that create snapshots.
    pub fn gc_guard(&self) -> RwLockReadGuard<'_, ()> {
        self.gc.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Held for writing by the collector while it sweeps.
    pub fn sweep_guard(&self) -> RwLockWriteGuard<'_, ()> {
        self.gc.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every snapshotter with every snapshot it holds (backend keys).
    pub fn all(&self) -> Vec<(String, Arc<dyn Snapshotter>, Vec<Info>)> {
        self.map
            .iter()
            .filter_map(|(n, s)| match s.walk(&[]) {
                Ok(v) => Some((n.clone(), s.clone(), v)),
                Err(e) => {
                    tracing::warn!("{n}: list snapshots: {e}");
                    None
                }
            })
            .collect()
    }

    /// True if `ns` holds any snapshot, in any snapshotter.
    pub fn ns_has_snapshots(&self, ns: &str) -> Vec<String> {
        let prefix = format!("{ns}/");
        self.all()
            .into_iter()
            .filter(|(_, _, infos)| infos.iter().any(|i| i.name.starts_with(&prefix)))
            .map(|(n, _, _)| n)
            .collect()
    }

    fn attach(&self, ctx: &Ctx, sn: &str, key: &str) -> Result<()> {
        if ctx.lease.is_none() {
            return self.db.write(|w| namespaces::ensure(w, &ctx.ns));
        }
        self.db.write(|w| {
            namespaces::ensure(w, &ctx.ns)?;
            leases::attach(w, ctx, &format!("snapshots/{sn}"), key)
        })
    }

    fn create(
        &self,
        ctx: &Ctx,
        sn: &str,
        key: &str,
        parent: &str,
        labels: Labels,
        view: bool,
    ) -> Result<Vec<Mount>> {
        let (sn, s) = self.get(sn)?;
        let _g = self.gc_guard();
        let p = if parent.is_empty() {
            String::new()
        } else {
            bkey(&ctx.ns, parent)
        };
        let m = if view {
            s.view(&bkey(&ctx.ns, key), &p, labels)
        } else {
            s.prepare(&bkey(&ctx.ns, key), &p, labels)
        }
        // Unscoped before the context is added: it then becomes the source.
        .map_err(|e| {
            strip_ns(convert(e), &ctx.ns)
                .context(format!("{} {key:?}", if view { "view" } else { "prepare" }))
        })?;
        if let Err(e) = self.attach(ctx, &sn, key) {
            let _ = s.remove(&bkey(&ctx.ns, key));
            return Err(e);
        }
        self.events.publish(
            &ctx.ns,
            "/snapshot/prepare",
            &ev::SnapshotPrepare {
                key: key.to_string(),
                parent: parent.to_string(),
                snapshotter: sn,
            },
        );
        Ok(m)
    }

    /// Creates an active snapshot.
    pub fn prepare(
        &self,
        ctx: &Ctx,
        sn: &str,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        self.create(ctx, sn, key, parent, labels, false)
    }

    /// Creates a read-only view.
    pub fn view(
        &self,
        ctx: &Ctx,
        sn: &str,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        self.create(ctx, sn, key, parent, labels, true)
    }

    /// Mounts of an active snapshot or view.
    pub fn mounts(&self, ns: &str, sn: &str, key: &str) -> Result<Vec<Mount>> {
        let (_, s) = self.get(sn)?;
        s.mounts(&bkey(ns, key))
            .map_err(|e| strip_ns(convert(e), ns))
    }

    /// Commits active `key` as `name`.
    pub fn commit(&self, ctx: &Ctx, sn: &str, name: &str, key: &str, labels: Labels) -> Result<()> {
        let (sn, s) = self.get(sn)?;
        let _g = self.gc_guard();
        s.commit(&bkey(&ctx.ns, name), &bkey(&ctx.ns, key), labels)
            .map_err(|e| strip_ns(convert(e), &ctx.ns))?;
        self.attach(ctx, &sn, name)?;
        self.events.publish(
            &ctx.ns,
            "/snapshot/commit",
            &ev::SnapshotCommit {
                key: key.to_string(),
                name: name.to_string(),
                snapshotter: sn,
            },
        );
        Ok(())
    }

    /// Removes a snapshot without children.
    pub fn remove(&self, ns: &str, sn: &str, key: &str) -> Result<()> {
        let (sn, s) = self.get(sn)?;
        s.remove(&bkey(ns, key))
            .map_err(|e| strip_ns(convert(e), ns))?;
        self.events.publish(
            ns,
            "/snapshot/remove",
            &ev::SnapshotRemove {
                key: key.to_string(),
                snapshotter: sn,
            },
        );
        Ok(())
    }

    /// Info of one snapshot, as its namespace sees it.
    pub fn stat(&self, ns: &str, sn: &str, key: &str) -> Result<Info> {
        let (_, s) = self.get(sn)?;
        let i = s
            .stat(&bkey(ns, key))
            .map_err(|e| strip_ns(convert(e), ns))?;
        Ok(unscope(i, ns))
    }

    /// Updates labels.
    pub fn update(&self, ns: &str, sn: &str, mut info: Info, paths: &[String]) -> Result<Info> {
        let (_, s) = self.get(sn)?;
        info.name = bkey(ns, &info.name);
        let i = s
            .update(info, paths)
            .map_err(|e| strip_ns(convert(e), ns))?;
        Ok(unscope(i, ns))
    }

    /// Usage of one snapshot.
    pub fn usage(&self, ns: &str, sn: &str, key: &str) -> Result<Usage> {
        let (_, s) = self.get(sn)?;
        s.usage(&bkey(ns, key))
            .map_err(|e| strip_ns(convert(e), ns))
    }

    /// The namespace's snapshots matching any of `filters`.
    pub fn list(&self, ns: &str, sn: &str, filters: &[String]) -> Result<Vec<Info>> {
        let (_, s) = self.get(sn)?;
        let f = Filter::parse_all(filters)?;
        let prefix = format!("{ns}/");
        Ok(s.walk(&[])
            .map_err(convert)?
            .into_iter()
            .filter(|i| i.name.starts_with(&prefix))
            .map(|i| unscope(i, ns))
            .filter(|i| f.matches(i))
            .collect())
    }

    /// Removes unreferenced directories.
    pub fn cleanup(&self, sn: &str) -> Result<()> {
        let (_, s) = self.get(sn)?;
        s.cleanup().map_err(convert)
    }
}

fn unscope(mut i: Info, ns: &str) -> Info {
    let p = format!("{ns}/");
    if let Some(n) = i.name.strip_prefix(&p) {
        i.name = n.to_string();
    }
    if let Some(n) = i.parent.strip_prefix(&p) {
        i.parent = n.to_string();
    }
    i
}

/// Error messages speak of keys as the client named them.
fn strip_ns(e: Error, ns: &str) -> Error {
    let msg = e.message().replace(&format!("\"{ns}/"), "\"");
    e.with_message(msg)
}
