//! Where the CRI keeps pods and containers: each is a containerd container
//! record in namespace `k8s.io`, labelled `io.cri-containerd.kind`, with
//! the CRI metadata as the extension `berth.cri` (a protobuf `Any`). Every
//! change is a metadata transaction, so pods survive crashes and restarts.
//!
//! Names are unique per the CRI rule (`<name>_<namespace>_<uid>_<attempt>`
//! for pods, `<container>_<pod>_<namespace>_<uid>_<attempt>` for
//! containers); the reservations are rebuilt from the records on first use.

use crate::containers::{AnyRecord, Container, Containers};
use crate::error::{Error, Result};
use berth_proto::cri;
use berth_proto::pb::berth::cri::v1::{ContainerMetadata, SandboxMetadata};
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The containerd namespace of everything the CRI makes (`cri::NAMESPACE`;
/// defined here so that the store needs nothing of its parent).
pub const NAMESPACE: &str = "k8s.io";

/// Label telling pods from containers, as containerd's CRI sets it.
pub const KIND_LABEL: &str = "io.cri-containerd.kind";
pub const KIND_SANDBOX: &str = "sandbox";
pub const KIND_CONTAINER: &str = "container";
/// The extension holding the CRI metadata.
pub const EXTENSION: &str = "berth.cri";
pub const SANDBOX_TYPE_URL: &str = "berth.cri.v1.SandboxMetadata";
pub const CONTAINER_TYPE_URL: &str = "berth.cri.v1.ContainerMetadata";
/// Labels containerd puts on CRI records, beside the user's.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// A pod sandbox: its record and CRI metadata.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub record: Container,
    pub meta: SandboxMetadata,
}

/// A CRI container: its record and CRI metadata.
#[derive(Debug, Clone)]
pub struct CriContainer {
    pub record: Container,
    pub meta: ContainerMetadata,
}

/// A new random CRI id (64 hex digits, as containerd's).
pub fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The unique name of a pod.
pub fn sandbox_name(m: &cri::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// The unique name of a container of a pod.
pub fn container_name(c: &cri::ContainerMetadata, pod: &cri::PodSandboxMetadata) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        c.name, pod.name, pod.namespace, pod.uid, c.attempt
    )
}

fn encode<M: Message>(type_url: &str, m: &M) -> AnyRecord {
    prost_types::Any {
        type_url: type_url.to_string(),
        value: m.encode_to_vec(),
    }
    .into()
}

fn decode<M: Message + Default>(c: &Container, type_url: &str) -> Result<M> {
    let any = c.record.extensions.get(EXTENSION).ok_or_else(|| {
        Error::internal(format!(
            "CRI record {:?} has no {EXTENSION} extension",
            c.id
        ))
    })?;
    if any.type_url != type_url {
        return Err(Error::internal(format!(
            "CRI record {:?}: extension {EXTENSION} is a {:?}, not a {type_url:?}",
            c.id, any.type_url
        )));
    }
    let bytes = hex::decode(&any.value_hex)
        .map_err(|e| Error::internal(format!("CRI record {:?}: {e}", c.id)))?;
    M::decode(bytes.as_slice())
        .map_err(|e| Error::internal(format!("CRI record {:?}: decode {type_url}: {e}", c.id)))
}

fn kind_of(c: &Container) -> Option<&str> {
    c.record.labels.get(KIND_LABEL).map(String::as_str)
}

/// The CRI's view of the container records in `k8s.io`.
pub struct Store {
    containers: Arc<Containers>,
    /// name → id; `None` until loaded from the records.
    names: Mutex<Option<HashMap<String, String>>>,
    /// Serializes read-modify-write of the metadata (one daemon per root).
    update: Mutex<()>,
}

impl Store {
    pub fn new(containers: Arc<Containers>) -> Store {
        Store {
            containers,
            names: Mutex::new(None),
            update: Mutex::new(()),
        }
    }

    fn records(&self, kind: &str) -> Result<Vec<Container>> {
        self.containers
            .list(NAMESPACE, &[format!("labels.\"{KIND_LABEL}\"=={kind}")])
    }

