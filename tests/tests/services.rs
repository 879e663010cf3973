//! Namespaces, images, leases, events, introspection and garbage collection
//! over gRPC, as containerd defines them.

use berth_proto::client::{request, with_lease};
use berth_proto::services::content::v1 as content;
use berth_proto::services::content::v1::content_client::ContentClient;
use berth_proto::services::events::v1 as events;
use berth_proto::services::events::v1::events_client::EventsClient;
use berth_proto::services::images::v1 as images;
use berth_proto::services::images::v1::images_client::ImagesClient;
use berth_proto::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_proto::services::leases::v1 as leases;
use berth_proto::services::leases::v1::leases_client::LeasesClient;
use berth_proto::services::namespaces::v1 as ns;
use berth_proto::services::namespaces::v1::namespaces_client::NamespacesClient;
use berth_proto::types::Descriptor;
use berth_tests::*;
use std::collections::HashMap;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

async fn put(
    ch: &Channel,
    ns: &str,
    lease: Option<&str>,
    data: &[u8],
    labels: &[(&str, &str)],
) -> String {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let dg = sha256(data);
    tx.send(content::WriteContentRequest {
        action: content::WriteAction::Commit as i32,
        r#ref: format!("ref-{dg}"),
        total: data.len() as i64,
        expected: dg.clone(),
        data: data.to_vec(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    drop(tx);
    let mut req = request(ns, tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(l) = lease {
        req = with_lease(req, l);
    }
    let mut s = ContentClient::new(ch.clone())
        .write(req)
        .await
        .unwrap()
        .into_inner();
    let r = s.next().await.unwrap().unwrap();
    assert_eq!(r.digest, dg);
    dg
}

async fn exists(ch: &Channel, ns: &str, d: &str) -> bool {
    match ContentClient::new(ch.clone())
        .info(request(ns, content::InfoRequest { digest: d.into() }))
        .await
    {
        Ok(_) => true,
        Err(e) if e.code() == Code::NotFound => false,
        Err(e) => panic!("{e:?}"),
    }
}

fn image(name: &str, target: &str, size: i64) -> images::Image {
    images::Image {
        name: name.into(),
        target: Some(Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: target.into(),
            size,
            annotations: HashMap::new(),
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_crud_and_events() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let mut evs = EventsClient::new(ch.clone())
        .subscribe(events::SubscribeRequest {
            filters: vec!["topic~=/namespaces/".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut cl = NamespacesClient::new(ch.clone());
    let create = |name: &str| ns::CreateNamespaceRequest {
        namespace: Some(ns::Namespace {
            name: name.into(),
            labels: HashMap::from([("a".into(), "1".into())]),
        }),
    };
    cl.create(create("alpha")).await.unwrap();
    assert_eq!(
        cl.create(create("alpha")).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    assert_eq!(
        cl.create(create("bad/name")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let got = cl
        .get(ns::GetNamespaceRequest {
            name: "alpha".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.namespace.unwrap().labels["a"], "1");
    // containerd answers Get for a namespace nothing was made in yet with
    // empty labels (dockerd relies on it at start), and Update creates it.
    let nope = cl
        .get(ns::GetNamespaceRequest {
            name: "nope".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .namespace
        .unwrap();
    assert_eq!((nope.name.as_str(), nope.labels.len()), ("nope", 0));
    let listed = |cl: NamespacesClient<_>| async move {
        let mut cl = cl;
        cl.list(ns::ListNamespacesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .namespaces
            .into_iter()
            .map(|n| n.name)
            .collect::<Vec<_>>()
    };
    assert!(!listed(cl.clone()).await.contains(&"nope".to_string()));
    cl.update(ns::UpdateNamespaceRequest {
        namespace: Some(ns::Namespace {
            name: "fresh".into(),
            labels: HashMap::from([("c".into(), "3".into())]),
        }),
        update_mask: None,
    })
    .await
    .unwrap();
    assert!(listed(cl.clone()).await.contains(&"fresh".to_string()));
    cl.delete(ns::DeleteNamespaceRequest {
        name: "fresh".into(),
    })
    .await
    .unwrap();

    let upd = cl
        .update(ns::UpdateNamespaceRequest {
            namespace: Some(ns::Namespace {
                name: "alpha".into(),
                labels: HashMap::from([("b".into(), "2".into())]),
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels.b".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upd.namespace.unwrap().labels.len(), 2);
    let err = cl
        .update(ns::UpdateNamespaceRequest {
            namespace: Some(ns::Namespace {
                name: "alpha".into(),
                labels: HashMap::new(),
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Non-empty namespaces cannot go.
    put(
        &ch,
        "alpha",
        None,
        b"keep me",
        &[("containerd.io/gc.root", "1")],
    )
    .await;
    let err = cl
        .delete(ns::DeleteNamespaceRequest {
            name: "alpha".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("blobs"), "{}", err.message());
    ContentClient::new(ch.clone())
        .delete(request(
            "alpha",
            content::DeleteContentRequest {
                digest: sha256(b"keep me"),
            },
        ))
        .await
        .unwrap();
    cl.delete(ns::DeleteNamespaceRequest {
        name: "alpha".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        cl.delete(ns::DeleteNamespaceRequest {
            name: "alpha".into()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );

    let mut topics = Vec::new();
    while topics.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(5), evs.next())
            .await
            .expect("event")
            .unwrap()
            .unwrap();
        if e.namespace == "fresh" {
            continue; // made by Update above
        }
        assert_eq!(e.namespace, "alpha");
        topics.push(e.topic);
    }
    assert_eq!(
        topics,
        [
            "/namespaces/create",
            "/namespaces/update",
            "/namespaces/delete"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_and_gc_references() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let mut cl = ImagesClient::new(ch.clone());
    // Until the image refers to them the blobs are held by a lease, as a
    // pull holds them: the collection berthd runs at start could otherwise
    // take them in between (a race a loaded machine lost).
    let held = Some("pull");
    LeasesClient::new(ch.clone())
        .create(request(
            "default",
            leases::CreateRequest {
                id: "pull".into(),
                labels: HashMap::new(),
            },
        ))
        .await
        .unwrap();
    // A manifest that references a config and a layer through gc labels.
    let layer = put(&ch, "default", held, b"layer bytes", &[]).await;
    let config = put(&ch, "default", held, b"config bytes", &[]).await;
    let manifest = put(
        &ch,
        "default",
        held,
        b"manifest bytes",
        &[
            ("containerd.io/gc.ref.content.l.0", &layer),
            ("containerd.io/gc.ref.content.config", &config),
        ],
    )
    .await;
    let orphan = put(&ch, "default", None, b"orphan", &[]).await;
    cl.create(request(
        "default",
        images::CreateImageRequest {
            image: Some(image("docker.io/x/y:1", &manifest, 14)),
            source_date_epoch: None,
        },
    ))
    .await
    .unwrap();
    LeasesClient::new(ch.clone())
        .delete(request(
            "default",
            leases::DeleteRequest {
                id: "pull".into(),
                sync: false,
            },
        ))
        .await
        .unwrap();
    let err = cl
        .create(request(
            "default",
            images::CreateImageRequest {
                image: Some(image("docker.io/x/y:1", &manifest, 14)),
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = cl
        .create(request(
            "default",
            images::CreateImageRequest {
                image: Some(image("bad", "sha256:zz", 14)),
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = cl
        .create(request(
            "default",
            images::CreateImageRequest {
                image: Some(image("nosize", &manifest, 0)),
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Deleting something triggers collection: the orphan goes, the image's tree stays.
    cl.create(request(
        "default",
        images::CreateImageRequest {
            image: Some(image("tmp", &orphan, 6)),
            source_date_epoch: None,
        },
    ))
    .await
    .unwrap();
    cl.delete(request(
        "default",
        images::DeleteImageRequest {
            name: "tmp".into(),
            sync: true,
            target: None,
        },
    ))
    .await
    .unwrap();
    assert!(!exists(&ch, "default", &orphan).await, "orphan collected");
    for dg in [&layer, &config, &manifest] {
        assert!(exists(&ch, "default", dg).await, "{dg} kept by the image");
    }
    assert!(!blobs_on_disk(&d.root()).contains(&orphan));

    // Update with field masks, list with filters.
    let upd = cl
        .update(request(
            "default",
            images::UpdateImageRequest {
                image: Some(images::Image {
                    name: "docker.io/x/y:1".into(),
                    labels: HashMap::from([("env".into(), "prod".into())]),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["labels.env".into()],
                }),
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(
        upd.target.unwrap().digest,
        manifest,
        "target untouched by a label update"
    );
    let list = |f: &str| {
        let mut cl = cl.clone();
        let f = f.to_string();
        async move {
            cl.list(request(
                "default",
                images::ListImagesRequest { filters: vec![f] },
            ))
            .await
            .map(|r| r.into_inner().images.len())
        }
    };
    assert_eq!(list("labels.env==prod").await.unwrap(), 1);
    assert_eq!(list("name~=^docker.io/x/").await.unwrap(), 1);
    assert_eq!(
        list(&format!("target.digest=={manifest}")).await.unwrap(),
        1
    );
    assert_eq!(list("name==other").await.unwrap(), 0);
    assert_eq!(
        list("name==").await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Delete with a stale target check fails; the image stays.
    let err = cl
        .delete(request(
            "default",
            images::DeleteImageRequest {
                name: "docker.io/x/y:1".into(),
                sync: false,
                target: Some(Descriptor {
                    digest: orphan.clone(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    cl.delete(request(
        "default",
        images::DeleteImageRequest {
            name: "docker.io/x/y:1".into(),
            sync: true,
            target: None,
        },
    ))
    .await
    .unwrap();
    for dg in [&layer, &config, &manifest] {
        assert!(
            !exists(&ch, "default", dg).await,
            "{dg} collected with its image"
        );
    }
    assert!(blobs_on_disk(&d.root()).is_empty());
    let err = cl
        .get(request(
            "default",
            images::GetImageRequest {
                name: "docker.io/x/y:1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = cl
        .get(images::GetImageRequest { name: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "namespace header required"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_protect_until_deleted() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let mut cl = LeasesClient::new(ch.clone());
    let l = cl
        .create(request(
            "default",
            leases::CreateRequest {
                id: "hold".into(),
                labels: HashMap::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
    assert_eq!(l.id, "hold");
    let err = cl
        .create(request(
            "default",
            leases::CreateRequest {
                id: "hold".into(),
                labels: HashMap::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let held = put(&ch, "default", Some("hold"), b"held by a lease", &[]).await;
    let loose = put(&ch, "default", None, b"loose", &[]).await;
    // A write naming a lease that does not exist is refused.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(content::WriteContentRequest {
        r#ref: "x".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    drop(tx);
    let mut s = ContentClient::new(ch.clone())
        .write(with_lease(
            request("default", tokio_stream::wrappers::ReceiverStream::new(rx)),
            "ghost",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.next().await.unwrap().unwrap_err().code(), Code::NotFound);

    let res = cl
        .list_resources(request(
            "default",
            leases::ListResourcesRequest { id: "hold".into() },
        ))
        .await
        .unwrap()
        .into_inner()
        .resources;
    assert!(
        res.iter().any(|r| r.r#type == "content" && r.id == held),
        "{res:?}"
    );
    // Trigger a collection: the loose blob goes, the leased one stays.
    cl.create(request(
        "default",
        leases::CreateRequest {
            id: "tmp".into(),
            labels: HashMap::new(),
        },
    ))
    .await
    .unwrap();
    cl.delete(request(
        "default",
        leases::DeleteRequest {
            id: "tmp".into(),
            sync: true,
        },
    ))
    .await
    .unwrap();
    assert!(exists(&ch, "default", &held).await);
    assert!(!exists(&ch, "default", &loose).await);

    // Resources can be added and removed by hand; bad types are refused.
    cl.add_resource(request(
        "default",
        leases::AddResourceRequest {
            id: "hold".into(),
            resource: Some(leases::Resource {
                id: "sn1".into(),
                r#type: "snapshots/overlayfs".into(),
            }),
        },
    ))
    .await
    .unwrap();
    let err = cl
        .add_resource(request(
            "default",
            leases::AddResourceRequest {
                id: "hold".into(),
                resource: Some(leases::Resource {
                    id: "x".into(),
                    r#type: "bogus".into(),
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let err = cl
        .add_resource(request(
            "default",
            leases::AddResourceRequest {
                id: "hold".into(),
                resource: Some(leases::Resource {
                    id: "not-a-digest".into(),
                    r#type: "content".into(),
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = cl
        .add_resource(request(
            "default",
            leases::AddResourceRequest {
                id: "ghost".into(),
                resource: Some(leases::Resource {
                    id: held.clone(),
                    r#type: "content".into(),
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // An expired lease protects nothing and is itself collected.
    let past = "2000-01-01T00:00:00Z";
    cl.create(request(
        "default",
        leases::CreateRequest {
            id: "old".into(),
            labels: HashMap::from([("containerd.io/gc.expire".into(), past.into())]),
        },
    ))
    .await
    .unwrap();
    let stale = put(&ch, "default", Some("old"), b"stale", &[]).await;
    cl.delete(request(
        "default",
        leases::DeleteRequest {
            id: "hold".into(),
            sync: true,
        },
    ))
    .await
    .unwrap();
    assert!(!exists(&ch, "default", &held).await);
    assert!(!exists(&ch, "default", &stale).await);
    let left = cl
        .list(request("default", leases::ListRequest { filters: vec![] }))
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert!(left.is_empty(), "{left:?}");
    assert!(blobs_on_disk(&d.root()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_uuid_persists_and_sigterm_is_clean() {
    let mut d = Daemon::start();
    let ch = d.channel().await;
    let s1 = IntrospectionClient::new(ch.clone())
        .server(())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s1.pid, u64::from(d.pid()));
    assert!(uuid_like(&s1.uuid), "{}", s1.uuid);
    let st = d.stop();
    assert!(st.success(), "clean exit on SIGTERM: {st}");
    assert!(!d.sock.exists(), "socket removed on shutdown");
    d.restart();
    let ch = d.channel().await;
    let s2 = IntrospectionClient::new(ch.clone())
        .server(())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s1.uuid, s2.uuid, "uuid persisted under root");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&d.sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660);
    let plugins = IntrospectionClient::new(ch)
        .plugins(berth_proto::services::introspection::v1::PluginsRequest {
            filters: vec!["type==io.containerd.grpc.v1".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .plugins;
    assert!(plugins.iter().all(|p| p.r#type == "io.containerd.grpc.v1") && plugins.len() >= 7);
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_publish_forward_and_validation() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let mut cl = EventsClient::new(ch.clone());
    let mut sub = cl
        .subscribe(events::SubscribeRequest {
            filters: vec!["namespace==ev,topic==/test/one".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let ev = berth_proto::typeurl::pack(&berth_proto::pb::containerd::events::TaskOom {
        container_id: "c1".into(),
    });
    cl.publish(request(
        "ev",
        events::PublishRequest {
            topic: "/test/one".into(),
            event: Some(ev.clone()),
        },
    ))
    .await
    .unwrap();
    cl.publish(request(
        "ev",
        events::PublishRequest {
            topic: "/test/two".into(),
            event: Some(ev.clone()),
        },
    ))
    .await
    .unwrap();
    let err = cl
        .publish(request(
            "ev",
            events::PublishRequest {
                topic: "no-slash".into(),
                event: Some(ev.clone()),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = cl
        .publish(events::PublishRequest {
            topic: "/test/one".into(),
            event: Some(ev.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.topic, "/test/one");
    assert_eq!(got.event.unwrap().type_url, "containerd.events.TaskOOM");

    // Shims forward over ttrpc to <socket>.ttrpc.
    let ttrpc_sock = format!("{}.ttrpc", d.address());
    let client = berth_proto::ttrpc::Client::connect(&ttrpc_sock)
        .await
        .unwrap();
    let tc =
        berth_proto::pb::containerd::services::events::ttrpc::v1::events_ttrpc::EventsClient::new(
            client,
        );
    let env = berth_proto::types::Envelope {
        timestamp: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        namespace: "ev".into(),
        topic: "/test/one".into(),
        event: Some(ev),
    };
    tc.forward(
        Default::default(),
        &berth_proto::pb::containerd::services::events::ttrpc::v1::ForwardRequest {
            envelope: Some(env.clone()),
        },
    )
    .await
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.topic, "/test/one");
    // Shims' events keep their own time: one without is refused.
    let mut untimed = env.clone();
    untimed.timestamp = None;
    let err = tc
        .forward(
            Default::default(),
            &berth_proto::pb::containerd::services::events::ttrpc::v1::ForwardRequest {
                envelope: Some(untimed),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    let mut bad = env;
    bad.namespace = String::new();
    let err = tc
        .forward(
            Default::default(),
            &berth_proto::pb::containerd::services::events::ttrpc::v1::ForwardRequest {
                envelope: Some(bad),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
}
