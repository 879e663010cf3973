//! The same gRPC probes against berthd and a private real containerd: every
//! edge (missing objects, re-creates, bad input, field masks, filters) must
//! answer the same code, and where a probe reports a result (what a List
//! returned, which labels were kept) the same result. The few deliberate
//! differences are listed in `docs/compat.md` and checked here to still be
//! what that document says.

use berth_proto::client::{request, with_lease};
use berth_proto::services::containers::v1 as containers;
use berth_proto::services::containers::v1::containers_client::ContainersClient;
use berth_proto::services::content::v1 as content;
use berth_proto::services::content::v1::content_client::ContentClient;
use berth_proto::services::diff::v1 as diff;
use berth_proto::services::diff::v1::diff_client::DiffClient;
use berth_proto::services::events::v1 as events;
use berth_proto::services::events::v1::events_client::EventsClient;
use berth_proto::services::images::v1 as images;
use berth_proto::services::images::v1::images_client::ImagesClient;
use berth_proto::services::introspection::v1 as introspection;
use berth_proto::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_proto::services::leases::v1 as leases;
use berth_proto::services::leases::v1::leases_client::LeasesClient;
use berth_proto::services::namespaces::v1 as ns;
use berth_proto::services::namespaces::v1::namespaces_client::NamespacesClient;
use berth_proto::services::snapshots::v1 as snapshots;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::services::tasks::v1 as tasks;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::services::version::v1::version_client::VersionClient;
use berth_proto::types::Descriptor;
use berth_tests::*;
use std::collections::{BTreeMap, HashMap};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// What one probe answered: a summary of the reply (empty when only the
/// code matters) or the status.
type Outcome = Result<String, Status>;

const NS: &str = "compat";
/// A lease every probe's objects belong to, so that neither daemon's garbage
/// collector removes them between probes (containerd's runs after deletes).
const KEEP: &str = "compat-keep";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A request in the probes' namespace, under the keep lease.
fn rq<T>(msg: T) -> tonic::Request<T> {
    with_lease(request(NS, msg), KEEP)
}

