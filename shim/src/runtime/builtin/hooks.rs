//! OCI hooks, as the runtime spec and runc run them: each hook's `path`
//! executed with its `args` (the first is `argv[0]`) and exactly its `env`,
//! the container's state JSON on stdin, killed and failed after its
//! `timeout`. The points (see `init` and the runtime's `mod`): prestart
//! and createRuntime from the shim once the container's mounts are made,
//! before pivot_root; createContainer from the init at the same point;
//! startContainer from the init just before it executes the program;
//! poststart from the shim at the end of create (status `created`: runc
//! runs it there, not after start); poststop from the shim at delete and
//! after a failed create (no pid, as runc). A failure's error carries the
//! hook's exit status (or timeout) and the end of its stdout and stderr, as
//! runc's does.

use crate::{Error, Result};
use oci_spec::runtime::{Hook, Hooks, Spec};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The hook kinds, named as the spec's `hooks` object names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }

    fn of(self, h: &Hooks) -> Option<&Vec<Hook>> {
        match self {
            Kind::Prestart => h.prestart().as_ref(),
            Kind::CreateRuntime => h.create_runtime().as_ref(),
            Kind::CreateContainer => h.create_container().as_ref(),
            Kind::StartContainer => h.start_container().as_ref(),
            Kind::Poststart => h.poststart().as_ref(),
            Kind::Poststop => h.poststop().as_ref(),
        }
    }
}

/// The spec's hooks of `kind`, in order.
pub fn of(spec: &Spec, kind: Kind) -> Vec<Hook> {
    spec.hooks()
        .as_ref()
        .and_then(|h| kind.of(h).cloned())
        .unwrap_or_default()
}

/// Whether the shim must run hooks before the init pivots (prestart, the
/// deprecated name, runs with createRuntime as in runc).
pub fn shim_runs_before_pivot(spec: &Spec) -> bool {
    !of(spec, Kind::Prestart).is_empty() || !of(spec, Kind::CreateRuntime).is_empty()
}

/// The container's state as the runtime spec's `state` operation shows
/// it, which is what every hook reads on stdin.
pub fn state_json(spec: &Spec, id: &str, bundle: &Path, status: &str, pid: u32) -> String {
    let mut state = serde_json::json!({
        "ociVersion": spec.version(),
        "id": id,
        "status": status,
        "bundle": bundle,
    });
    // runc leaves the pid out once there is no process.
    if pid != 0 {
        state["pid"] = pid.into();
    }
    if let Some(a) = spec.annotations().as_ref().filter(|a| !a.is_empty()) {
        state["annotations"] = serde_json::json!(a);
    }
    state.to_string()
}

/// Runs `hooks` in order, stopping at the first that fails.
pub fn run_all(kind: Kind, hooks: &[Hook], state: &str) -> Result<()> {
    for h in hooks {
        run(h, state)
            .map_err(|e| e.context(format!("{} hook {}", kind.name(), h.path().display())))?;
    }
    Ok(())
}

/// How much of each of a failed hook's output streams its error keeps:
/// the end, where the reason usually is. Two streams of this size fit in
/// one message of the init's sync socket with room to spare.
pub const OUTPUT_TAIL: usize = 2048;

/// The last [`OUTPUT_TAIL`] bytes of one output stream.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    cut: bool,
}

impl Tail {
    fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        if self.buf.len() > OUTPUT_TAIL {
            self.buf.drain(..self.buf.len() - OUTPUT_TAIL);
            self.cut = true;
        }
    }

    /// The kept text (`…` first when the start was dropped).
    fn text(&self) -> String {
        let s = String::from_utf8_lossy(&self.buf);
        let s = s.trim_end();
        if self.cut {
            format!("…{s}")
        } else {
            s.to_string()
        }
    }
}

/// `what`, then the hook's non-empty output streams (runc puts both in
/// its hook errors: what the hook printed is what says why it failed).
fn with_output(what: String, out: &Tail, err: &Tail) -> String {
    let mut m = what;
    for (name, t) in [("stdout", out), ("stderr", err)] {
        let text = t.text();
        if !text.is_empty() {
            m.push_str(&format!(", {name}: {text}"));
        }
    }
    m
}

