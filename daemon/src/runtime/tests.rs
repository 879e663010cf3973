//! The task service over the recording fake runtime: orchestration without
//! root or shims.

use super::fake::{EXITED_AT, FakeRuntime};
use super::{Exit, TaskService};
use crate::containers::{Container, ContainerRecord, Containers};
use crate::error::Error;
use crate::events::Exchange;
use crate::metadata::Db;
use crate::metadata::trigger::GcTrigger;
use berth_proto::errdefs::Kind;
use berth_proto::filters::Filter;
use berth_proto::pb::containerd::events as ev;
use berth_proto::pb::containerd::task::v2 as shimapi;
use berth_proto::pb::containerd::v1::types::Status;
use berth_proto::services::tasks::v1::CreateTaskRequest;
use berth_proto::types::{Envelope, Mount};
use prost::Message;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

const NS: &str = "default";
const RUNC: &str = "io.containerd.runc.v2";
const SPEC: &[u8] = br#"{"ociVersion":"1.1.0"}"#;

struct Env {
    _dir: tempfile::TempDir,
    containers: Arc<Containers>,
    svc: Arc<TaskService<FakeRuntime>>,
    events: UnboundedReceiver<Envelope>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Arc::new(Db::open(&dir.path().join("metadata.redb")).expect("open metadata"));
    let exchange = Arc::new(Exchange::new());
    let events = exchange.subscribe(Filter::default());
    // Nothing here collects: the receiving end of the trigger is dropped.
    // Container events go elsewhere, so `events` sees only the tasks'.
    let (gc, _) = GcTrigger::new();
    let containers = Arc::new(Containers::new(db, Arc::new(Exchange::new()), gc));
    let svc = Arc::new(TaskService::new(
        FakeRuntime::default(),
        containers.clone(),
        exchange,
    ));
    Env {
        _dir: dir,
        containers,
        svc,
        events,
    }
}

impl Env {
    fn fake(&self) -> &FakeRuntime {
        self.svc.runtime()
    }

    fn container(&self, ns: &str, id: &str) {
        let spec = prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: SPEC.to_vec(),
        };
        let c = Container {
            id: id.into(),
            record: ContainerRecord {
                runtime: RUNC.into(),
                spec: Some(spec.into()),
                ..Default::default()
            },
        };
        self.containers.create(ns, c).expect("create container");
    }

    /// A container and its created task; returns the init's pid.
    async fn task(&self, ns: &str, id: &str) -> u32 {
        self.container(ns, id);
        self.svc
            .create(ns, create_req(id))
            .await
            .expect("create task")
    }

    /// Topics of the events published so far.
    fn topics(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.events.try_recv().ok())
            .map(|e| e.topic)
            .collect()
    }
}

fn create_req(id: &str) -> CreateTaskRequest {
    CreateTaskRequest {
        container_id: id.into(),
        ..Default::default()
    }
}

fn exit(status: u32) -> Exit {
    Exit {
        pid: 42,
        status,
        at: EXITED_AT,
    }
}

fn kind<T: std::fmt::Debug>(r: Result<T, Error>) -> Kind {
    r.expect_err("expected an error").kind()
}

#[tokio::test]
async fn lifecycle_calls_reach_the_runtime_in_order() {
    let e = env();
    let pid = e.task(NS, "c1").await;
    assert_eq!(e.svc.start(NS, "c1", "").await.unwrap(), pid);
    e.svc.kill(NS, "c1", "", 15, false).await.unwrap();
    let w = e.svc.wait(NS, "c1", "").await.unwrap();
    assert_eq!(w.exit_status, 143);
    let d = e.svc.delete(NS, "c1").await.unwrap();
    assert_eq!((d.pid, d.exit_status), (pid, 143));
    assert_eq!(
        e.fake().calls(),
        [
            "create default/c1 io.containerd.runc.v2",
            "start c1 ",
            "kill c1  15 all=false",
            "wait c1 ",
            "delete c1 ",
            "shutdown c1",
        ]
    );
    assert_eq!(kind(e.svc.get(NS, "c1", "").await), Kind::NotFound);
}

