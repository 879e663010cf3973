//! Leases: client-held references that keep objects (content, ingests,
//! images, snapshots) from garbage collection while a multi-step operation
//! such as an import or pull is under way.

use crate::error::{Error, Result};
use crate::metadata::namespaces;
use crate::metadata::trigger::GcTrigger;
use crate::metadata::{Db, Read, Writer, key, kind, prefix};
use crate::types::{Ctx, Digest, Labels, drop_empty, now, validate_labels};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Label that marks a lease (or image/content) collectable after an RFC 3339 time.
pub const LABEL_EXPIRE: &str = "containerd.io/gc.expire";
/// Label that makes a lease hold only its own resources, not their references.
pub const LABEL_FLAT: &str = "containerd.io/gc.flat";

/// A resource held by a lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Resource {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// What is stored for a lease.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub created_at: i64,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub resources: Vec<Resource>,
}

impl LeaseRecord {
    /// True once the lease's expiry label lies in the past.
    pub fn expired(&self, now_nanos: i64) -> bool {
        self.labels
            .get(LABEL_EXPIRE)
            .and_then(|v| parse_time(v))
            .is_some_and(|t| t <= now_nanos)
    }
}

/// Parses an RFC 3339 time into nanoseconds since the epoch.
pub fn parse_time(v: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

/// Checks a resource type/id pair the way containerd does.
fn check_resource(r: &Resource) -> Result<Resource> {
    let parts: Vec<&str> = r.kind.split('/').collect();
    match parts[0] {
        "content" | "ingests" | "images" if parts.len() == 1 => {
            if parts[0] == "content" {
                Digest::parse(&r.id).map_err(|e| {
                    Error::invalid(format!("invalid content resource id {}: {e}", r.id))
                })?;
            }
            Ok(r.clone())
        }
        "snapshots" if parts.len() == 2 && !parts[1].is_empty() => Ok(r.clone()),
        "content" | "ingests" | "images" | "snapshots" => Err(Error::invalid(format!(
            "invalid resource type {:?}: use content, ingests, images or snapshots/<snapshotter>",
            r.kind
        ))),
        _ => Err(Error::unimplemented(format!(
            "resource type {:?} not supported yet",
            r.kind
        ))),
    }
}

/// Adds a resource to the request's lease, if it has one, inside `w`.
pub fn attach(w: &mut Writer<'_, '_>, ctx: &Ctx, kind_: &str, id: &str) -> Result<()> {
    let Some(lease) = &ctx.lease else {
        return Ok(());
    };
    let k = key(&ctx.ns, kind::LEASES, lease);
    let mut rec: LeaseRecord = w.get(&k)?.ok_or_else(|| {
        Error::not_found(format!(
            "lease {lease:?} does not exist in namespace {:?}",
            ctx.ns
        ))
    })?;
    let r = Resource {
        id: id.to_string(),
        kind: kind_.to_string(),
    };
    if !rec.resources.contains(&r) {
        rec.resources.push(r);
        w.put(&k, &rec)?;
    }
    Ok(())
}

/// Removes a resource from every lease of a namespace (the object is gone).
pub fn detach_everywhere(w: &mut Writer<'_, '_>, ns: &str, kind_: &str, id: &str) -> Result<()> {
    for (lid, mut rec) in w.scan::<LeaseRecord>(&prefix(ns, kind::LEASES))? {
        let before = rec.resources.len();
        rec.resources.retain(|r| !(r.kind == kind_ && r.id == id));
        if rec.resources.len() != before {
            w.put(&key(ns, kind::LEASES, &lid), &rec)?;
        }
    }
    Ok(())
}

/// The leases service logic.
pub struct Leases {
    db: Arc<Db>,
    gc: GcTrigger,
}

impl Leases {
    pub fn new(db: Arc<Db>, gc: GcTrigger) -> Self {
        Self { db, gc }
    }

    /// Creates a lease; an empty id gets a random one. Returns the id.
    pub fn create(&self, ns: &str, id: &str, mut labels: Labels) -> Result<(String, LeaseRecord)> {
        let id = if id.is_empty() {
            format!(
                "{}-{}",
                now(),
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            )
        } else {
            id.to_string()
        };
        let id = id.as_str();
        drop_empty(&mut labels);
        validate_labels(&labels)?;
        if let Some(v) = labels.get(LABEL_EXPIRE)
            && parse_time(v).is_none()
        {
            return Err(Error::invalid(format!(
                "label {LABEL_EXPIRE}={v:?} is not an RFC 3339 time"
            )));
        }
        self.db.write(|w| {
            namespaces::ensure(w, ns)?;
            let k = key(ns, kind::LEASES, id);
            if w.exists(&k)? {
                return Err(Error::already_exists(format!(
                    "lease {id:?}: already exists"
                )));
            }
            let rec = LeaseRecord {
                created_at: now(),
                labels,
                resources: vec![],
            };
            w.put(&k, &rec)?;
            Ok((id.to_string(), rec))
        })
    }

    /// Deletes a lease; its objects become collectable. With `sync`, waits
    /// for the collection to finish.
    pub async fn delete(&self, ns: &str, id: &str, sync: bool) -> Result<()> {
        self.db.write(|w| {
            if !w.delete(&key(ns, kind::LEASES, id))? {
                return Err(Error::not_found(format!("lease {id:?}: not found")));
            }
            Ok(())
        })?;
        if sync {
            self.gc.collect().await?;
        } else {
            self.gc.schedule();
        }
        Ok(())
    }

    /// All leases of a namespace.
    pub fn list(&self, ns: &str) -> Result<Vec<(String, LeaseRecord)>> {
        self.db.read(|r| r.scan(&prefix(ns, kind::LEASES)))
    }

    /// Changes a lease's resources; a missing lease is reported before a bad
    /// resource, as containerd does.
    fn modify(
        &self,
        ns: &str,
        id: &str,
        r: &Resource,
        f: impl FnOnce(&mut LeaseRecord, Resource),
    ) -> Result<()> {
        self.db.write(|w| {
            let k = key(ns, kind::LEASES, id);
            let mut rec: LeaseRecord = w
                .get(&k)?
                .ok_or_else(|| Error::not_found(format!("lease {id:?}: not found")))?;
            f(&mut rec, check_resource(r)?);
            w.put(&k, &rec)
        })
    }

    /// Adds a resource to a lease.
    pub fn add_resource(&self, ns: &str, id: &str, r: Resource) -> Result<()> {
        self.modify(ns, id, &r, |rec, r| {
            if !rec.resources.contains(&r) {
                rec.resources.push(r);
            }
        })
    }

    /// Removes a resource from a lease; the object may then be collected.
    pub fn delete_resource(&self, ns: &str, id: &str, r: Resource) -> Result<()> {
        self.modify(ns, id, &r, |rec, r| rec.resources.retain(|x| x != &r))?;
        self.gc.schedule();
        Ok(())
    }

    /// The resources a lease holds.
    pub fn list_resources(&self, ns: &str, id: &str) -> Result<Vec<Resource>> {
        let mut resources = self
            .db
            .read(|r| r.get::<LeaseRecord>(&key(ns, kind::LEASES, id)))?
            .map(|l| l.resources)
            .ok_or_else(|| Error::not_found(format!("lease {id:?}: not found")))?;
        // containerd's order: content, ingests, then snapshots by snapshotter,
        // each by id (its buckets' key order); images last (containerd 2).
        let rank = |r: &Resource| match r.kind.as_str() {
            "content" => 0,
            "ingests" => 1,
            k if k.starts_with("snapshots/") => 2,
            _ => 3,
        };
        resources.sort_by(|a, b| (rank(a), &a.kind, &a.id).cmp(&(rank(b), &b.kind, &b.id)));
        Ok(resources)
    }
}

#[cfg(test)]
mod tests {
    //! Leases over a temporary root (no root user needed).
    use super::{Leases, Resource};
    use crate::metadata::Db;
    use crate::metadata::trigger::GcTrigger;
    use crate::types::Labels;
    use std::sync::Arc;

    struct Fixture {
        leases: Leases,
    }

    /// Leases over a database under `dir`; collection requests go nowhere.
    fn stores(dir: &tempfile::TempDir) -> Fixture {
        let db = Db::open(&dir.path().join("metadata.redb")).expect("open metadata");
        let (gc, _requests) = GcTrigger::new();
        Fixture {
            leases: Leases::new(Arc::new(db), gc),
        }
    }

    const NS: &str = "lease-test";
    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn res(kind: &str, id: &str) -> Resource {
        Resource {
            id: id.into(),
            kind: kind.into(),
        }
    }

    #[tokio::test]
    async fn create_ids_labels_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let c = stores(&dir);
        let (id, _) = c.leases.create(NS, "", Labels::new()).unwrap();
        assert!(!id.is_empty(), "an empty id gets a generated one");
        assert!(
            c.leases
                .create(NS, &id, Labels::new())
                .unwrap_err()
                .is_already_exists()
        );
        let bad = Labels::from([(
            "containerd.io/gc.expire".to_string(),
            "tomorrow".to_string(),
        )]);
        let err = c.leases.create(NS, "bad", bad).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
        assert!(c.leases.list(NS).unwrap().iter().all(|(i, _)| i != "bad"));
        // Empty label values are not stored (as in containerd).
        let (_, rec) = c
            .leases
            .create(
                NS,
                "labelled",
                Labels::from([("k".to_string(), String::new())]),
            )
            .unwrap();
        assert!(rec.labels.is_empty());
        c.leases.delete(NS, &id, false).await.unwrap();
        assert!(
            c.leases
                .delete(NS, &id, false)
                .await
                .unwrap_err()
                .is_not_found()
        );
    }

    #[tokio::test]
    async fn resources_are_checked_deduplicated_and_listed_in_containerds_order() {
        let dir = tempfile::tempdir().unwrap();
        let c = stores(&dir);
        c.leases.create(NS, "l", Labels::new()).unwrap();
        for r in [
            res("snapshots/overlayfs", "b"),
            res("images", "docker.io/x/y:1"),
            res("ingests", "up-1"),
            res("content", DIGEST),
            res("snapshots/native", "a"),
            res("content", DIGEST),
        ] {
            c.leases.add_resource(NS, "l", r).unwrap();
        }
        let kinds: Vec<String> = c
            .leases
            .list_resources(NS, "l")
            .unwrap()
            .into_iter()
            .map(|r| format!("{}:{}", r.kind, r.id))
            .collect();
        assert_eq!(
            kinds,
            [
                format!("content:{DIGEST}"),
                "ingests:up-1".into(),
                "snapshots/native:a".into(),
                "snapshots/overlayfs:b".into(),
                "images:docker.io/x/y:1".into(),
            ]
        );
        for (r, unimplemented) in [
            (res("content", "not-a-digest"), false),
            (res("snapshots", "x"), false),
            (res("containers", "c"), true),
        ] {
            let e = c.leases.add_resource(NS, "l", r.clone()).unwrap_err();
            assert_eq!(
                e.kind() == berth_proto::errdefs::Kind::Unimplemented,
                unimplemented,
                "{r:?}: {e}"
            );
        }
        // A missing lease is NotFound before the resource is looked at.
        let e = c
            .leases
            .add_resource(NS, "nope", res("bogus", ""))
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        c.leases
            .delete_resource(NS, "l", res("ingests", "up-1"))
            .unwrap();
        assert_eq!(c.leases.list_resources(NS, "l").unwrap().len(), 4);
    }
}
