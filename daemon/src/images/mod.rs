//! Images: the image store (records naming a target in the content store)
//! and the OCI formats (`oci`: media types, manifests, indexes, platforms,
//! picking a platform's manifest). May use `metadata`, `events` and content
//! reads; never snapshots or transfers, which build on it.
//!
//! Images: a name pointing at a target descriptor (manifest or index) in
//! the content store. The target and everything it references are kept from
//! garbage collection for as long as the image exists.

pub mod oci;

use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::metadata::leases;
use crate::metadata::namespaces;
use crate::metadata::trigger::GcTrigger;
use crate::metadata::{Db, Read, key, kind, prefix};
use crate::types::{
    Ctx, Descriptor, Digest, Labels, apply_label_path, drop_empty, now, validate_labels,
};
use berth_proto::filters::{Adaptor, Filter, label_field};
use berth_proto::pb::containerd::services::images::v1 as ev;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What is stored for an image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub target: Descriptor,
    #[serde(default)]
    pub labels: Labels,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An image with its name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Image {
    pub name: String,
    pub record: ImageRecord,
}

impl Adaptor for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        let first = path.first()?.as_str();
        match first {
            "name" if path.len() == 1 => Some(self.name.clone()),
            "target" if path.len() == 2 => match path[1].as_str() {
                "digest" => Some(self.record.target.digest.clone()),
                "mediatype" => Some(self.record.target.media_type.clone()),
                _ => None,
            },
            "labels" => label_field(&self.record.labels, &path[1..]),
            "annotations" => label_field(&self.record.target.annotations, &path[1..]),
            _ => None,
        }
    }
}

fn validate(img: &Image) -> Result<()> {
    if img.name.is_empty() {
        return Err(Error::invalid("image name must not be empty"));
    }
    validate_labels(&img.record.labels).map_err(|e| e.context("image.Labels"))?;
    let t = &img.record.target;
    Digest::parse(&t.digest).map_err(|e| e.context("image target.Digest"))?;
    if t.size <= 0 {
        return Err(Error::invalid(
            "image target.Size must be greater than zero",
        ));
    }
    if t.media_type.is_empty() {
        return Err(Error::invalid("image target.MediaType must be set"));
    }
    Ok(())
}

/// The images service logic.
pub struct Images {
    db: Arc<Db>,
    events: Arc<Exchange>,
    gc: GcTrigger,
}

impl Images {
    pub fn new(db: Arc<Db>, events: Arc<Exchange>, gc: GcTrigger) -> Self {
        Self { db, events, gc }
    }

    /// One image; `NotFound` if absent.
    pub fn get(&self, ns: &str, name: &str) -> Result<Image> {
        self.db
            .read(|r| r.get::<ImageRecord>(&key(ns, kind::IMAGES, name)))?
            .map(|record| Image {
                name: name.to_string(),
                record,
            })
            .ok_or_else(|| Error::not_found(format!("image {name:?}: not found")))
    }

    /// Images matching any of `filters`.
    pub fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Image>> {
        let filter = Filter::parse_all(filters)?;
        let all = self
            .db
            .read(|r| r.scan::<ImageRecord>(&prefix(ns, kind::IMAGES)))?;
        Ok(all
            .into_iter()
            .map(|(name, record)| Image { name, record })
            .filter(|i| filter.matches(i))
            .collect())
    }

    /// Creates an image; `AlreadyExists` if the name is taken.
    pub fn create(&self, ctx: &Ctx, mut img: Image) -> Result<Image> {
        let t = now();
        img.record.created_at = t;
        img.record.updated_at = t;
        drop_empty(&mut img.record.labels);
        drop_empty(&mut img.record.target.annotations);
        validate(&img)?;
        self.db.write(|w| {
            namespaces::ensure(w, &ctx.ns)?;
            let k = key(&ctx.ns, kind::IMAGES, &img.name);
            if w.exists(&k)? {
                return Err(Error::already_exists(format!(
                    "image {:?}: already exists",
                    img.name
                )));
            }
            w.put(&k, &img.record)?;
            leases::attach(w, ctx, "images", &img.name)
        })?;
        self.events.publish(
            &ctx.ns,
            "/images/create",
            &ev::ImageCreate {
                name: img.name.clone(),
                labels: img.record.labels.clone(),
            },
        );
        Ok(img)
    }

    /// Updates an image. With no paths, labels and target are replaced;
    /// otherwise `labels`, `labels.<k>`, `target`, `annotations` and
    /// `annotations.<k>` apply.
    pub fn update(&self, ns: &str, img: Image, paths: &[String]) -> Result<Image> {
        if img.name.is_empty() {
            return Err(Error::invalid("image name is required for update"));
        }
        let updated = self.db.write(|w| {
            let k = key(ns, kind::IMAGES, &img.name);
            let mut cur: ImageRecord = w
                .get(&k)?
                .ok_or_else(|| Error::not_found(format!("image {:?}: not found", img.name)))?;
            if paths.is_empty() {
                cur.labels = img.record.labels.clone();
                cur.target = img.record.target.clone();
            }
            for p in paths {
                if apply_label_path(&mut cur.labels, &img.record.labels, p) {
                    continue;
                }
                if p == "target" {
                    cur.target = img.record.target.clone();
                } else if p == "annotations" {
                    cur.target.annotations = img.record.target.annotations.clone();
                } else if let Some(a) = p.strip_prefix("annotations.") {
                    match img.record.target.annotations.get(a) {
                        Some(v) => cur.target.annotations.insert(a.to_string(), v.clone()),
                        None => cur.target.annotations.remove(a),
                    };
                } else {
                    return Err(Error::invalid(format!(
                        "cannot update {p:?} field on image {:?}",
                        img.name
                    )));
                }
            }
            cur.updated_at = now();
            drop_empty(&mut cur.labels);
            drop_empty(&mut cur.target.annotations);
            let out = Image {
                name: img.name.clone(),
                record: cur,
            };
            validate(&out)?;
            w.put(&k, &out.record)?;
            Ok(out)
        })?;
        self.events.publish(
            ns,
            "/images/update",
            &ev::ImageUpdate {
                name: updated.name.clone(),
                labels: updated.record.labels.clone(),
            },
        );
        // A new target may orphan the old one.
        self.gc.schedule();
        Ok(updated)
    }

    /// Deletes an image; with `target`, only if it still points there. With
    /// `sync`, waits until the content it held is collected.
    pub async fn delete(
        &self,
        ns: &str,
        name: &str,
        target: Option<&str>,
        sync: bool,
    ) -> Result<()> {
        self.db.write(|w| {
            let k = key(ns, kind::IMAGES, name);
            let cur: ImageRecord = w
                .get(&k)?
                .ok_or_else(|| Error::not_found(format!("image {name:?}: not found")))?;
            if let Some(t) = target.filter(|t| !t.is_empty())
                && cur.target.digest != t
            {
                return Err(Error::not_found(format!(
                    "image {name:?} has target {}, not {t}",
                    cur.target.digest
                )));
            }
            w.delete(&k)?;
            leases::detach_everywhere(w, ns, "images", name)
        })?;
        self.events.publish(
            ns,
            "/images/delete",
            &ev::ImageDelete {
                name: name.to_string(),
            },
        );
        if sync {
            self.gc.collect().await?;
        } else {
            self.gc.schedule();
        }
        Ok(())
    }
}
