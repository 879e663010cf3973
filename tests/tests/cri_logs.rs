//! Container logs in the Kubernetes CRI format, written by the shim to a
//! path of the kubelet's choosing (`berth-log://…?format=cri` stdio URIs, as
//! berthd's CRI gives a task), against a real berthd, with the built-in
//! runtime and with runc: both streams in one file, long lines cut into
//! partial pieces, and the reopen after the kubelet renamed the file
//! (`berth.shim.v1.Logs/ReopenLog`, what CRI ReopenContainerLog calls):
//! output goes on in a new file at the path, the old one left intact;
//! `berthctl tasks attach` follows the file. Root only.

use berth_proto::client::request;
use berth_proto::crilog::{Line, Stream, read_file};
use berth_proto::jsonlog::Destination;
use berth_proto::pb::berth::shim::v1::{ReopenLogRequest, logs_ttrpc};
use berth_proto::services::containers::v1 as containers;
use berth_proto::services::containers::v1::containers_client::ContainersClient;
use berth_proto::services::snapshots::v1 as snapshots;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::services::tasks::v1 as tasks;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::ttrpc::{Client, Context};
use berth_tests::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest piece, small so that a short line is cut.
const MAX_LINE: usize = 16;

/// Prints, traps USR2 ("before") and USR1 ("after"), then idles.
const SCRIPT: &str = "trap 'echo before; echo before-err >&2' USR2; \
    trap 'echo after; echo after-err >&2; printf unterminated' USR1; \
    echo out1; echo err1 >&2; echo 0123456789abcdefghijklmnopqrstuvwxyz; \
    printf 'crlf\\r\\n'; echo; echo ready; \
    while true; do sleep 0.1; done";

fn ctl(d: &Daemon, args: &[&str]) -> String {
    ok(&format!("berthctl {args:?}"), d.berthctl("default", args))
}

fn lines(path: &Path) -> Vec<(Stream, bool, String)> {
    read_file(path)
        .unwrap_or_default()
        .into_iter()
        .map(|l: Line| {
            (
                l.stream,
                l.partial,
                String::from_utf8_lossy(&l.content).into_owned(),
            )
        })
        .collect()
}

fn full(stream: Stream, s: &str) -> (Stream, bool, String) {
    (stream, false, format!("{s}\n"))
}

