//! The real `crictl` (kubernetes-sigs/cri-tools, built under /var/tmp/cri-peer) against the
//! streaming server, over SPDY (its default) and WebSocket (`--transport websocket`), through a
//! tiny CRI gRPC service that answers Exec/Attach/PortForward with the server's URLs.
//! crictl cannot be installed in CI: without it every test here says SKIPPED and passes.

#[path = "../common/mod.rs"]
mod common;
mod service;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::cri::image_service_server::ImageServiceServer;
use berth_proto::cri::runtime_service_server::RuntimeServiceServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixListener};
use tokio::process::Command;
use tokio_stream::wrappers::UnixListenerStream;

const CRICTL: &str = "/var/tmp/cri-peer/bin/crictl";
const TRANSPORTS: [&str; 2] = ["spdy", "websocket"];

fn crictl() -> Option<&'static str> {
    if Path::new(CRICTL).exists() {
        return Some(CRICTL);
    }
    eprintln!("SKIPPED: crictl not built (see ../shared/peers/cri-tools)");
    None
}

struct Env {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    echo_port: u16,
}

async fn env() -> Env {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("berth_stream=debug")
        .with_test_writer()
        .try_init();
    let (server, _) = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("cri.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let svc = RuntimeServiceServer::new(service::Cri {
        server: Arc::new(server),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .add_service(ImageServiceServer::new(service::Images))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    Env {
        _dir: dir,
        sock,
        echo_port: common::echo_server().await,
    }
}

impl Env {
    fn cmd(&self, bin: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        let endpoint = format!("unix://{}", self.sock.display());
        c.args([
            "--runtime-endpoint",
            &endpoint,
            "--image-endpoint",
            &endpoint,
        ]);
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    async fn run(&self, bin: &str, args: &[&str], input: &[u8]) -> Output {
        let mut child = self.cmd(bin, args).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).await.unwrap();
        drop(stdin);
        tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("crictl {args:?} hung"))
            .unwrap()
    }
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout {:?}\nstderr {:?}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn crictl_exec_output_stdin_and_exit_code() {
    let Some(bin) = crictl() else { return };
    let env = env().await;
    for t in TRANSPORTS {
        let o = env
            .run(
                bin,
                &[
                    "exec",
                    "--transport",
                    t,
                    "ctr-1",
                    "sh",
                    "-c",
                    "echo out; echo err >&2",
                ],
                b"",
            )
            .await;
        assert!(o.status.success(), "{t}: {}", show(&o));
        assert_eq!(o.stdout, b"out\n", "{t}: {}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("err"),
            "{t}: {}",
            show(&o)
        );

        let o = env
            .run(
                bin,
                &["exec", "--transport", t, "-i", "ctr-1", "cat"],
                b"hello from stdin\n",
            )
            .await;
        assert!(o.status.success(), "{t}: {}", show(&o));
        assert_eq!(o.stdout, b"hello from stdin\n", "{t}: {}", show(&o));

        // crictl reports the remote exit code in its error (its own exit status is 1 for any
        // error: it wraps client-go's CodeExitError, which urfave/cli does not unwrap).
        let o = env
            .run(
                bin,
                &[
                    "exec",
                    "--transport",
                    t,
                    "ctr-1",
                    "sh",
                    "-c",
                    "echo bye; exit 3",
                ],
                b"",
            )
            .await;
        assert_eq!(o.stdout, b"bye\n", "{t}: {}", show(&o));
        assert!(!o.status.success(), "{t}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("command terminated with exit code 3"),
            "{t}: {}",
            show(&o)
        );
        eprintln!("{t}: `crictl exec … exit 3` -> {}", show(&o));
    }
}

async fn wait_for(out: &mut (impl AsyncReadExt + Unpin), seen: &mut Vec<u8>, what: &str, t: &str) {
    let read = async {
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(seen).contains(what) {
            let n = out.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "{t}: EOF before {what:?}: {:?}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap_or_else(|_| panic!("{t}: no {what:?} in {:?}", String::from_utf8_lossy(seen)));
}

/// Runs `crictl ARGS` on a terminal (script(1): crictl insists on one for -t), waits for
/// `ready`, types `typed`, waits for it to come back, types ^D (which ends the fake's stdin) and
/// returns everything the terminal showed once crictl has exited successfully.
async fn on_a_terminal(env: &Env, bin: &str, args: &str, ready: &str, t: &str) -> String {
    let line = format!(
        "{bin} --runtime-endpoint unix://{0} --image-endpoint unix://{0} {args}",
        env.sock.display()
    );
    let mut child = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    // Type only once the remote side is up: crictl has the terminal in raw mode by then, so
    // the pty neither echoes nor line-buffers what we type (and ^D reaches the "container").
    wait_for(&mut stdout, &mut seen, ready, t).await;
    stdin.write_all(b"typed").await.unwrap();
    wait_for(&mut stdout, &mut seen, "typed", t).await;
    stdin.write_all(b"\x04").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exit")
        .unwrap();
    let mut rest = Vec::new();
    let _ = stdout.read_to_end(&mut rest).await;
    seen.extend(rest);
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(status.success(), "{t}: {status:?} {text:?}");
    text
}

#[tokio::test]
async fn crictl_exec_and_attach_on_a_tty() {
    let Some(bin) = crictl() else { return };
    let env = env().await;
    for t in TRANSPORTS {
        let args = format!("exec --transport {t} -it ctr-1 sh -c 'echo ready; cat; echo done'");
        let text = on_a_terminal(&env, bin, &args, "ready", t).await;
        assert!(text.contains("done"), "{t}: {text:?}");
        let args = format!("attach --transport {t} -i -t ctr-1");
        let text = on_a_terminal(&env, bin, &args, "attached", t).await;
        assert!(
            text.contains("attached\ntyped") || text.contains("attached\r\ntyped"),
            "{t}: {text:?}"
        );
    }
}

#[tokio::test]
async fn crictl_attach() {
    let Some(bin) = crictl() else { return };
    let env = env().await;
    for t in TRANSPORTS {
        let o = env
            .run(
                bin,
                &["attach", "--transport", t, "-i", "ctr-1"],
                b"to the container\n",
            )
            .await;
        assert!(o.status.success(), "{t}: {}", show(&o));
        assert_eq!(
            o.stdout,
            b"attached\nto the container\n",
            "{t}: {}",
            show(&o)
        );
        let o = env
            .run(bin, &["attach", "--transport", t, "ctr-2"], b"")
            .await;
        assert!(!o.status.success(), "{t}: {}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("container ctr-2 not found"),
            "{t}: {}",
            show(&o)
        );
    }
}

#[tokio::test]
async fn crictl_port_forward() {
    let Some(bin) = crictl() else { return };
    let env = env().await;
    for t in TRANSPORTS {
        let local = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = format!("{local}:{}", env.echo_port);
        let mut child = env
            .cmd(bin, &["port-forward", "--transport", t, common::POD, &spec])
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("ready line");
        let line = line.unwrap().unwrap_or_default();
        assert!(
            line.contains(&format!("Forwarding from 127.0.0.1:{local}")),
            "{t}: {line}"
        );
        for round in 0..3 {
            let mut c = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
            let msg = format!("ping {round} over {t}");
            c.write_all(msg.as_bytes()).await.unwrap();
            c.shutdown().await.unwrap();
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got))
                .await
                .expect("echo")
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&got), format!("echo:{msg}"), "{t}");
        }
        child.kill().await.unwrap();
    }
}
