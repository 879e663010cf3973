//! A container starts with every signal at its default action and none
//! blocked, whatever berthd inherited: a shell's background job ignores
//! SIGQUIT and SIGINT, and those dispositions survive execve into the shim
//! and, unless reset, into the container (where `trap … QUIT` in a
//! non-interactive shell then cannot catch it). runc resets them; so must
//! the built-in runtime.

use berth_tests::*;

#[test]
fn containers_do_not_inherit_ignored_signals() {
    if !require_root("running containers") {
        return;
    }
    // This binary holds only this test: the dispositions are the process's.
    // SAFETY: SIG_IGN for two signals, before any thread is started here.
    unsafe {
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
    }
    let d = Daemon::start();
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    let mut runtimes = vec![("built-in", vec![])];
    if let Some(runc) = peer("runc") {
        runtimes.push((
            "runc",
            vec!["--runc-binary".to_string(), runc.display().to_string()],
        ));
    }
    for (name, extra) in runtimes.into_iter().rev() {
        let mut args: Vec<&str> = vec!["run", "--rm"];
        args.extend(extra.iter().map(String::as_str));
        args.extend([
            "busybox",
            "grep",
            "-E",
            "^Sig(Ign|Blk)",
            "/proc/self/status",
        ]);
        let out = d.berthctl("default", &args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {out:?}");
        let mask = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or_else(|| panic!("{name}: no {key} in {text}"))
        };
        let bit = |sig: i32| 1u64 << (sig - 1);
        let ignored = mask("SigIgn:");
        assert_eq!(mask("SigBlk:"), 0, "{name}: blocked signals:\n{text}");
        assert_eq!(
            ignored & (bit(libc::SIGQUIT) | bit(libc::SIGUSR1)),
            0,
            "{name}: the container inherited berthd's ignored signals:\n{text}"
        );
        if name == "built-in" {
            // runc's Go runtime leaves signal 32 ignored; nothing here.
            assert_eq!(ignored, 0, "{name}:\n{text}");
        }
    }
}
