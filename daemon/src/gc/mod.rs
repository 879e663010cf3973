//! Garbage collection: mark and sweep, per namespace.
//!
//! Owns the collector. Reads every store (`metadata`, `content`, `images`,
//! `containers`, `snapshots`); no store reads it — stores ask for a run
//! through the `metadata::trigger::GcTrigger` whose other end [`Collector::start`]
//! serves.
//!
//! - `roots`: images (unless their `containerd.io/gc.expire` has passed),
//!   containers, the resources of live leases, content labelled
//!   `containerd.io/gc.root` or with a future `gc.expire`, live uploads.
//! - `walk`: an image holds its target; `containerd.io/gc.ref.content*`
//!   and `gc.ref.image*` labels hold blobs and images,
//!   `gc.ref.snapshot.<snapshotter>` snapshots; a blob labelled
//!   `gc.bref.content*=<parent>` is held while its parent is; a `gc.flat`
//!   lease holds its resources but not what they reference.
//! - `sweep`: unmarked metadata goes in the same transaction as the mark
//!   (expired leases too); then snapshots nothing holds, children first; then
//!   files no namespace records.
//!
//! Collection runs in the background, a short delay after a trigger's
//! `schedule`, or at once for its `collect` (`sync` deletes).

mod labels;
mod roots;
mod sweep;
mod walk;

#[cfg(test)]
mod tests;

pub use sweep::Stats;

use crate::content::Blobs;
use crate::error::{Error, Result};
use crate::metadata::trigger::{GcRequest, GcRequests};
use crate::metadata::{Db, Read};
use crate::snapshots::Snapshots;
use crate::types::now;
use labels::SnapshotRoots;
use std::sync::Arc;
use std::time::Duration;

/// The collector: what it reads and sweeps.
pub struct Collector {
    db: Arc<Db>,
    blobs: Arc<Blobs>,
    snapshots: Arc<Snapshots>,
}

impl Collector {
    pub fn new(db: Arc<Db>, blobs: Arc<Blobs>, snapshots: Arc<Snapshots>) -> Collector {
        Collector {
            db,
            blobs,
            snapshots,
        }
    }

    /// Serves `requests` on a task until every trigger is dropped; `delay`
    /// batches scheduled runs into one. Must run inside a tokio runtime.
    pub fn start(self: Arc<Self>, mut requests: GcRequests, delay: Duration) {
        tokio::spawn(async move {
            while let Some(req) = requests.recv().await {
                let mut waiters = Vec::new();
                match req {
                    GcRequest::Schedule => tokio::time::sleep(delay).await,
                    GcRequest::Collect(w) => waiters.push(w),
                }
                // Everything queued meanwhile is served by this one run.
                while let Some(r) = requests.try_recv() {
                    if let GcRequest::Collect(w) = r {
                        waiters.push(w);
                    }
                }
                let c = self.clone();
                let out = tokio::task::spawn_blocking(move || c.collect())
                    .await
                    .unwrap_or_else(|e| Err(Error::internal(format!("gc task: {e}"))));
                match &out {
                    Ok(s) if *s != Stats::default() => tracing::info!(?s, "garbage collected"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("garbage collection failed: {}", e.chain()),
                }
                let out = out.map(|_| ());
                for w in waiters {
                    let _ = w.send(out.clone());
                }
            }
        });
    }

    /// One collection, now, on this thread.
    pub fn collect(&self) -> Result<Stats> {
        let mut stats = Stats::default();
        let t = now();
        // No snapshot is created or committed while a collection runs, so
        // none is seen before the reference that holds it.
        let _sweep = self.snapshots.sweep_guard();
        let mut snap_roots = SnapshotRoots::new();
        self.db.write(|w| {
            for ns in w.namespaces()? {
                let rec = roots::NsRecords::load(w, &ns)?;
                let roots = roots::scan(&ns, &rec, t);
                snap_roots.extend(roots.snapshots.iter().cloned());
                let marked = walk::mark(&ns, &rec, &roots, &mut snap_roots);
                sweep::metadata(w, &ns, &rec, &roots, &marked, t, &mut stats)?;
            }
            Ok(())
        })?;
        sweep::snapshots(&self.snapshots, &snap_roots, t, &mut stats);
        sweep::files(&self.db, &self.blobs, &mut stats)?;
        Ok(stats)
    }
}
