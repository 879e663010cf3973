//! Running processes under a deadline and checking how they ended.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Stops `child` with SIGTERM and reaps it; one still running after
/// `grace` is SIGKILLed and reaped, and the answer is None.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    // SAFETY: signalling our own child by pid, not yet reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Runs `cmd` with `input` on its stdin and collects its output, or kills
/// it and answers None when it runs longer than `limit`.
pub fn output_within(mut cmd: Command, input: &[u8], limit: Duration) -> Option<Output> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // Feed and drain on threads: a full pipe must not stall the deadline.
    let feed = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = feed.join();
    Some(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Asserts a command succeeded, showing its output otherwise; returns stdout.
pub fn ok(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// Asserts a command failed; returns its stderr.
pub fn fails(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "{what} unexpectedly succeeded:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stderr
}

/// Runs `args` as the host user `nobody` with no supplementary groups.
pub fn as_nobody(args: &[&str]) -> Output {
    // setpriv keeps its capabilities until its own exec (it resolves the
    // program with CAP_DAC_OVERRIDE): a shell without any does the probe's.
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$@\"", "sh"])
        .args(args)
        .output()
        .expect("run setpriv")
}