fn code(o: &Outcome) -> Code {
    match o {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

fn done<T>(r: Result<tonic::Response<T>, Status>) -> Outcome {
    r.map(|_| String::new())
}

fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Labels in a stable order, for comparing replies.
fn sorted(l: &HashMap<String, String>) -> String {
    format!("{:?}", l.iter().collect::<BTreeMap<_, _>>())
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

fn image(name: &str, digest: &str, size: i64) -> images::Image {
    images::Image {
        name: name.into(),
        target: Some(Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size,
            annotations: HashMap::new(),
        }),
        ..Default::default()
    }
}

fn container(id: &str, runtime: &str) -> containers::Container {
    containers::Container {
        id: id.into(),
        runtime: Some(containers::container::Runtime {
            name: runtime.into(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: b"{}".to_vec(),
        }),
        ..Default::default()
    }
}

/// Streams `msgs` to Content.Write; the digest of the last reply.
async fn write(ch: &Channel, msgs: Vec<content::WriteContentRequest>) -> Outcome {
    let mut s = ContentClient::new(ch.clone())
        .write(rq(tokio_stream::iter(msgs)))
        .await?
        .into_inner();
    let mut last = String::new();
    while let Some(m) = s.message().await? {
        last = m.digest;
    }
    Ok(last)
}

fn commit(r: &str, data: &[u8], total: i64, expected: &str) -> content::WriteContentRequest {
    content::WriteContentRequest {
        action: content::WriteAction::Commit as i32,
        r#ref: r.into(),
        total,
        expected: expected.into(),
        data: data.to_vec(),
        ..Default::default()
    }
}

/// Reads a blob; its bytes as text.
async fn read(ch: &Channel, digest: &str, offset: i64) -> Outcome {
    let mut s = ContentClient::new(ch.clone())
        .read(rq(content::ReadContentRequest {
            digest: digest.into(),
            offset,
            size: 0,
        }))
        .await?
        .into_inner();
    let mut data = Vec::new();
    while let Some(m) = s.message().await? {
        data.extend(m.data);
    }
    Ok(String::from_utf8_lossy(&data).into_owned())
}

async fn list_snapshots(ch: &Channel, filter: &str) -> Outcome {
    let mut s = SnapshotsClient::new(ch.clone())
        .list(rq(snapshots::ListSnapshotsRequest {
            snapshotter: "overlayfs".into(),
            filters: vec![filter.into()],
        }))
        .await?
        .into_inner();
    let mut names = Vec::new();
    while let Some(m) = s.message().await? {
        names.extend(m.info.into_iter().map(|i| i.name));
    }
    names.sort();
    Ok(names.join(","))
}

/// The probes, in order (later ones rely on objects earlier ones made).
async fn script(ch: Channel) -> Vec<(&'static str, Outcome)> {
    let mut out: Vec<(&'static str, Outcome)> = Vec::new();
    // ctr sends its namespace header on every call, Namespaces' too (and
    // containerd needs it to publish the namespace events).
    let nsc = NamespacesClient::with_interceptor(ch.clone(), |mut r: tonic::Request<()>| {
        r.metadata_mut().insert(
            berth_proto::NAMESPACE_HEADER,
            "default".parse().expect("ascii"),
        );
        Ok(r)
    });
    let imc = ImagesClient::new(ch.clone());
    let ctc = ContentClient::new(ch.clone());
    let lsc = LeasesClient::new(ch.clone());
    let cnc = ContainersClient::new(ch.clone());
    let snc = SnapshotsClient::new(ch.clone());
    let tkc = TasksClient::new(ch.clone());
    let evc = EventsClient::new(ch.clone());
    let inc = IntrospectionClient::new(ch.clone());
    macro_rules! probe {
        ($name:expr, $outcome:expr) => {{
            let o: Outcome = $outcome;
            out.push(($name, o));
        }};
    }

    // Namespaces (no namespace header needed).
    let ns_req = |name: &str, l: &[(&str, &str)]| ns::Namespace {
        name: name.into(),
        labels: labels(l),
    };
    probe!(
        "version",
        done(VersionClient::new(ch.clone()).version(()).await)
    );
    probe!(
        "namespaces.get no record",
        nsc.clone()
            .get(ns::GetNamespaceRequest {
                name: "compat-none".into(),
            })
            .await
            .map(|r| sorted(&r.into_inner().namespace.unwrap_or_default().labels))
    );
    probe!(
        "namespaces.create",
        done(
            nsc.clone()
                .create(ns::CreateNamespaceRequest {
                    namespace: Some(ns_req(NS, &[("a", "1"), ("empty", "")])),
                })
                .await
        )
    );
    probe!(
        "namespaces.create empty label value dropped",
        nsc.clone()
            .get(ns::GetNamespaceRequest { name: NS.into() })
            .await
            .map(|r| sorted(&r.into_inner().namespace.unwrap_or_default().labels))
    );
    probe!(
        "namespaces.create again",
        done(
            nsc.clone()
                .create(ns::CreateNamespaceRequest {
                    namespace: Some(ns_req(NS, &[])),
                })
                .await
        )
    );
    probe!(
        "namespaces.create bad name",
        done(
            nsc.clone()
                .create(ns::CreateNamespaceRequest {
                    namespace: Some(ns_req("bad/name", &[])),
                })
                .await
        )
    );
    let big = "v".repeat(4096);
    probe!(
        "namespaces.create label too big",
        done(
            nsc.clone()
                .create(ns::CreateNamespaceRequest {
                    namespace: Some(ns_req("compat-big", &[("k", &big)])),
                })
                .await
        )
    );
    probe!(
        "namespaces.update labels.b",
        done(
            nsc.clone()
                .update(ns::UpdateNamespaceRequest {
                    namespace: Some(ns_req(NS, &[("b", "2")])),
                    update_mask: mask(&["labels.b"]),
                })
                .await
        )
    );
    probe!(
        "namespaces.update unset labels.a",
        done(
            nsc.clone()
                .update(ns::UpdateNamespaceRequest {
                    namespace: Some(ns_req(NS, &[])),
                    update_mask: mask(&["labels.a"]),
                })
                .await
        )
    );
    probe!(
        "namespaces.update name",
        done(
            nsc.clone()
                .update(ns::UpdateNamespaceRequest {
                    namespace: Some(ns_req(NS, &[])),
                    update_mask: mask(&["name"]),
                })
                .await
        )
    );
    probe!(
        "namespaces.get after updates",
        nsc.clone()
            .get(ns::GetNamespaceRequest { name: NS.into() })
            .await
            .map(|r| sorted(&r.into_inner().namespace.unwrap_or_default().labels))
    );
    probe!(
        "namespaces.update no record",
        done(
            nsc.clone()
                .update(ns::UpdateNamespaceRequest {
                    namespace: Some(ns_req("compat-new", &[("x", "1")])),
                    update_mask: None,
                })
                .await
        )
    );
    probe!(
        "namespaces.update labels path",
        done(
            nsc.clone()
                .update(ns::UpdateNamespaceRequest {
                    namespace: Some(ns_req("compat-new", &[("y", "2")])),
                    update_mask: mask(&["labels"]),
                })
                .await
        )
    );
    probe!(
        "namespaces.get bad name",
        done(
            nsc.clone()
                .get(ns::GetNamespaceRequest {
                    name: "bad/name".into(),
                })
                .await
        )
    );
    probe!(
        "namespaces.list bad filter",
        done(
            nsc.clone()
                .list(ns::ListNamespacesRequest {
                    filter: "name==".into(),
                })
                .await
        )
    );
    probe!(
        "namespaces.list",
        nsc.clone()
            .list(ns::ListNamespacesRequest::default())
            .await
            .map(|r| {
                let mut n: Vec<String> = r
                    .into_inner()
                    .namespaces
                    .into_iter()
                    .map(|n| n.name)
                    .collect();
                n.sort();
                n.join(",")
            })
    );
    probe!(
        "namespaces.delete missing",
        done(
            nsc.clone()
                .delete(ns::DeleteNamespaceRequest {
                    name: "compat-missing".into(),
                })
                .await
        )
    );
    probe!(
        "namespaces.delete empty",
        done(
            nsc.clone()
                .delete(ns::DeleteNamespaceRequest {
                    name: "compat-new".into(),
                })
                .await
        )
    );
    probe!(
        "no namespace header",
        done(imc.clone().list(images::ListImagesRequest::default()).await)
    );
    lsc.clone()
        .create(request(
            NS,
            leases::CreateRequest {
                id: KEEP.into(),
                labels: HashMap::new(),
            },
        ))
        .await
        .expect("create the keep lease");

    // Content.
    let blob = b"compat blob";
    let dg = sha256(blob);
    let missing = sha256(b"nothing");
    probe!(
        "content.write commit",
        write(&ch, vec![commit("r1", blob, blob.len() as i64, &dg)]).await
    );
    let other = b"compat labelled";
    let mut labelled = commit("r7", other, other.len() as i64, &sha256(other));
    labelled.labels = labels(&[("a", "1"), ("empty", "")]);
    write(&ch, vec![labelled]).await.ok();
    probe!(
        "content.write empty label value dropped",
        ctc.clone()
            .info(rq(content::InfoRequest {
                digest: sha256(other),
            }))
            .await
            .map(|r| sorted(&r.into_inner().info.unwrap_or_default().labels))
    );
    probe!(
        "content.write existing expected",
        write(&ch, vec![commit("r2", blob, blob.len() as i64, &dg)]).await
    );
    probe!(
        "content.write wrong digest",
        write(&ch, vec![commit("r3", b"other", 5, &missing)]).await
    );
    probe!(
        "content.write wrong total",
        write(&ch, vec![commit("r4", b"other", 99, "")]).await
    );
    probe!(
        "content.write no ref",
        write(&ch, vec![commit("", b"x", 1, "")]).await
    );
    probe!(
        "content.write stat",
        write(
            &ch,
            vec![content::WriteContentRequest {
                action: content::WriteAction::Stat as i32,
                r#ref: "r5".into(),
                ..Default::default()
            }]
        )
        .await
    );
    probe!(
        "content.write bad offset",
        write(
            &ch,
            vec![content::WriteContentRequest {
                action: content::WriteAction::Write as i32,
                r#ref: "r5".into(),
                offset: 7,
                data: b"abc".to_vec(),
                ..Default::default()
            }]
        )
        .await
    );
    probe!(
        "content.write partial",
        write(
            &ch,
            vec![content::WriteContentRequest {
                action: content::WriteAction::Write as i32,
                r#ref: "r6".into(),
                data: b"abc".to_vec(),
                total: 10,
                ..Default::default()
            }]
        )
        .await
    );
    probe!(
        "content.status",
        ctc.clone()
            .status(rq(content::StatusRequest { r#ref: "r6".into() }))
            .await
            .map(|r| {
                let s = r.into_inner().status.unwrap_or_default();
                format!("{} {} {}", s.r#ref, s.offset, s.total)
            })
    );
    probe!(
        "content.status missing",
        done(
            ctc.clone()
                .status(rq(content::StatusRequest {
                    r#ref: "nope".into()
                }))
                .await
        )
    );
    probe!(
        "content.list_statuses ref filter",
        ctc.clone()
            .list_statuses(rq(content::ListStatusesRequest {
                filters: vec!["ref==r6".into()],
            },))
            .await
            .map(|r| {
                let mut v: Vec<String> = r
                    .into_inner()
                    .statuses
                    .into_iter()
                    .map(|s| s.r#ref)
                    .collect();
                v.sort();
                v.join(",")
            })
    );
    probe!(
        "content.abort",
        done(
            ctc.clone()
                .abort(rq(content::AbortRequest { r#ref: "r6".into() }))
                .await
        )
    );
    probe!(
        "content.abort again",
        done(
            ctc.clone()
                .abort(rq(content::AbortRequest { r#ref: "r6".into() }))
                .await
        )
    );
    probe!(
        "content.info bad digest",
        done(
            ctc.clone()
                .info(rq(content::InfoRequest {
                    digest: "sha256:nope".into(),
                },))
                .await
        )
    );
    probe!(
        "content.info sha512 digest",
        done(
            ctc.clone()
                .info(rq(content::InfoRequest {
                    digest: format!("sha512:{}", "ab".repeat(64)),
                }))
                .await
        )
    );
    probe!(
        "content.info missing",
        done(
            ctc.clone()
                .info(rq(content::InfoRequest {
                    digest: missing.clone(),
                },))
                .await
        )
    );
    probe!(
        "content.info other namespace",
        done(
            ctc.clone()
                .info(request(
                    "compat-other",
                    content::InfoRequest { digest: dg.clone() },
                ))
                .await
        )
    );
    probe!("content.read", read(&ch, &dg, 3).await);
    probe!("content.read past end", read(&ch, &dg, 99).await);
    probe!("content.read missing", read(&ch, &missing, 0).await);
    let upd = |paths: &[&str], l: &[(&str, &str)]| content::UpdateRequest {
        info: Some(content::Info {
            digest: dg.clone(),
            labels: labels(l),
            ..Default::default()
        }),
        update_mask: mask(paths),
    };
    probe!(
        "content.update labels.a",
        ctc.clone()
            .update(rq(upd(&["labels.a"], &[("a", "1"), ("b", "2")])))
            .await
            .map(|r| sorted(&r.into_inner().info.unwrap_or_default().labels))
    );
    probe!(
        "content.update size",
        done(ctc.clone().update(rq(upd(&["size"], &[]))).await)
    );
    probe!(
        "content.update missing",
        done(
            ctc.clone()
                .update(rq(content::UpdateRequest {
                    info: Some(content::Info {
                        digest: missing.clone(),
                        ..Default::default()
                    }),
                    update_mask: None,
                },))
                .await
        )
    );
    probe!(
        "content.list label filter",
        async {
            let mut s = ctc
                .clone()
                .list(rq(content::ListContentRequest {
                    filters: vec!["labels.a==1".into()],
                }))
                .await?
                .into_inner();
            let mut n = 0;
            while let Some(m) = s.message().await? {
                n += m.info.len();
            }
            Ok(n.to_string())
        }
        .await
    );
    probe!(
        "content.list bad filter",
        async {
            let mut s = ctc
                .clone()
                .list(rq(content::ListContentRequest {
                    filters: vec!["labels.a==\"".into()],
                }))
                .await?
                .into_inner();
            while s.message().await?.is_some() {}
            Ok(String::new())
        }
        .await
    );

    // Images.
    probe!(
        "images.get missing",
        done(
            imc.clone()
                .get(rq(images::GetImageRequest {
                    name: "nope".into(),
                },))
                .await
        )
    );
    let create = |i: images::Image| {
        rq(images::CreateImageRequest {
            image: Some(i),
            ..Default::default()
        })
    };
    probe!(
        "images.create no name",
        done(imc.clone().create(create(image("", &dg, 11))).await)
    );
    probe!(
        "images.create bad digest",
        done(
            imc.clone()
                .create(create(image("img", "sha256:x", 11)))
                .await
        )
    );
    probe!(
        "images.create zero size",
        done(imc.clone().create(create(image("img", &dg, 0))).await)
    );
    probe!(
        "images.create no target",
        done(
            imc.clone()
                .create(create(images::Image {
                    name: "img".into(),
                    ..Default::default()
                }))
                .await
        )
    );
    let mut labelled = image("img", &dg, 11);
    labelled.labels = labels(&[("a", "1"), ("empty", "")]);
    probe!(
        "images.create empty label value dropped",
        imc.clone()
            .create(create(labelled))
            .await
            .map(|r| sorted(&r.into_inner().image.unwrap_or_default().labels))
    );
    probe!(
        "images.create again",
        done(imc.clone().create(create(image("img", &dg, 11))).await)
    );
    probe!(
        "images.create second",
        done(imc.clone().create(create(image("img2", &dg, 11))).await)
    );
    let update = |i: images::Image, paths: Option<prost_types::FieldMask>| {
        rq(images::UpdateImageRequest {
            image: Some(i),
            update_mask: paths,
            ..Default::default()
        })
    };
    probe!(
        "images.update missing",
        done(
            imc.clone()
                .update(update(image("nope", &dg, 11), None))
                .await
        )
    );
    probe!(
        "images.update no name",
        done(imc.clone().update(update(image("", &dg, 11), None)).await)
    );
    probe!(
        "images.update name path",
        done(
            imc.clone()
                .update(update(image("img", &dg, 11), mask(&["name"])))
                .await
        )
    );
    let mut l = image("img", &dg, 11);
    l.labels = labels(&[("b", "2")]);
    probe!(
        "images.update labels.b",
        imc.clone()
            .update(update(l, mask(&["labels.b", "labels.a"])))
            .await
            .map(|r| sorted(&r.into_inner().image.unwrap_or_default().labels))
    );
    let mut a = image("img", &dg, 11);
    a.target.as_mut().unwrap().annotations = labels(&[("note", "x")]);
    probe!(
        "images.update annotations.note",
        imc.clone()
            .update(update(a, mask(&["annotations.note"])))
            .await
            .map(|r| {
                sorted(
                    &r.into_inner()
                        .image
                        .unwrap_or_default()
                        .target
                        .unwrap_or_default()
                        .annotations,
                )
            })
    );
    probe!(
        "images.update bad target",
        done(
            imc.clone()
                .update(update(image("img", &dg, 0), mask(&["target"])))
                .await
        )
    );
    let list = |filters: &[&str]| {
        let mut imc = imc.clone();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        async move {
            imc.list(rq(images::ListImagesRequest { filters }))
                .await
                .map(|r| {
                    r.into_inner()
                        .images
                        .into_iter()
                        .map(|i| i.name)
                        .collect::<Vec<_>>()
                        .join(",")
                })
        }
    };
    probe!("images.list", list(&[]).await);
    probe!("images.list empty filter", list(&[""]).await);
    probe!("images.list name", list(&["name==img2"]).await);
    probe!(
        "images.list any of",
        list(&["name==img2", "name==img"]).await
    );
    probe!("images.list label present", list(&["labels.b"]).await);
    probe!("images.list label absent !=", list(&["labels.b!=2"]).await);
    probe!(
        "images.list regexp on absent",
        list(&["labels.b~=^$"]).await
    );
    probe!(
        "images.list annotation",
        list(&["annotations.note==x"]).await
    );
    probe!(
        "images.list quoted label",
        list(&["labels.\"b\"==2,name~=^img"]).await
    );
    probe!("images.list bad filter", list(&["name=="]).await);
    probe!("images.list bad regexp", list(&["name~=(("]).await);
    probe!(
        "images.delete missing",
        done(
            imc.clone()
                .delete(rq(images::DeleteImageRequest {
                    name: "nope".into(),
                    ..Default::default()
                },))
                .await
        )
    );
    probe!(
        "namespaces.delete non-empty",
        done(
            nsc.clone()
                .delete(ns::DeleteNamespaceRequest { name: NS.into() })
                .await
        )
    );
    probe!(
        "images.delete sync",
        done(
            imc.clone()
                .delete(rq(images::DeleteImageRequest {
                    name: "img2".into(),
                    sync: true,
                    ..Default::default()
                },))
                .await
        )
    );

    // Leases.
    let lease = |id: &str, l: &[(&str, &str)]| {
        rq(leases::CreateRequest {
            id: id.into(),
            labels: labels(l),
        })
    };
    probe!(
        "leases.create",
        lsc.clone()
            .create(lease("l1", &[("a", "1")]))
            .await
            .map(|r| r.into_inner().lease.unwrap_or_default().id)
    );
    probe!(
        "leases.create empty label value dropped",
        lsc.clone()
            .create(rq(leases::CreateRequest {
                id: "l2".into(),
                labels: labels(&[("a", "2"), ("empty", "")]),
            }))
            .await
            .map(|r| sorted(&r.into_inner().lease.unwrap_or_default().labels))
    );
    probe!(
        "leases.create bad expire label",
        done(
            lsc.clone()
                .create(rq(leases::CreateRequest {
                    id: "l3".into(),
                    labels: labels(&[("containerd.io/gc.expire", "tomorrow")]),
                }))
                .await
        )
    );
    probe!(
        "leases.create again",
        done(lsc.clone().create(lease("l1", &[])).await)
    );
    probe!(
        "leases.create random id",
        lsc.clone().create(lease("", &[])).await.map(|r| (!r
            .into_inner()
            .lease
            .unwrap_or_default()
            .id
            .is_empty())
        .to_string())
    );
    let res = |id: &str, kind: &str, rid: &str| leases::AddResourceRequest {
        id: id.into(),
        resource: Some(leases::Resource {
            id: rid.into(),
            r#type: kind.into(),
        }),
    };
    probe!(
        "leases.add_resource missing lease",
        done(
            lsc.clone()
                .add_resource(rq(res("nope", "content", &dg)))
                .await
        )
    );
    probe!(
        "leases.add_resource missing lease and bad type",
        done(
            lsc.clone()
                .add_resource(rq(res("nope", "widgets", "x")))
                .await
        )
    );
    probe!(
        "leases.add_resource unknown type",
        done(
            lsc.clone()
                .add_resource(rq(res("l1", "widgets", "x")))
                .await
        )
    );
    probe!(
        "leases.add_resource bad digest",
        done(
            lsc.clone()
                .add_resource(rq(res("l1", "content", "nope")))
                .await
        )
    );
    probe!(
        "leases.add_resource snapshots without snapshotter",
        done(
            lsc.clone()
                .add_resource(rq(res("l1", "snapshots", "k")))
                .await
        )
    );
    for (name, kind, id) in [
        ("leases.add_resource snapshot", "snapshots/overlayfs", "k2"),
        ("leases.add_resource ingest", "ingests", "ref-z"),
        ("leases.add_resource content", "content", dg.as_str()),
        (
            "leases.add_resource snapshot 2",
            "snapshots/overlayfs",
            "k1",
        ),
    ] {
        probe!(
            name,
            done(lsc.clone().add_resource(rq(res("l1", kind, id))).await)
        );
    }
    probe!(
        "leases.add_resource image",
        done(
            lsc.clone()
                .add_resource(rq(res("l2", "images", "img")))
                .await
        )
    );
    probe!(
        "leases.list_resources",
        lsc.clone()
            .list_resources(rq(leases::ListResourcesRequest { id: "l1".into() }))
            .await
            .map(|r| {
                r.into_inner()
                    .resources
                    .into_iter()
                    .map(|r| format!("{}={}", r.r#type, r.id))
                    .collect::<Vec<_>>()
                    .join(",")
            })
    );
    probe!(
        "leases.list_resources missing",
        done(
            lsc.clone()
                .list_resources(rq(leases::ListResourcesRequest { id: "nope".into() }))
                .await
        )
    );
    probe!(
        "leases.delete_resource missing lease",
        done(
            lsc.clone()
                .delete_resource(rq(leases::DeleteResourceRequest {
                    id: "nope".into(),
                    resource: Some(leases::Resource {
                        id: dg.clone(),
                        r#type: "content".into(),
                    }),
                },))
                .await
        )
    );
    probe!(
        "leases.delete_resource not held",
        done(
            lsc.clone()
                .delete_resource(rq(leases::DeleteResourceRequest {
                    id: "l1".into(),
                    resource: Some(leases::Resource {
                        id: missing.clone(),
                        r#type: "content".into(),
                    }),
                },))
                .await
        )
    );
    probe!(
        "leases.list filter",
        lsc.clone()
            .list(rq(leases::ListRequest {
                filters: vec!["labels.a==1".into()],
            },))
            .await
            .map(|r| {
                r.into_inner()
                    .leases
                    .into_iter()
                    .map(|l| l.id)
                    .collect::<Vec<_>>()
                    .join(",")
            })
    );
    probe!(
        "leases.delete missing",
        done(
            lsc.clone()
                .delete(rq(leases::DeleteRequest {
                    id: "nope".into(),
                    sync: false,
                },))
                .await
        )
    );
    probe!(
        "leases.delete sync",
        done(
            lsc.clone()
                .delete(rq(leases::DeleteRequest {
                    id: "l1".into(),
                    sync: true,
                },))
                .await
        )
    );

    // Containers.
    let create =
        |c: containers::Container| rq(containers::CreateContainerRequest { container: Some(c) });
    probe!(
        "containers.get missing",
        done(
            cnc.clone()
                .get(rq(containers::GetContainerRequest { id: "nope".into() }))
                .await
        )
    );
    probe!(
        "containers.create bad id",
        done(
            cnc.clone()
                .create(create(container("bad/id", "io.containerd.runc.v2")))
                .await
        )
    );
    probe!(
        "containers.create no runtime",
        done(cnc.clone().create(create(container("c1", ""))).await)
    );
    let mut nospec = container("c1", "io.containerd.runc.v2");
    nospec.spec = None;
    probe!(
        "containers.create no spec",
        done(cnc.clone().create(create(nospec)).await)
    );
    let mut keyonly = container("c1", "io.containerd.runc.v2");
    keyonly.snapshot_key = "k".into();
    probe!(
        "containers.create key without snapshotter",
        done(cnc.clone().create(create(keyonly)).await)
    );
    let mut c1 = container("c1", "io.containerd.runc.v2");
    c1.labels = labels(&[("a", "1"), ("empty", "")]);
    c1.snapshotter = "overlayfs".into();
    probe!(
        "containers.create",
        cnc.clone()
            .create(create(c1))
            .await
            .map(|r| sorted(&r.into_inner().container.unwrap_or_default().labels))
    );
    probe!(
        "containers.create again",
        done(
            cnc.clone()
                .create(create(container("c1", "io.containerd.runc.v2")))
                .await
        )
    );
    let update = |c: containers::Container, paths: Option<prost_types::FieldMask>| {
        rq(containers::UpdateContainerRequest {
            container: Some(c),
            update_mask: paths,
        })
    };
    probe!(
        "containers.update missing",
        done(
            cnc.clone()
                .update(update(container("nope", "io.containerd.runc.v2"), None))
                .await
        )
    );
    probe!(
        "containers.update no id",
        done(
            cnc.clone()
                .update(update(container("", "io.containerd.runc.v2"), None))
                .await
        )
    );
    let mut same = container("c1", "io.containerd.runc.v2");
    same.snapshotter = "overlayfs".into();
    probe!(
        "containers.update full replace",
        cnc.clone()
            .update(update(same, None))
            .await
            .map(|r| sorted(&r.into_inner().container.unwrap_or_default().labels))
    );
    probe!(
        "containers.update runtime changed no mask",
        done(
            cnc.clone()
                .update(update(container("c1", "io.containerd.other.v1"), None))
                .await
        )
    );
    let mut moved = container("c1", "io.containerd.runc.v2");
    moved.snapshotter = "native".into();
    probe!(
        "containers.update snapshotter changed no mask",
        done(cnc.clone().update(update(moved, None)).await)
    );
    for (name, path) in [
        ("containers.update runtime path", "runtime"),
        ("containers.update snapshotter path", "snapshotter"),
        ("containers.update id path", "id"),
    ] {
        probe!(
            name,
            done(
                cnc.clone()
                    .update(update(
                        container("c1", "io.containerd.other.v1"),
                        mask(&[path]),
                    ))
                    .await
            )
        );
    }
    let mut img = container("c1", "io.containerd.runc.v2");
    img.image = "docker.io/library/busybox:latest".into();
    img.labels = labels(&[("z", "9")]);
    probe!(
        "containers.update image and labels.z",
        cnc.clone()
            .update(update(img, mask(&["image", "labels.z"])))
            .await
            .map(|r| {
                let c = r.into_inner().container.unwrap_or_default();
                format!("{} {}", c.image, sorted(&c.labels))
            })
    );
    let clist = |filters: &[&str]| {
        let mut cnc = cnc.clone();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        async move {
            cnc.list(rq(containers::ListContainersRequest { filters }))
                .await
                .map(|r| {
                    r.into_inner()
                        .containers
                        .into_iter()
                        .map(|c| c.id)
                        .collect::<Vec<_>>()
                        .join(",")
                })
        }
    };
    probe!(
        "containers.list runtime",
        clist(&["runtime.name==io.containerd.runc.v2"]).await
    );
    probe!("containers.list image", clist(&["image~=busybox"]).await);
    probe!("containers.list bad", clist(&["id=="]).await);

    // Tasks on objects that are not there (the edges that need no shim).
    let cid = |id: &str| id.to_string();
    probe!(
        "tasks.get no container",
        done(
            tkc.clone()
                .get(rq(tasks::GetRequest {
                    container_id: cid("nope"),
                    ..Default::default()
                },))
                .await
        )
    );
    probe!(
        "tasks.get no task",
        done(
            tkc.clone()
                .get(rq(tasks::GetRequest {
                    container_id: cid("c1"),
                    ..Default::default()
                },))
                .await
        )
    );
    probe!(
        "tasks.delete no task",
        done(
            tkc.clone()
                .delete(rq(tasks::DeleteTaskRequest {
                    container_id: cid("c1"),
                },))
                .await
        )
    );
    probe!(
        "tasks.kill no task",
        done(
            tkc.clone()
                .kill(rq(tasks::KillRequest {
                    container_id: cid("c1"),
                    signal: 15,
                    ..Default::default()
                },))
                .await
        )
    );
    probe!(
        "tasks.create no container",
        done(
            tkc.clone()
                .create(rq(tasks::CreateTaskRequest {
                    container_id: cid("nope"),
                    ..Default::default()
                },))
                .await
        )
    );
    probe!(
        "tasks.list",
        tkc.clone()
            .list(rq(tasks::ListTasksRequest::default()))
            .await
            .map(|r| r.into_inner().tasks.len().to_string())
    );

    probe!(
        "containers.delete",
        done(
            cnc.clone()
                .delete(rq(containers::DeleteContainerRequest { id: "c1".into() }))
                .await
        )
    );
    probe!(
        "containers.delete again",
        done(
            cnc.clone()
                .delete(rq(containers::DeleteContainerRequest { id: "c1".into() }))
                .await
        )
    );

    // Snapshots.
    let prep = |key: &str, parent: &str| {
        rq(snapshots::PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: key.into(),
            parent: parent.into(),
            labels: labels(&[("a", "1")]),
        })
    };
    probe!(
        "snapshots.prepare",
        done(snc.clone().prepare(prep("k1", "")).await)
    );
    probe!(
        "snapshots.prepare again",
        done(snc.clone().prepare(prep("k1", "")).await)
    );
    probe!(
        "snapshots.prepare empty label value dropped",
        async {
            let mut r = prep("k4", "");
            r.get_mut().labels.insert("empty".into(), String::new());
            snc.clone().prepare(r).await?;
            snc.clone()
                .stat(rq(snapshots::StatSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: "k4".into(),
                }))
                .await
                .map(|r| sorted(&r.into_inner().info.unwrap_or_default().labels))
        }
        .await
    );
    probe!(
        "snapshots.prepare no snapshotter",
        async {
            snc.clone()
                .prepare(rq(snapshots::PrepareSnapshotRequest {
                    snapshotter: String::new(),
                    key: "k5".into(),
                    ..Default::default()
                }))
                .await?;
            // Out of the way of the List probes below.
            snc.clone()
                .remove(rq(snapshots::RemoveSnapshotRequest {
                    snapshotter: String::new(),
                    key: "k5".into(),
                }))
                .await?;
            Ok(String::new())
        }
        .await
    );
    probe!(
        "snapshots.prepare missing parent",
        done(snc.clone().prepare(prep("k2", "nope")).await)
    );
    probe!(
        "snapshots.prepare unknown snapshotter",
        done(
            snc.clone()
                .prepare(rq(snapshots::PrepareSnapshotRequest {
                    snapshotter: "nope".into(),
                    key: "k9".into(),
                    ..Default::default()
                },))
                .await
        )
    );
    let commit = |name: &str, key: &str| {
        rq(snapshots::CommitSnapshotRequest {
            snapshotter: "overlayfs".into(),
            name: name.into(),
            key: key.into(),
            ..Default::default()
        })
    };
    probe!(
        "snapshots.commit missing",
        done(snc.clone().commit(commit("c9", "nope")).await)
    );
    probe!(
        "snapshots.commit",
        done(snc.clone().commit(commit("base", "k1")).await)
    );
    probe!(
        "snapshots.prepare parent committed away",
        done(snc.clone().prepare(prep("k3", "k1")).await)
    );
    probe!(
        "snapshots.prepare child",
        done(snc.clone().prepare(prep("k3", "base")).await)
    );
    probe!(
        "snapshots.prepare active parent",
        done(snc.clone().prepare(prep("k6", "k3")).await)
    );
    probe!(
        "snapshots.view",
        done(
            snc.clone()
                .view(rq(snapshots::ViewSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: "v1".into(),
                    parent: "base".into(),
                    labels: HashMap::new(),
                }))
                .await
        )
    );
    probe!(
        "snapshots.commit view",
        done(snc.clone().commit(commit("cv", "v1")).await)
    );
    probe!(
        "snapshots.commit keeps only its own labels",
        snc.clone()
            .stat(rq(snapshots::StatSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: "base".into(),
            }))
            .await
            .map(|r| sorted(&r.into_inner().info.unwrap_or_default().labels))
    );
    probe!(
        "snapshots.commit to existing name",
        done(snc.clone().commit(commit("base", "k3")).await)
    );
    probe!(
        "snapshots.prepare key of committed",
        done(snc.clone().prepare(prep("base", "")).await)
    );
    let key = |k: &str| (String::from("overlayfs"), k.to_string());
    probe!(
        "snapshots.stat",
        snc.clone()
            .stat(rq(snapshots::StatSnapshotRequest {
                snapshotter: key("k3").0,
                key: key("k3").1,
            },))
            .await
            .map(|r| {
                let i = r.into_inner().info.unwrap_or_default();
                format!("{} {} {} {}", i.name, i.parent, i.kind, sorted(&i.labels))
            })
    );
    probe!(
        "snapshots.stat missing",
        done(
            snc.clone()
                .stat(rq(snapshots::StatSnapshotRequest {
                    snapshotter: key("nope").0,
                    key: key("nope").1,
                },))
                .await
        )
    );
    probe!(
        "snapshots.mounts missing",
        done(
            snc.clone()
                .mounts(rq(snapshots::MountsRequest {
                    snapshotter: key("nope").0,
                    key: key("nope").1,
                },))
                .await
        )
    );
    probe!(
        "snapshots.mounts committed",
        done(
            snc.clone()
                .mounts(rq(snapshots::MountsRequest {
                    snapshotter: key("base").0,
                    key: key("base").1,
                }))
                .await
        )
    );
    probe!(
        "snapshots.usage missing",
        done(
            snc.clone()
                .usage(rq(snapshots::UsageRequest {
                    snapshotter: key("nope").0,
                    key: key("nope").1,
                },))
                .await
        )
    );
    probe!(
        "snapshots.usage committed",
        done(
            snc.clone()
                .usage(rq(snapshots::UsageRequest {
                    snapshotter: key("base").0,
                    key: key("base").1,
                },))
                .await
        )
    );
    let supd = |name: &str, l: &[(&str, &str)], paths: Option<prost_types::FieldMask>| {
        rq(snapshots::UpdateSnapshotRequest {
            snapshotter: "overlayfs".into(),
            info: Some(snapshots::Info {
                name: name.into(),
                labels: labels(l),
                ..Default::default()
            }),
            update_mask: paths,
        })
    };
    probe!(
        "snapshots.update labels.b",
        snc.clone()
            .update(supd("k3", &[("b", "2")], mask(&["labels.b"])))
            .await
            .map(|r| sorted(&r.into_inner().info.unwrap_or_default().labels))
    );
    probe!(
        "snapshots.update parent path",
        done(snc.clone().update(supd("k3", &[], mask(&["parent"]))).await)
    );
    probe!(
        "snapshots.update no mask",
        snc.clone()
            .update(supd("k3", &[("c", "3")], None))
            .await
            .map(|r| sorted(&r.into_inner().info.unwrap_or_default().labels))
    );
    probe!(
        "snapshots.update missing",
        done(snc.clone().update(supd("nope", &[], None)).await)
    );
    probe!("snapshots.list", list_snapshots(&ch, "").await);
    probe!(
        "snapshots.list kind",
        list_snapshots(&ch, "kind==committed").await
    );
    probe!(
        "snapshots.list parent",
        list_snapshots(&ch, "parent==base").await
    );
    probe!(
        "snapshots.remove parent with child",
        done(
            snc.clone()
                .remove(rq(snapshots::RemoveSnapshotRequest {
                    snapshotter: key("base").0,
                    key: key("base").1,
                },))
                .await
        )
    );
    probe!(
        "snapshots.remove missing",
        done(
            snc.clone()
                .remove(rq(snapshots::RemoveSnapshotRequest {
                    snapshotter: key("nope").0,
                    key: key("nope").1,
                },))
                .await
        )
    );
    probe!(
        "snapshots.cleanup",
        done(
            snc.clone()
                .cleanup(rq(snapshots::CleanupRequest {
                    snapshotter: "overlayfs".into(),
                },))
                .await
        )
    );

    // Diff.
    let mounts = snc
        .clone()
        .mounts(rq(snapshots::MountsRequest {
            snapshotter: key("k3").0,
            key: key("k3").1,
        }))
        .await
        .map(|r| r.into_inner().mounts)
        .unwrap_or_default();
    let apply = |digest: &str, media: &str, size: i64| {
        rq(diff::ApplyRequest {
            diff: Some(Descriptor {
                media_type: media.into(),
                digest: digest.into(),
                size,
                annotations: HashMap::new(),
            }),
            mounts: mounts.clone(),
            ..Default::default()
        })
    };
    probe!(
        "diff.apply missing content",
        done(
            DiffClient::new(ch.clone())
                .apply(apply(&missing, OCI_LAYER, 10))
                .await
        )
    );
    probe!(
        "diff.apply unknown media type",
        done(
            DiffClient::new(ch.clone())
                .apply(apply(&dg, "application/x-unknown", 11))
                .await
        )
    );

    // Events and introspection.
    let ev = |topic: &str| events::PublishRequest {
        topic: topic.into(),
        event: Some(prost_types::Any {
            type_url: "containerd.events.ContainerDelete".into(),
            value: vec![],
        }),
    };
    probe!(
        "events.publish",
        done(evc.clone().publish(rq(ev("/compat/x"))).await)
    );
    probe!(
        "events.publish bad topic",
        done(evc.clone().publish(rq(ev("compat"))).await)
    );
    probe!(
        "events.publish empty topic",
        done(evc.clone().publish(rq(ev(""))).await)
    );
    // A forwarded envelope must carry its publisher's time.
    let envelope = |ts: Option<prost_types::Timestamp>| events::ForwardRequest {
        envelope: Some(berth_proto::types::Envelope {
            timestamp: ts,
            namespace: NS.into(),
            topic: "/compat/forward".into(),
            event: ev("/compat/forward").event,
        }),
    };
    probe!(
        "events.forward no timestamp",
        done(evc.clone().forward(rq(envelope(None))).await)
    );
    probe!(
        "events.forward",
        done(
            evc.clone()
                .forward(rq(envelope(Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0
                }))))
                .await
        )
    );
    // Subscribers filter on the decoded event's fields. containerd sends a
    // subscription's headers with its first event, so events are published
    // while the subscription is being made, the unwanted one first.
    let publisher = tokio::spawn({
        let evc = evc.clone();
        async move {
            for _ in 0..50 {
                for id in ["compat-other", "compat-wanted"] {
                    let e = berth_proto::typeurl::pack(
                        &berth_proto::pb::containerd::events::ContainerDelete { id: id.into() },
                    );
                    let _ = evc
                        .clone()
                        .publish(rq(events::PublishRequest {
                            topic: "/compat/filtered".into(),
                            event: Some(e),
                        }))
                        .await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    });
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut sub = evc
            .clone()
            .subscribe(events::SubscribeRequest {
                filters: vec![format!("namespace=={NS},event.id~=^compat-wanted$")],
            })
            .await?
            .into_inner();
        sub.message().await
    })
    .await;
    publisher.abort();
    probe!(
        "events.subscribe event field filter",
        match first {
            Ok(Ok(Some(env))) => Ok(env
                .event
                .and_then(|a| {
                    berth_proto::typeurl::unpack::<
                        berth_proto::pb::containerd::events::ContainerDelete,
                    >(&a)
                })
                .map(|c| c.id)
                .unwrap_or_default()),
            Ok(Ok(None)) => Err(Status::unknown("stream ended")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Status::deadline_exceeded("no event within 5 s")),
        }
    );
    probe!(
        "introspection.plugins filter",
        inc.clone()
            .plugins(introspection::PluginsRequest {
                filters: vec!["type==io.containerd.snapshotter.v1,id==overlayfs".into()],
            })
            .await
            .map(|r| {
                r.into_inner()
                    .plugins
                    .into_iter()
                    .map(|p| p.id)
                    .collect::<Vec<_>>()
                    .join(",")
            })
    );
    probe!(
        "introspection.plugins bad filter",
        done(
            inc.clone()
                .plugins(introspection::PluginsRequest {
                    filters: vec!["type==".into()],
                })
                .await
        )
    );
    probe!("introspection.server", done(inc.clone().server(()).await));
    out
}

/// Probes where berth answers differently on purpose (each a row of
/// `docs/compat.md`): (probe, berth's code, containerd's code).
const DELIBERATE: &[(&str, Code, Code)] = &[
    // berth validates the name (containerd reads any bucket name).
    ("namespaces.get bad name", Code::InvalidArgument, Code::Ok),
    // berth applies the filter (containerd 1.6 ignores it).
    (
        "namespaces.list bad filter",
        Code::InvalidArgument,
        Code::Ok,
    ),
    // berth accepts the whole-map path `labels` as for every other object.
    (
        "namespaces.update labels path",
        Code::Ok,
        Code::InvalidArgument,
    ),
    // berth's content store holds sha256 digests only.
    (
        "content.info sha512 digest",
        Code::InvalidArgument,
        Code::NotFound,
    ),
    // berth's collector must be able to read the expiry it is given.
    (
        "leases.create bad expire label",
        Code::InvalidArgument,
        Code::Ok,
    ),
    // Images as lease resources (containerd 2 has them too).
    ("leases.add_resource image", Code::Ok, Code::Unimplemented),
    // containerd compiles a filter's regexp only when matching and then
    // matches nothing; berth says what is wrong with it.
    ("images.list bad regexp", Code::InvalidArgument, Code::Ok),
    // An empty snapshotter name means the default snapshotter.
    (
        "snapshots.prepare no snapshotter",
        Code::Ok,
        Code::InvalidArgument,
    ),
    // berth's snapshotters clean up (containerd's gRPC service does not offer it).
    ("snapshots.cleanup", Code::Ok, Code::Unimplemented),
    // A media type no applier knows: containerd's error carries no code.
    (
        "diff.apply unknown media type",
        Code::Unimplemented,
        Code::Unknown,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_containerd() {
    let Some(containerd) = peer("containerd") else {
        return;
    };
    if !require_root("containerd") {
        return;
    }
    let c = berth_tests::containerd::Containerd::start(&containerd, "", None);
    let d = Daemon::start();
    let theirs = script(
        berth_proto::client::connect(&c.sock.display().to_string())
            .await
            .expect("connect to containerd"),
    )
    .await;
    let ours = script(d.channel().await).await;
    let mut report = String::new();
    assert_eq!(ours.len(), theirs.len());
    for ((name, o), (_, t)) in ours.iter().zip(&theirs) {
        if let Some((_, b, c)) = DELIBERATE.iter().find(|(n, _, _)| n == name) {
            let line = format!(
                "{name}: berth {:?}, containerd {:?} (deliberate: {b:?} vs {c:?})\n",
                code(o),
                code(t)
            );
            if (code(o), code(t)) != (*b, *c) {
                report.push_str("DIFF ");
            }
            report.push_str(&line);
            continue;
        }
        let same_code = code(o) == code(t);
        let same_reply = match (o, t) {
            (Ok(a), Ok(b)) => a == b,
            _ => true,
        };
        let line = format!(
            "{name}: berth {:?} {:?} | containerd {:?} {:?}\n",
            code(o),
            o.as_ref()
                .map_or_else(|e| e.message().to_string(), Clone::clone),
            code(t),
            t.as_ref()
                .map_or_else(|e| e.message().to_string(), Clone::clone),
        );
        if !(same_code && same_reply) {
            report.push_str("DIFF ");
        }
        report.push_str(&line);
    }
    eprintln!("{report}");
    assert!(
        !report.contains("DIFF "),
        "berth and containerd differ:\n{report}"
    );
}
