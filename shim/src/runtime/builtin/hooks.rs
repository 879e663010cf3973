//! OCI hooks, as the runtime spec and runc run them: each hook's `path`
//! executed with its `args` (the first is `argv[0]`) and exactly its `env`,
//! the container's state JSON on stdin, killed and failed after its
//! `timeout`. The points (see `init` and the runtime's `mod`): prestart
//! and createRuntime from the shim once the container's mounts are made,
//! before pivot_root; createContainer from the init at the same point;
//! startContainer from the init just before it executes the program;
//! poststart from the shim at the end of create (status `created`: runc
//! runs it there, not after start); poststop from the shim at delete and
//! after a failed create (no pid, as runc).

use crate::{Error, Result};
use oci_spec::runtime::{Hook, Hooks, Spec};
use std::io::Write;
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

/// Runs one hook to completion: success is exit status 0 within its
/// timeout (none: it may take as long as it likes, as in runc).
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
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| Error::io("start", e))?;
    if let Some(mut stdin) = child.stdin.take()
        && let Err(e) = stdin.write_all(state.as_bytes())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        // A hook need not read its state; anything else is our failure.
        kill(&mut child);
        return Err(Error::io("write the state to the hook", e));
    }
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let status = wait(&mut child, timeout)?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::internal(format!("failed: {status}")))
    }
}

/// Waits for a hook, killing it when it outlives `timeout`.
fn wait(child: &mut std::process::Child, timeout: Option<Duration>) -> Result<ExitStatus> {
    let Some(timeout) = timeout else {
        return child.wait().map_err(|e| Error::io("wait", e));
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().map_err(|e| Error::io("wait", e))? {
            return Ok(s);
        }
        if Instant::now() >= deadline {
            kill(child);
            return Err(Error::new(
                berth_proto::errdefs::Kind::DeadlineExceeded,
                format!("timed out after {}s and was killed", timeout.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
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