fn part(stream: Stream, s: &str) -> (Stream, bool, String) {
    (stream, true, s.to_string())
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The init's `berth.shim.v1.Logs/ReopenLog`, straight to its shim.
async fn reopen(d: &Daemon, id: &str) -> Result<(), berth_proto::ttrpc::Status> {
    let bundle = d
        .state()
        .join("io.containerd.runtime.v2.task/default")
        .join(id);
    let address = std::fs::read_to_string(bundle.join("address")).expect("the shim's address");
    let client = Client::connect(address.trim())
        .await
        .expect("connect to the shim");
    logs_ttrpc::LogsClient::new(client)
        .reopen_log(
            Context::with_namespace("default"),
            &ReopenLogRequest { id: id.into() },
        )
        .await
}

/// A task of container `id` (made by `berthctl run`, its first task gone)
/// logging to `path` in the CRI format.
async fn create_task(d: &Daemon, id: &str, path: &Path) {
    let ch = d.channel().await;
    let c = ContainersClient::new(ch.clone())
        .get(request(
            "default",
            containers::GetContainerRequest { id: id.into() },
        ))
        .await
        .unwrap()
        .into_inner()
        .container
        .unwrap();
    let rootfs = SnapshotsClient::new(ch.clone())
        .mounts(request(
            "default",
            snapshots::MountsRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let uri = |s: &str| Destination::cri(path.to_path_buf(), s, MAX_LINE).uri();
    let mut tc = TasksClient::new(ch);
    tc.create(request(
        "default",
        tasks::CreateTaskRequest {
            container_id: id.into(),
            rootfs,
            stdout: uri("stdout"),
            stderr: uri("stderr"),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    tc.start(request(
        "default",
        tasks::StartRequest {
            container_id: id.into(),
            exec_id: String::new(),
        },
    ))
    .await
    .unwrap();
}

async fn logs_in_cri_format_and_reopen(d: &Daemon, id: &str, runc: Option<&Path>) {
    let mut run = vec!["run", "-d", "--name", id];
    let runc_arg;
    if let Some(r) = runc {
        runc_arg = r.display().to_string();
        run.extend(["--runc-binary", &runc_arg]);
    }
    run.extend(["busybox", "sh", "-c", SCRIPT]);
    ctl(d, &run);
    // `run -d` logs to a json-file berthd keeps: reopenable too.
    reopen(d, id).await.expect("ReopenLog of a json-file log");
    // The container stays; its task goes, so that ours can be created.
    ctl(d, &["tasks", "rm", "-f", id]);
    let dir = d.dir.path().join("pods/default_pod_uid").join(id);
    let path = dir.join("0.log");
    create_task(d, id, &path).await;
    let (o, e) = (Stream::Stdout, Stream::Stderr);
    eventually("the script's output", || {
        lines(&path).contains(&full(o, "ready"))
    })
    .await;
    let first = lines(&path);
    // The streams are copied concurrently: each in its order.
    let of = |s: Stream, v: &[(Stream, bool, String)]| -> Vec<(Stream, bool, String)> {
        v.iter().filter(|l| l.0 == s).cloned().collect()
    };
    assert_eq!(
        of(o, &first),
        vec![
            full(o, "out1"),
            part(o, "0123456789abcdef"),
            part(o, "ghijklmnopqrstuv"),
            full(o, "wxyz"),
            full(o, "crlf"),
            full(o, ""),
            full(o, "ready"),
        ],
        "{id}"
    );
    assert_eq!(of(e, &first), vec![full(e, "err1")], "{id}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o022, 0o640, "{id}: {mode:o}");
    }

    // The kubelet renames the file: output goes on in the old one until
    // the reopen.
    let old = dir.join("0.log.20261202-033000");
    std::fs::rename(&path, &old).unwrap();
    ctl(d, &["tasks", "kill", "-s", "SIGUSR2", id]);
    eventually("output after the rename", || {
        lines(&old).contains(&full(e, "before-err")) && lines(&old).contains(&full(o, "before"))
    })
    .await;
    assert!(
        !path.exists(),
        "{id}: nothing at the path before the reopen"
    );
    let kept = std::fs::read(&old).unwrap();
    reopen(d, id).await.expect("ReopenLog");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o022, 0o640, "{id}: a new file: {mode:o}");
    }
    ctl(d, &["tasks", "kill", "-s", "SIGUSR1", id]);
    eventually("output after the reopen", || {
        let l = lines(&path);
        l.contains(&full(o, "after")) && l.contains(&full(e, "after-err"))
    })
    .await;
    let mut new = lines(&path);
    new.sort();
    assert_eq!(new, vec![full(o, "after"), full(e, "after-err")], "{id}");
    assert_eq!(
        std::fs::read(&old).unwrap(),
        kept,
        "{id}: the old file is intact"
    );

    // `berthctl tasks attach` follows the CRI file until the task exits.
    let attach = d
        .berthctl_command("default", &["tasks", "attach", id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stopped: the unterminated end is a partial line; nothing to reopen.
    ctl(d, &["tasks", "kill", "-s", "SIGKILL", id]);
    let attached = tokio::task::spawn_blocking(move || attach.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(attached.status.success(), "{id}: {attached:?}");
    assert_eq!(
        (
            String::from_utf8_lossy(&attached.stdout).as_ref(),
            String::from_utf8_lossy(&attached.stderr).as_ref()
        ),
        ("after\nunterminated", "after-err\n"),
        "{id}"
    );
    let ch = d.channel().await;
    TasksClient::new(ch.clone())
        .wait(request(
            "default",
            tasks::WaitRequest {
                container_id: id.into(),
                exec_id: String::new(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(lines(&path).last(), Some(&part(o, "unterminated")), "{id}");
    let err = reopen(d, id).await.expect_err("reopen a stopped task");
    assert_eq!(
        err.kind(),
        berth_proto::errdefs::Kind::FailedPrecondition,
        "{id}: {err:?}"
    );
    assert!(err.message.contains("not running"), "{id}: {err:?}");
    ctl(d, &["tasks", "rm", id]);
    ctl(d, &["containers", "rm", id]);
    assert!(old.exists() && path.exists(), "{id}: logs outlive the task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_logs_are_written_split_and_reopened_with_both_runtimes() {
    if !require_root("running containers") {
        return;
    }
    let d = Daemon::start();
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    logs_in_cri_format_and_reopen(&d, "cri-builtin", None).await;
    match peer("runc") {
        Some(runc) => logs_in_cri_format_and_reopen(&d, "cri-runc", Some(&runc)).await,
        None => eprintln!("SKIPPED (runc): runc not installed"),
    }
}