#[tokio::test]
async fn create_passes_the_containers_spec_runtime_and_request() {
    let e = env();
    e.container(NS, "c1");
    let rootfs = Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        ..Default::default()
    };
    let req = CreateTaskRequest {
        container_id: "c1".into(),
        rootfs: vec![rootfs.clone()],
        terminal: true,
        stdout: "/run/fifo/out".into(),
        ..Default::default()
    };
    e.svc.create(NS, req).await.unwrap();
    let seen = e.fake().creates();
    assert_eq!(seen.len(), 1);
    let c = &seen[0];
    assert_eq!((c.ns.as_str(), c.id.as_str()), (NS, "c1"));
    assert_eq!(c.runtime, RUNC);
    assert_eq!(c.spec, SPEC);
    assert_eq!(c.request.id, "c1");
    assert_eq!(c.request.rootfs, [rootfs]);
    assert!(c.request.terminal);
    assert_eq!(c.request.stdout, "/run/fifo/out");
}

#[tokio::test]
async fn runtime_path_in_the_request_overrides_the_containers_runtime() {
    let e = env();
    e.container(NS, "c1");
    let req = CreateTaskRequest {
        runtime_path: "io.containerd.other.v1".into(),
        ..create_req("c1")
    };
    e.svc.create(NS, req).await.unwrap();
    assert_eq!(e.fake().creates()[0].runtime, "io.containerd.other.v1");
}

#[tokio::test]
async fn create_failure_leaves_nothing_registered() {
    let e = env();
    e.container(NS, "c1");
    e.fake()
        .fail_next_create(Error::internal("start shim: exec format error"));
    let err = e.svc.create(NS, create_req("c1")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Internal);
    assert_eq!(err.message(), "start shim: exec format error");
    assert!(e.svc.list(NS, &Filter::default()).await.unwrap().is_empty());
    assert_eq!(kind(e.svc.get(NS, "c1", "").await), Kind::NotFound);
    // The id is free again.
    e.svc.create(NS, create_req("c1")).await.unwrap();
    assert_eq!(e.fake().creates().len(), 2);
}

#[tokio::test]
async fn duplicate_create_is_already_exists_and_never_reaches_the_runtime() {
    let e = env();
    e.task(NS, "c1").await;
    let err = e.svc.create(NS, create_req("c1")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::AlreadyExists);
    assert_eq!(err.message(), "task c1: already exists");
    assert_eq!(e.fake().creates().len(), 1);
}

#[tokio::test]
async fn create_needs_the_container_and_no_checkpoint() {
    let e = env();
    assert_eq!(
        kind(e.svc.create(NS, create_req("nope")).await),
        Kind::NotFound
    );
    e.container(NS, "c1");
    let req = CreateTaskRequest {
        checkpoint: Some(Default::default()),
        ..create_req("c1")
    };
    assert_eq!(kind(e.svc.create(NS, req).await), Kind::Unimplemented);
    assert!(e.fake().calls().is_empty());
}