/// Runs one hook to completion: success is exit status 0 within its
/// timeout (none: it may take as long as it likes, as in runc). A failure
/// names the exit status (or the timeout) and ends with what the hook
/// wrote to stdout and stderr (their last [`OUTPUT_TAIL`] bytes each).
pub fn run(hook: &Hook, state: &str) -> Result<()> {
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some(a0) = args.first() {
        cmd.arg0(a0);
    }
    cmd.args(args.iter().skip(1))
        .env_clear()
        .envs(
            hook.env()
                .iter()
                .flatten()
                .filter_map(|kv| kv.split_once('=')),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::io("start", e))?;
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let mut io = Pipes::of(&mut child, state.as_bytes());
    let r = io.pump(&mut child, timeout);
    let (out, err) = (&io.out, &io.err);
    match r {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(Error::internal(with_output(
            format!("failed: {status}"),
            out,
            err,
        ))),
        Err(Stop::Timeout(t)) => Err(Error::new(
            berth_proto::errdefs::Kind::DeadlineExceeded,
            with_output(
                format!("timed out after {}s and was killed", t.as_secs()),
                out,
                err,
            ),
        )),
        Err(Stop::Failed(e)) => {
            kill(&mut child);
            Err(e)
        }
    }
}

/// Why [`Pipes::pump`] stopped before the hook exited.
enum Stop {
    Timeout(Duration),
    Failed(Error),
}

/// A hook's three pipes: the state still to write to its stdin, and the
/// ends of its stdout and stderr so far. Driven by poll(2) from this one
/// thread: the shim and the init must not start threads (they fork).
struct Pipes<'a> {
    stdin: Option<std::process::ChildStdin>,
    state: &'a [u8],
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
    out: Tail,
    err: Tail,
}

/// Makes a pipe end non-blocking: a hook that stops reading its state, or
/// never writes, must not stop us from noticing its exit or timeout.
fn nonblocking(fd: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

impl<'a> Pipes<'a> {
    fn of(child: &mut std::process::Child, state: &'a [u8]) -> Pipes<'a> {
        Pipes {
            stdin: child.stdin.take(),
            state,
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            out: Tail::default(),
            err: Tail::default(),
        }
    }

    /// Feeds stdin and collects stdout and stderr until the hook exits
    /// (then whatever it left in the pipes), or kills it at `timeout`.
    /// Its exit, not the pipes' end, is what we wait for: a daemon the
    /// hook started may hold them open for ever.
    fn pump(
        &mut self,
        child: &mut std::process::Child,
        timeout: Option<Duration>,
    ) -> std::result::Result<ExitStatus, Stop> {
        let fail = |what: &str, e: std::io::Error| Stop::Failed(Error::io(what.to_string(), e));
        for r in [
            self.stdin.as_ref().map(nonblocking),
            self.stdout.as_ref().map(nonblocking),
            self.stderr.as_ref().map(nonblocking),
        ]
        .into_iter()
        .flatten()
        {
            r.map_err(|e| fail("make the hook's pipes non-blocking", e))?;
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(s) = child.try_wait().map_err(|e| fail("wait", e))? {
                self.read_available();
                return Ok(s);
            }
            if let (Some(d), Some(t)) = (deadline, timeout)
                && Instant::now() >= d
            {
                kill(child);
                self.read_available();
                return Err(Stop::Timeout(t));
            }
            self.wait_ready(Duration::from_millis(10));
            self.write_state()
                .map_err(|e| fail("write the state to the hook", e))?;
            self.read_available();
        }
    }

    /// Sleeps until a pipe is ready or `tick` has passed (the hook's exit
    /// has no descriptor here, so it is looked for once a tick).
    fn wait_ready(&self, tick: Duration) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = Vec::with_capacity(3);
        if let Some(p) = &self.stdin {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLOUT));
        }
        for p in [
            self.stdout.as_ref().map(AsFd::as_fd),
            self.stderr.as_ref().map(AsFd::as_fd),
        ]
        .into_iter()
        .flatten()
        {
            fds.push(PollFd::new(p, PollFlags::POLLIN));
        }
        let ms = PollTimeout::try_from(tick).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, ms).is_err() {
            // EINTR or the like: the loop looks again after the tick.
        }
    }

    /// Writes as much of the state as the pipe takes now; the hook's
    /// stdin closes once it is all written (or the hook closed its end,
    /// which a hook that does not read its state may do).
    fn write_state(&mut self) -> std::io::Result<()> {
        let Some(p) = self.stdin.as_mut() else {
            return Ok(());
        };
        while !self.state.is_empty() {
            match p.write(self.state) {
                Ok(n) => self.state = &self.state[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                Err(e) => return Err(e),
            }
        }
        self.stdin = None;
        Ok(())
    }

    /// Reads what stdout and stderr hold now; a stream at its end (or
    /// failing) is closed.
    fn read_available(&mut self) {
        let mut buf = [0u8; 4096];
        for (pipe, tail) in [
            (&mut self.stdout as &mut dyn Source, &mut self.out),
            (&mut self.stderr as &mut dyn Source, &mut self.err),
        ] {
            loop {
                match pipe.read_some(&mut buf) {
                    Some(Ok(0)) | None => {
                        pipe.close();
                        break;
                    }
                    Some(Ok(n)) => tail.push(&buf[..n]),
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Some(Err(_)) => {
                        pipe.close();
                        break;
                    }
                }
            }
        }
    }
}