    /// Reserves `name` for `id`; AlreadyExists when another id holds it.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<()> {
        let mut g = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            let mut m = HashMap::new();
            for s in self.sandboxes()? {
                m.insert(s.meta.name.clone(), s.meta.id.clone());
            }
            for c in self.cri_containers()? {
                m.insert(c.meta.name.clone(), c.meta.id.clone());
            }
            *g = Some(m);
        }
        let m = g.as_mut().expect("loaded above");
        match m.get(name) {
            Some(holder) if holder != id => Err(Error::already_exists(format!(
                "name {name:?} is reserved for {holder:?}"
            ))),
            _ => {
                m.insert(name.to_string(), id.to_string());
                Ok(())
            }
        }
    }

    /// Frees `name` (if `id` holds it).
    pub fn release_name(&self, name: &str, id: &str) {
        let mut g = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = g.as_mut()
            && m.get(name).is_some_and(|h| h == id)
        {
            m.remove(name);
        }
    }

    /// Creates the record of a pod; `record.id` must be `meta.id`.
    pub fn create_sandbox(&self, mut record: Container, meta: SandboxMetadata) -> Result<Sandbox> {
        record
            .record
            .labels
            .insert(KIND_LABEL.into(), KIND_SANDBOX.into());
        record
            .record
            .extensions
            .insert(EXTENSION.into(), encode(SANDBOX_TYPE_URL, &meta));
        let record = self.containers.create(NAMESPACE, record)?;
        Ok(Sandbox { record, meta })
    }

    /// Creates the record of a container; `record.id` must be `meta.id`.
    pub fn create_container(
        &self,
        mut record: Container,
        meta: ContainerMetadata,
    ) -> Result<CriContainer> {
        record
            .record
            .labels
            .insert(KIND_LABEL.into(), KIND_CONTAINER.into());
        record
            .record
            .extensions
            .insert(EXTENSION.into(), encode(CONTAINER_TYPE_URL, &meta));
        let record = self.containers.create(NAMESPACE, record)?;
        Ok(CriContainer { record, meta })
    }

    /// The record of `id`, or of the one record of `kind` whose id starts
    /// with it (ids may be abbreviated, as containerd's truncindex allows).
    fn find(&self, id: &str, kind: &str, what: &str) -> Result<Container> {
        if id.is_empty() {
            return Err(Error::invalid(format!("{what} id must not be empty")));
        }
        let not_found = || Error::not_found(format!("{what} {id:?} not found"));
        match self.containers.get(NAMESPACE, id) {
            Ok(c) if kind_of(&c) == Some(kind) => return Ok(c),
            Ok(_) => return Err(not_found()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let mut hits: Vec<Container> = self
            .records(kind)?
            .into_iter()
            .filter(|c| c.id.starts_with(id))
            .collect();
        match hits.len() {
            0 => Err(not_found()),
            1 => Ok(hits.remove(0)),
            n => Err(Error::invalid(format!(
                "{what} id prefix {id:?} is ambiguous ({n} match)"
            ))),
        }
    }

    /// One pod by id or unique id prefix; NotFound otherwise.
    pub fn sandbox(&self, id: &str) -> Result<Sandbox> {
        let record = self.find(id, KIND_SANDBOX, "sandbox")?;
        let meta = decode(&record, SANDBOX_TYPE_URL)?;
        Ok(Sandbox { record, meta })
    }

    /// One container by id or unique id prefix; NotFound otherwise.
    pub fn container(&self, id: &str) -> Result<CriContainer> {
        let record = self.find(id, KIND_CONTAINER, "container")?;
        let meta = decode(&record, CONTAINER_TYPE_URL)?;
        Ok(CriContainer { record, meta })
    }

    /// Every pod whose record can be read (others are logged and skipped).
    pub fn sandboxes(&self) -> Result<Vec<Sandbox>> {
        Ok(self
            .records(KIND_SANDBOX)?
            .into_iter()
            .filter_map(|record| match decode(&record, SANDBOX_TYPE_URL) {
                Ok(meta) => Some(Sandbox { record, meta }),
                Err(e) => {
                    tracing::warn!(id = %record.id, error = %e, "unreadable CRI sandbox record");
                    None
                }
            })
            .collect())
    }

    /// Every container whose record can be read.
    pub fn cri_containers(&self) -> Result<Vec<CriContainer>> {
        Ok(self
            .records(KIND_CONTAINER)?
            .into_iter()
            .filter_map(|record| match decode(&record, CONTAINER_TYPE_URL) {
                Ok(meta) => Some(CriContainer { record, meta }),
                Err(e) => {
                    tracing::warn!(id = %record.id, error = %e, "unreadable CRI container record");
                    None
                }
            })
            .collect())
    }

    /// The containers of pod `sandbox_id`.
    pub fn containers_of(&self, sandbox_id: &str) -> Result<Vec<CriContainer>> {
        Ok(self
            .cri_containers()?
            .into_iter()
            .filter(|c| c.meta.sandbox_id == sandbox_id)
            .collect())
    }

    /// Changes the metadata of pod `id` (full id) in one transaction.
    pub fn update_sandbox(
        &self,
        id: &str,
        f: impl FnOnce(&mut SandboxMetadata),
    ) -> Result<Sandbox> {
        let _g = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = self.sandbox(id)?;
        f(&mut s.meta);
        s.record
            .record
            .extensions
            .insert(EXTENSION.into(), encode(SANDBOX_TYPE_URL, &s.meta));
        let paths = [format!("extensions.{EXTENSION}")];
        s.record = self
            .containers
            .update(NAMESPACE, s.record.clone(), &paths)?;
        Ok(s)
    }

    /// Changes the metadata of container `id` (full id) in one transaction.
    pub fn update_container(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerMetadata),
    ) -> Result<CriContainer> {
        let _g = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = self.container(id)?;
        f(&mut c.meta);
        c.record
            .record
            .extensions
            .insert(EXTENSION.into(), encode(CONTAINER_TYPE_URL, &c.meta));
        let paths = [format!("extensions.{EXTENSION}")];
        c.record = self
            .containers
            .update(NAMESPACE, c.record.clone(), &paths)?;
        Ok(c)
    }

    /// Deletes the record `id` (full id) and frees `name`; a record already
    /// gone is not an error.
    pub fn delete(&self, id: &str, name: &str) -> Result<()> {
        match self.containers.delete(NAMESPACE, id) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.release_name(name, id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::ContainerRecord;
    use crate::events::Exchange;
    use crate::metadata::Db;
    use crate::metadata::trigger::GcTrigger;

    fn store(dir: &std::path::Path) -> Store {
        let db = Arc::new(Db::open(&dir.join("meta.redb")).unwrap());
        let (gc, _rx) = GcTrigger::new();
        Store::new(Arc::new(Containers::new(db, Arc::new(Exchange::new()), gc)))
    }

    fn record(id: &str) -> Container {
        Container {
            id: id.into(),
            record: ContainerRecord {
                runtime: "io.containerd.berth.v2".into(),
                spec: Some(AnyRecord::default()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn pods_and_containers_round_trip_and_are_found_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let st = store(dir.path());
        let pod = cri::PodSandboxMetadata {
            name: "p".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            attempt: 0,
        };
        let sid = new_id();
        assert_eq!(sid.len(), 64);
        let name = sandbox_name(&pod);
        assert_eq!(name, "p_default_u1_0");
        st.reserve_name(&name, &sid).unwrap();
        st.create_sandbox(
            record(&sid),
            SandboxMetadata {
                id: sid.clone(),
                name: name.clone(),
                ..Default::default()
            },
        )
        .unwrap();
        let cid = format!("ab{}", &new_id()[2..]);
        st.create_container(
            record(&cid),
            ContainerMetadata {
                id: cid.clone(),
                sandbox_id: sid.clone(),
                name: "c_p_default_u1_0".into(),
                ..Default::default()
            },
        )
        .unwrap();
        // A container is not a pod, and the other way round.
        assert!(st.sandbox(&cid).unwrap_err().is_not_found());
        assert!(st.container(&sid).unwrap_err().is_not_found());
        assert_eq!(st.sandbox(&sid[..5]).unwrap().meta.name, name);
        assert_eq!(st.container("ab").unwrap().meta.sandbox_id, sid);
        assert_eq!(st.sandboxes().unwrap().len(), 1);
        assert_eq!(st.containers_of(&sid).unwrap().len(), 1);
        let s = st
            .update_sandbox(&sid, |m| m.ip = "10.0.0.2".into())
            .unwrap();
        assert_eq!(s.meta.ip, "10.0.0.2");
        assert_eq!(st.sandbox(&sid).unwrap().meta.ip, "10.0.0.2");
        assert_eq!(
            st.sandbox(&sid).unwrap().record.record.labels[KIND_LABEL],
            KIND_SANDBOX
        );
        // Names: unique per id, loaded from the records by a new store.
        let st2 = store_reopen(&st);
        let e = st2.reserve_name(&name, "other").unwrap_err();
        assert!(e.is_already_exists(), "{e}");
        st2.reserve_name(&name, &sid).unwrap();
        st2.delete(&sid, &name).unwrap();
        st2.delete(&sid, &name).unwrap();
        st2.reserve_name(&name, "other").unwrap();
        assert!(st2.sandbox(&sid).unwrap_err().is_not_found());
    }

    fn store_reopen(st: &Store) -> Store {
        Store::new(st.containers.clone())
    }
}