#[tokio::test]
async fn a_task_being_created_is_unavailable_and_not_listed() {
    let e = env();
    e.container(NS, "c1");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    e.fake().gate_creates(gate.clone());
    let svc = e.svc.clone();
    let creating = tokio::spawn(async move { svc.create(NS, create_req("c1")).await });
    while e.fake().calls().is_empty() {
        tokio::task::yield_now().await;
    }
    let err = e.svc.start(NS, "c1", "").await.unwrap_err();
    assert_eq!(err.kind(), Kind::Unavailable);
    assert_eq!(err.message(), "task c1 is being created");
    assert!(e.svc.list(NS, &Filter::default()).await.unwrap().is_empty());
    assert_eq!(
        kind(e.svc.create(NS, create_req("c1")).await),
        Kind::AlreadyExists
    );
    gate.add_permits(1);
    creating.await.unwrap().unwrap();
    assert_eq!(e.svc.list(NS, &Filter::default()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn deleting_a_running_task_is_refused_and_keeps_it() {
    let e = env();
    e.task(NS, "c1").await;
    e.svc.start(NS, "c1", "").await.unwrap();
    let err = e.svc.delete(NS, "c1").await.unwrap_err();
    // As containerd: a running task must be killed first.
    assert_eq!(err.kind(), Kind::FailedPrecondition);
    assert!(!e.fake().calls().iter().any(|c| c.starts_with("shutdown")));
    let p = e.svc.get(NS, "c1", "").await.unwrap();
    assert_eq!(p.status, Status::Running as i32);
}

#[tokio::test]
async fn unknown_tasks_are_not_found() {
    let e = env();
    let msg = "no running task found: task x not found";
    for err in [
        e.svc.start(NS, "x", "").await.unwrap_err(),
        e.svc.kill(NS, "x", "", 9, false).await.unwrap_err(),
        e.svc.delete(NS, "x").await.unwrap_err(),
        e.svc.get(NS, "x", "").await.unwrap_err(),
        e.svc.wait(NS, "x", "").await.unwrap_err(),
        e.svc.pids(NS, "x").await.map(|_| ()).unwrap_err(),
    ] {
        assert_eq!((err.kind(), err.message()), (Kind::NotFound, msg));
    }
    // Tasks are per namespace.
    e.task("other", "x").await;
    assert_eq!(kind(e.svc.get(NS, "x", "").await), Kind::NotFound);
    assert!(e.fake().calls().iter().all(|c| c.starts_with("create")));
}

#[tokio::test]
async fn exec_processes_by_id() {
    let e = env();
    e.task(NS, "c1").await;
    e.svc.start(NS, "c1", "").await.unwrap();
    let exec = |id: &str| shimapi::ExecProcessRequest {
        id: "c1".into(),
        exec_id: id.into(),
        ..Default::default()
    };
    let err = e.svc.exec(NS, "c1", exec("")).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.message()),
        (Kind::InvalidArgument, "exec id must be set")
    );
    e.svc.exec(NS, "c1", exec("e1")).await.unwrap();
    assert_eq!(
        kind(e.svc.exec(NS, "c1", exec("e1")).await),
        Kind::AlreadyExists
    );
    let pid = e.svc.start(NS, "c1", "e1").await.unwrap();
    let p = e.svc.get(NS, "c1", "e1").await.unwrap();
    assert_eq!((p.container_id.as_str(), p.id.as_str()), ("c1", "e1"));
    assert_eq!((p.pid, p.status), (pid, Status::Running as i32));
    assert_eq!(
        kind(e.svc.delete_process(NS, "c1", "e1").await),
        Kind::FailedPrecondition
    );
    e.svc.kill(NS, "c1", "e1", 9, false).await.unwrap();
    assert_eq!(e.svc.wait(NS, "c1", "e1").await.unwrap().exit_status, 137);
    let d = e.svc.delete_process(NS, "c1", "e1").await.unwrap();
    assert_eq!((d.pid, d.exit_status), (pid, 137));
    assert_eq!(e.fake().proc("c1", "e1"), None);
    // The init is untouched.
    assert_eq!(e.fake().proc("c1", "").unwrap().status, Status::Running);
}

#[tokio::test]
async fn list_is_by_id_per_namespace_and_filtered() {
    let e = env();
    for id in ["b", "c", "a"] {
        e.task(NS, id).await;
    }
    e.task("other", "z").await;
    let ids = |v: Vec<berth_proto::pb::containerd::v1::types::Process>| {
        v.into_iter().map(|p| p.container_id).collect::<Vec<_>>()
    };
    let all = e.svc.list(NS, &Filter::default()).await.unwrap();
    assert!(all.iter().all(|p| p.status == Status::Created as i32));
    assert_eq!(ids(all), ["a", "b", "c"]);
    let f = Filter::parse("id==b").unwrap();
    assert_eq!(ids(e.svc.list(NS, &f).await.unwrap()), ["b"]);
    assert_eq!(
        ids(e.svc.list("other", &Filter::default()).await.unwrap()),
        ["z"]
    );
}

#[tokio::test]
async fn shim_death_is_one_task_exit_with_the_saved_status() {
    let mut e = env();
    let pid = e.task(NS, "c1").await;
    e.svc.start(NS, "c1", "").await.unwrap();
    e.topics();
    e.fake().kill_shim("c1", exit(3));
    // The watcher and a Wait notice the same death concurrently.
    let (reaped, waited) = tokio::join!(e.svc.reap_gone(), e.svc.wait(NS, "c1", ""));
    assert_eq!(reaped, 1);
    assert_eq!(waited.unwrap().exit_status, 3);
    assert_eq!(e.svc.reap_gone().await, 0, "a dead task is reaped once");
    let exits: Vec<Envelope> = std::iter::from_fn(|| e.events.try_recv().ok()).collect();
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(
        (exits[0].topic.as_str(), exits[0].namespace.as_str()),
        ("/tasks/exit", NS)
    );
    let te = ev::TaskExit::decode(exits[0].event.as_ref().unwrap().value.as_slice()).unwrap();
    assert_eq!(
        (te.container_id.as_str(), te.exit_status, te.pid),
        ("c1", 3, 42)
    );
    let cleanups = e
        .fake()
        .calls()
        .iter()
        .filter(|c| *c == "cleanup c1")
        .count();
    assert_eq!(cleanups, 1);
    assert_ne!(pid, 0);
}

#[tokio::test]
async fn a_dead_task_is_stopped_until_deleted() {
    let mut e = env();
    e.task(NS, "c1").await;
    e.svc.start(NS, "c1", "").await.unwrap();
    e.fake().kill_shim("c1", exit(7));
    e.svc.reap_gone().await;
    let p = e.svc.get(NS, "c1", "").await.unwrap();
    assert_eq!((p.status, p.exit_status), (Status::Stopped as i32, 7));
    let err = e.svc.kill(NS, "c1", "", 9, false).await.unwrap_err();
    assert_eq!(err.kind(), Kind::FailedPrecondition);
    assert_eq!(
        err.message(),
        "task c1 is stopped (its shim is gone): delete it"
    );
    e.topics();
    let d = e.svc.delete(NS, "c1").await.unwrap();
    assert_eq!((d.pid, d.exit_status), (42, 7));
    assert_eq!(e.topics(), ["/tasks/delete"]);
    assert_eq!(e.fake().calls().last().unwrap(), "remove c1");
    assert_eq!(kind(e.svc.get(NS, "c1", "").await), Kind::NotFound);
}

#[tokio::test]
async fn wait_ends_with_the_saved_exit_when_the_shim_dies() {
    let mut e = env();
    e.task(NS, "c1").await;
    e.svc.start(NS, "c1", "").await.unwrap();
    e.topics();
    let svc = e.svc.clone();
    let waiting = tokio::spawn(async move { svc.wait(NS, "c1", "").await });
    while !e.fake().calls().iter().any(|c| c == "wait c1 ") {
        tokio::task::yield_now().await;
    }
    e.fake().kill_shim("c1", exit(9));
    assert_eq!(waiting.await.unwrap().unwrap().exit_status, 9);
    assert_eq!(e.topics(), ["/tasks/exit"]);
}

#[tokio::test]
async fn a_deliberate_delete_is_not_taken_for_a_death() {
    let mut e = env();
    e.task(NS, "c1").await;
    e.topics();
    e.svc.delete(NS, "c1").await.unwrap();
    assert!(e.fake().shim_gone("c1"));
    assert_eq!(e.svc.reap_gone().await, 0);
    assert!(e.topics().is_empty());
    assert!(!e.fake().calls().iter().any(|c| c.starts_with("cleanup")));
}

#[tokio::test]
async fn exits_while_the_daemon_was_down_are_kept_as_stopped() {
    let mut e = env();
    e.fake().previous(NS, "gone", false, 0, exit(5));
    e.svc.restore().await;
    let p = e.svc.get(NS, "gone", "").await.unwrap();
    assert_eq!(p.status, Status::Stopped as i32);
    assert_eq!((p.pid, p.exit_status), (42, 5));
    assert_eq!(p.exited_at.unwrap().seconds, EXITED_AT / 1_000_000_000);
    assert_eq!(e.svc.wait(NS, "gone", "").await.unwrap().exit_status, 5);
    // Nothing to tell subscribers yet: the exit is reported by Get/Wait.
    assert!(e.topics().is_empty());
    let d = e.svc.delete(NS, "gone").await.unwrap();
    assert_eq!(d.exit_status, 5);
    assert_eq!(e.topics(), ["/tasks/delete"]);
}

#[tokio::test]
async fn restore_reconnects_live_shims_and_cleans_up_dead_ones() {
    let e = env();
    e.fake().previous(NS, "up", true, 77, exit(0));
    e.fake().previous("other", "down", false, 0, exit(1));
    e.svc.restore().await;
    assert_eq!(
        e.fake().calls(),
        ["restore", "cleanup down"],
        "only the dead shim is cleaned up"
    );
    let up = e.svc.get(NS, "up", "").await.unwrap();
    assert_eq!((up.pid, up.status), (77, Status::Running as i32));
    e.svc.kill(NS, "up", "", 15, false).await.unwrap();
    assert_eq!(e.svc.wait(NS, "up", "").await.unwrap().exit_status, 143);
    let down = e.svc.get("other", "down", "").await.unwrap();
    assert_eq!(down.status, Status::Stopped as i32);
    // A dead task is not cleaned up again by the watcher.
    assert_eq!(e.svc.reap_gone().await, 0);
}

#[tokio::test]
async fn task_operations_forward_their_arguments() {
    let e = env();
    e.task(NS, "c1").await;
    e.svc.start(NS, "c1", "").await.unwrap();
    e.svc.pause(NS, "c1").await.unwrap();
    assert_eq!(e.fake().proc("c1", "").unwrap().status, Status::Paused);
    e.svc.resume(NS, "c1").await.unwrap();
    e.svc.resize_pty(NS, "c1", "", 80, 24).await.unwrap();
    e.svc.close_io(NS, "c1", "", true).await.unwrap();
    let annotations = [("k".to_string(), "v".to_string())].into();
    e.svc.update(NS, "c1", None, annotations).await.unwrap();
    let pids = e.svc.pids(NS, "c1").await.unwrap();
    assert_eq!(pids.len(), 1);
    assert_eq!(
        e.fake().calls()[2..],
        [
            "pause c1",
            "resume c1",
            "resize c1  80x24",
            "close_io c1  stdin=true",
            "update c1 1 annotations",
            "pids c1",
        ]
    );
}

#[tokio::test]
async fn metrics_cover_live_tasks_matching_the_filter() {
    let e = env();
    for id in ["b", "a", "dead"] {
        e.task(NS, id).await;
    }
    e.fake().kill_shim("dead", exit(1));
    e.svc.reap_gone().await;
    let ids = |v: Vec<berth_proto::types::Metric>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
    let all = e.svc.metrics(NS, &Filter::default()).await.unwrap();
    // The runtime's Any passes through as it came (type and bytes): the
    // client decodes containerd's v1 or v2 type by its URL.
    let data = all[0].data.as_ref().unwrap();
    assert_eq!(
        (data.type_url.as_str(), data.value.as_slice()),
        ("fake/stats", &b"a"[..])
    );
    assert_eq!(ids(all), ["a", "b"]);
    let f = Filter::parse_all(&["id==b"]).unwrap();
    assert_eq!(ids(e.svc.metrics(NS, &f).await.unwrap()), ["b"]);
    let f = Filter::parse_all(&[format!("runtime=={RUNC}")]).unwrap();
    assert_eq!(e.svc.metrics(NS, &f).await.unwrap().len(), 2);
    let f = Filter::parse_all(&["runtime==io.containerd.kata.v2"]).unwrap();
    assert!(e.svc.metrics(NS, &f).await.unwrap().is_empty());
}

#[tokio::test]
async fn reopen_log_is_for_running_tasks_that_log_to_a_file() {
    let e = env();
    assert_eq!(kind(e.svc.reopen_log(NS, "none").await), Kind::NotFound);
    // Output to the client's FIFOs: nothing to reopen.
    e.task(NS, "fifo").await;
    e.svc.start(NS, "fifo", "").await.unwrap();
    let err = e.svc.reopen_log(NS, "fifo").await.unwrap_err();
    assert_eq!(err.kind(), Kind::FailedPrecondition);
    assert!(err.message().contains("log file"), "{err}");
    // Output to a CRI log: created is not running yet; then reopened.
    e.container(NS, "c1");
    let (stdout, stderr) =
        crate::logs::LogStore::cri_stdio(&e._dir.path().join("pods/c1/0.log"), false, 16384, None)
            .unwrap();
    let req = CreateTaskRequest {
        stdout,
        stderr,
        ..create_req("c1")
    };
    e.svc.create(NS, req).await.unwrap();
    assert_eq!(
        kind(e.svc.reopen_log(NS, "c1").await),
        Kind::FailedPrecondition
    );
    e.svc.start(NS, "c1", "").await.unwrap();
    e.svc.reopen_log(NS, "c1").await.unwrap();
    assert!(e.fake().calls().contains(&"reopen_log c1".to_string()));
    // Stopped, and once its shim is gone: refused, never reaching it.
    e.svc.kill(NS, "c1", "", 9, false).await.unwrap();
    assert_eq!(
        kind(e.svc.reopen_log(NS, "c1").await),
        Kind::FailedPrecondition
    );
    e.fake().kill_shim("c1", exit(137));
    e.svc.reap_gone().await;
    let before = e.fake().calls().len();
    let err = e.svc.reopen_log(NS, "c1").await.unwrap_err();
    assert_eq!(err.kind(), Kind::FailedPrecondition);
    assert!(err.message().contains("not running"), "{err}");
    assert_eq!(e.fake().calls().len(), before);
}