/// An output pipe of the hook, if still open.
trait Source {
    fn read_some(&mut self, buf: &mut [u8]) -> Option<std::io::Result<usize>>;
    fn close(&mut self);
}

impl<R: Read> Source for Option<R> {
    fn read_some(&mut self, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
        self.as_mut().map(|r| r.read(buf))
    }
    fn close(&mut self) {
        *self = None;
    }
}

fn kill(child: &mut std::process::Child) {
    if child.kill().and_then(|()| child.wait().map(drop)).is_err() {
        // Gone already: nothing left to stop.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{HookBuilder, HooksBuilder, SpecBuilder};
    use std::collections::HashMap;

    fn sh(script: &str, timeout: Option<i64>) -> Hook {
        let mut b = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "hook-argv0".to_string(),
                "-c".to_string(),
                script.to_string(),
                "one".to_string(),
            ])
            .env(vec!["ONLY=this".to_string()]);
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.build().unwrap()
    }

    /// A fresh file path per test, removed with the guard.
    struct Out(std::path::PathBuf);
    impl Drop for Out {
        fn drop(&mut self) {
            if std::fs::remove_file(&self.0).is_err() {
                // Never written: nothing to remove.
            }
        }
    }
    fn out(name: &str) -> (Out, std::path::PathBuf) {
        let p = std::env::temp_dir().join(format!("berth-hooks-{}-{name}", std::process::id()));
        (Out(p.clone()), p)
    }

    #[test]
    fn state_json_has_the_spec_fields_and_no_pid_once_gone() {
        let spec = SpecBuilder::default()
            .annotations(HashMap::from([("a".to_string(), "b".to_string())]))
            .build()
            .unwrap();
        let s: serde_json::Value =
            serde_json::from_str(&state_json(&spec, "c1", Path::new("/b"), "creating", 42))
                .unwrap();
        assert_eq!(
            s,
            serde_json::json!({"ociVersion": spec.version(), "id": "c1", "status": "creating",
                "pid": 42, "bundle": "/b", "annotations": {"a": "b"}})
        );
        let s: serde_json::Value = serde_json::from_str(&state_json(
            &Spec::default(),
            "c1",
            Path::new("/b"),
            "stopped",
            0,
        ))
        .unwrap();
        assert!(
            s.get("pid").is_none() && s.get("annotations").is_none(),
            "{s}"
        );
    }

    #[test]
    fn a_hook_gets_its_args_only_its_env_and_the_state_on_stdin() {
        let (_d, p) = out("env");
        let script = format!(
            "tr '\\0' ' ' < /proc/$$/cmdline > {0}; tr '\\0' ' ' < /proc/$$/environ >> {0}; cat >> {0}",
            p.display()
        );
        run(&sh(&script, None), "{\"status\":\"created\"}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("hook-argv0 -c {script} one ONLY=this {{\"status\":\"created\"}}")
        );
    }

    #[test]
    fn hooks_run_in_order_and_the_first_failure_stops_the_rest() {
        let (_d, p) = out("order");
        let f = p.display();
        let hooks = vec![
            sh(&format!("echo a >> {f}"), None),
            sh(&format!("echo b >> {f}; exit 3"), None),
            sh(&format!("echo c >> {f}"), None),
        ];
        let e = run_all(Kind::CreateRuntime, &hooks, "{}").unwrap_err();
        assert_eq!(
            e.message(),
            "createRuntime hook /bin/sh: failed: exit status: 3"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nb\n");
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_and_fails() {
        let start = Instant::now();
        let e = run(&sh("sleep 30", Some(1)), "{}").unwrap_err();
        assert!(e.message().contains("timed out after 1s"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));
        // Within its timeout, a hook that ignores its stdin succeeds.
        run(&sh("exit 0", Some(5)), &"x".repeat(1 << 20)).unwrap();
        let e = run(
            &HookBuilder::default()
                .path("/nonexistent/hook")
                .build()
                .unwrap(),
            "{}",
        )
        .unwrap_err();
        assert_eq!(e.message(), "start");
    }

    #[test]
    fn a_failed_hook_says_its_status_and_the_end_of_its_output() {
        let e = run_all(
            Kind::Poststart,
            &[sh("echo to-out; echo to-err >&2; exit 7", None)],
            "{}",
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "poststart hook /bin/sh: failed: exit status: 7, stdout: to-out, stderr: to-err"
        );
        // Killed by a signal; only stderr said something.
        let e = run(&sh("echo dying >&2; kill -TERM $$", None), "{}").unwrap_err();
        assert_eq!(e.message(), "failed: signal: 15 (SIGTERM), stderr: dying");
        // Long output: only its end, marked as cut.
        let e = run(
            &sh(
                "i=0; while [ $i -lt 2000 ]; do echo line$i >&2; i=$((i+1)); done; exit 1",
                None,
            ),
            "{}",
        )
        .unwrap_err();
        let (_, err) = e.message().split_once(", stderr: ").unwrap();
        assert!(err.starts_with('…') && err.ends_with("line1999"), "{err}");
        assert!(err.len() <= OUTPUT_TAIL + '…'.len_utf8(), "{}", err.len());
        assert!(!err.contains("line0\n"));
    }

    #[test]
    fn a_timed_out_hook_says_so_with_its_output() {
        let e = run(
            &sh("echo started; echo waiting >&2; sleep 30", Some(1)),
            "{}",
        )
        .unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::DeadlineExceeded);
        assert_eq!(
            e.message(),
            "timed out after 1s and was killed, stdout: started, stderr: waiting"
        );
    }

    #[test]
    fn a_hook_is_done_when_it_exits_even_if_its_output_stays_open() {
        // Its background child keeps stdout and stderr open for 15 s; a
        // big state it never reads must not block either, nor must lots
        // of output while the state is still being written.
        let start = Instant::now();
        let e = run(
            &sh(
                "(sleep 15 &); head -c 300000 /dev/zero; echo bye >&2; exit 2",
                None,
            ),
            &"x".repeat(1 << 20),
        )
        .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert!(
            e.message().starts_with("failed: exit status: 2, stdout: …"),
            "{e}"
        );
        assert!(e.message().ends_with(", stderr: bye"), "{e}");
        // And a hook that reads its whole state gets all of it.
        let (_d, p) = out("big-state");
        let state = "y".repeat(1 << 20);
        run(&sh(&format!("cat > {}", p.display()), None), &state).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), state);
    }

    #[test]
    fn hooks_are_found_by_kind() {
        let spec = SpecBuilder::default()
            .hooks(
                HooksBuilder::default()
                    .prestart(vec![sh("", None)])
                    .poststop(vec![sh("", None), sh("", None)])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_eq!(of(&spec, Kind::Poststop).len(), 2);
        assert!(of(&spec, Kind::CreateRuntime).is_empty());
        assert!(shim_runs_before_pivot(&spec));
        assert!(!shim_runs_before_pivot(&Spec::default()));
    }
}
