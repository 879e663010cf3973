//! The spec's `linux.seccomp` as runc builds it, through libseccomp: the
//! default action and errno, every rule's action, errno and argument
//! conditions, the extra architectures and the filter flags. [`build`]
//! only translates (no privilege needed, unit-tested); [`compile`] turns
//! that into the program the process loads (`Sys::seccomp_load`) as its
//! last step before exec (see `exec::prepare`), with runc's `-ENOSYS` stub
//! in front ([`enosys`]); the shim's forked child compiles it, so none of
//! libseccomp's heap stays in the shim, which only runs [`check`]. With
//! `SCMP_ACT_NOTIFY` the load yields a listener descriptor, which goes to
//! the agent at `listenerPath` through the shim ([`listener`]), as runc
//! does it.

pub mod enosys;
pub mod listener;

use crate::{Error, Result};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use libseccomp::{ScmpSyscall, error::SeccompError};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompFilterFlag as F, LinuxSeccompOperator as O,
};
use std::io::{Read, Seek};
use std::os::fd::AsFd;

pub use listener::hand_over;

/// What a container process loads: the BPF program and `seccomp(2)`'s
/// flags. Made in the shim before the fork, so the child only loads it.
#[derive(Debug, Clone)]
pub struct Program {
    pub filter: Vec<libc::sock_filter>,
    pub flags: libc::c_ulong,
}

impl Program {
    /// Whether loading it yields a listener descriptor.
    pub fn notifies(&self) -> bool {
        self.flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0
    }
}

/// What loading a [`Program`] gives: its listener descriptor if it notifies.
pub type Loaded = std::io::Result<Option<std::os::fd::OwnedFd>>;

/// Loads `p` into this process with `seccomp(2)` (`Sys::seccomp_load` on
/// the host), as runc does once it has patched libseccomp's program.
pub fn load(p: &Program) -> Loaded {
    use std::io::Error as E;
    let prog = libc::sock_fprog {
        len: u16::try_from(p.filter.len()).map_err(|_| E::from_raw_os_error(libc::E2BIG))?,
        filter: p.filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `p.filter`, which outlives the call; the
    // kernel copies the program.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            p.flags,
            &raw const prog,
        )
    };
    if r < 0 {
        return Err(E::last_os_error());
    }
    if !p.notifies() {
        return Ok(None);
    }
    let fd = i32::try_from(r).map_err(|_| E::from_raw_os_error(libc::EBADF))?;
    // SAFETY: with NEW_LISTENER the kernel returns a new descriptor.
    Ok(Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
}

fn bad(what: impl std::fmt::Display, e: SeccompError) -> Error {
    Error::invalid(format!("seccomp: {what}: {e}"))
}

/// runc's translation of one action; ERRNO and TRACE default to EPERM.
pub fn action(a: A, errno: Option<u32>) -> Result<ScmpAction> {
    let errno = errno.unwrap_or(libc::EPERM as u32);
    Ok(match a {
        // runc's ActKill is the thread kill (SECCOMP_RET_KILL).
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActErrno => ScmpAction::Errno(
            i32::try_from(errno).map_err(|_| Error::invalid(format!("seccomp: errno {errno}")))?,
        ),
        A::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno).map_err(|_| Error::invalid(format!("seccomp: errno {errno}")))?,
        ),
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActAllow => ScmpAction::Allow,
        A::ScmpActNotify => ScmpAction::Notify,
    })
}

/// runc's limits on `SCMP_ACT_NOTIFY`: not the default action, and not on
/// `write`, which the process needs to tell its runtime about the listener
/// descriptor (see [`listener`]); and someone to send it to. Whether the
/// profile notifies. No libseccomp needed: the shim checks this itself.
pub fn check(s: &LinuxSeccomp) -> Result<bool> {
    if s.default_action() == A::ScmpActNotify {
        return Err(Error::invalid(
            "seccomp: SCMP_ACT_NOTIFY cannot be used as default action",
        ));
    }
    let rules = s.syscalls().iter().flatten();
    let notify: Vec<_> = rules.filter(|r| r.action() == A::ScmpActNotify).collect();
    if notify
        .iter()
        .any(|r| r.names().iter().any(|n| n == "write"))
    {
        return Err(Error::invalid(
            "seccomp: SCMP_ACT_NOTIFY cannot be used for the write syscall",
        ));
    }
    if notify.is_empty() {
        return Ok(false);
    }
    // runc loads the filter, then fails the create; nothing to load here.
    if s.listener_path()
        .as_ref()
        .is_none_or(|p| p.as_os_str().is_empty())
    {
        return Err(Error::invalid(
            "seccomp: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath",
        ));
    }
    Ok(true)
}

fn compare(op: O, value: u64, two: Option<u64>) -> (ScmpCompareOp, u64) {
    let op = match op {
        O::ScmpCmpNe => ScmpCompareOp::NotEqual,
        O::ScmpCmpLt => ScmpCompareOp::Less,
        O::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        O::ScmpCmpEq => ScmpCompareOp::Equal,
        O::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        O::ScmpCmpGt => ScmpCompareOp::Greater,
        // Operand one is the mask, operand two the datum (runc, libseccomp).
        O::ScmpCmpMaskedEq => return (ScmpCompareOp::MaskedEqual(value), two.unwrap_or(0)),
    };
    (op, value)
}

/// The filter the spec asks for, not loaded.
pub fn build(s: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut f = ScmpFilterContext::new(default).map_err(|e| bad("new filter", e))?;
    // The process sets no_new_privs itself when its spec asks (runc too).
    f.set_ctl_nnp(false)
        .map_err(|e| bad("no_new_privs bit", e))?;
    for arch in s.architectures().iter().flatten() {
        let name = arch.to_string();
        let a: ScmpArch = name.parse().map_err(|e| bad(&name, e))?;
        f.add_arch(a).map_err(|e| bad(format!("add {name}"), e))?;
    }
    for flag in s.flags().iter().flatten() {
        match flag {
            F::SeccompFilterFlagLog => f.set_ctl_log(true).map(drop),
            F::SeccompFilterFlagSpecAllow => f.set_ctl_ssb(true).map(drop),
            F::SeccompFilterFlagWaitKillableRecv => f.set_ctl_waitkill(true).map(drop),
            // A single-threaded process: nothing to synchronise (runc too).
            F::SeccompFilterFlagTsync => Ok(()),
        }
        .map_err(|e| bad(format!("flag {flag}"), e))?;
    }
    for rule in s.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        // libseccomp refuses a rule equal to the default; runc skips it.
        if act == default {
            continue;
        }
        let args = rule.args().clone().unwrap_or_default();
        let conds: Vec<ScmpArgCompare> = args
            .iter()
            .map(|a| {
                let (op, datum) = compare(a.op(), a.value(), a.value_two());
                let index = u32::try_from(a.index())
                    .map_err(|_| Error::invalid(format!("seccomp: argument {}", a.index())))?;
                Ok(ScmpArgCompare::new(index, op, datum))
            })
            .collect::<Result<_>>()?;
        // Conditions on one argument index more than once are alternatives
        // (one rule each); otherwise they all must hold (runc's rule).
        let repeated = args
            .iter()
            .enumerate()
            .any(|(i, a)| args[..i].iter().any(|b| b.index() == a.index()));
        for name in rule.names() {
            // Names this libseccomp does not know are skipped, as runc.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let added = if conds.is_empty() {
                f.add_rule(act, sc).map(drop)
            } else if repeated {
                conds
                    .iter()
                    .try_for_each(|c| f.add_rule_conditional(act, sc, &[*c]).map(drop))
            } else {
                f.add_rule_conditional(act, sc, &conds).map(drop)
            };
            added.map_err(|e| bad(format!("rule for {name}"), e))?;
        }
    }
    Ok(f)
}

/// libseccomp's program for `f` (`seccomp_export_bpf`), read back from a
/// memory file (libseccomp 2.5 has no in-memory export).
pub fn export(f: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    let fd = nix::sys::memfd::memfd_create(c"seccomp-bpf", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| Error::sys("seccomp: create a memory file", e))?;
    f.export_bpf(fd.as_fd())
        .map_err(|e| bad("export the filter", e))?;
    let mut file = std::fs::File::from(fd);
    let mut raw = Vec::new();
    file.rewind()
        .and_then(|()| file.read_to_end(&mut raw))
        .map_err(|e| Error::io("seccomp: read the exported filter", e))?;
    // struct sock_filter, in host byte order: code u16, jt u8, jf u8, k u32.
    Ok(raw
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// The program and flags runc would load for `s`.
pub fn compile(s: &LinuxSeccomp) -> Result<Program> {
    let notifies = check(s)?;
    let filter = export(&build(s)?)?;
    // The flags libseccomp would pass; TSYNC is moot (one thread).
    let mut flags = 0;
    for flag in s.flags().iter().flatten() {
        flags |= match flag {
            F::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            F::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            F::SeccompFilterFlagWaitKillableRecv => libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
            F::SeccompFilterFlagTsync => 0,
        };
    }
    if notifies {
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    }
    Ok(Program {
        filter: enosys::patch(s, filter)?,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        Arch, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder,
    };
    use std::os::fd::AsRawFd;

    /// libseccomp's readable dump of the filter.
    fn pfc(f: &ScmpFilterContext) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("berth-pfc-{}-{n}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        f.export_pfc(&file).unwrap();
        let s = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        s
    }

    fn rule(names: &[&str], a: A) -> LinuxSyscallBuilder {
        LinuxSyscallBuilder::default()
            .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .action(a)
    }

    #[test]
    fn actions_are_runcs() {
        assert_eq!(action(A::ScmpActErrno, None).unwrap(), ScmpAction::Errno(1));
        assert_eq!(
            action(A::ScmpActErrno, Some(38)).unwrap(),
            ScmpAction::Errno(38)
        );
        assert_eq!(action(A::ScmpActTrace, None).unwrap(), ScmpAction::Trace(1));
        assert_eq!(
            action(A::ScmpActKill, None).unwrap(),
            ScmpAction::KillThread
        );
        assert_eq!(
            action(A::ScmpActKillThread, None).unwrap(),
            ScmpAction::KillThread
        );
        assert_eq!(
            action(A::ScmpActKillProcess, None).unwrap(),
            ScmpAction::KillProcess
        );
        assert_eq!(action(A::ScmpActTrap, None).unwrap(), ScmpAction::Trap);
        assert_eq!(action(A::ScmpActLog, None).unwrap(), ScmpAction::Log);
        assert_eq!(action(A::ScmpActAllow, None).unwrap(), ScmpAction::Allow);
        assert_eq!(action(A::ScmpActNotify, None).unwrap(), ScmpAction::Notify);
    }

    #[test]
    fn filter_has_default_errno_rules_and_arches() {
        let s = LinuxSeccompBuilder::default()
            .default_action(A::ScmpActErrno)
            .default_errno_ret(38u32)
            .architectures(vec![Arch::ScmpArchX86, Arch::ScmpArchX32])
            .syscalls(vec![
                rule(&["getpid", "no_such_call"], A::ScmpActAllow)
                    .build()
                    .unwrap(),
                // Same as the default: skipped, not an error.
                rule(&["getppid"], A::ScmpActErrno)
                    .errno_ret(38u32)
                    .build()
                    .unwrap(),
                rule(&["mkdir"], A::ScmpActErrno)
                    .errno_ret(13u32)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        let f = build(&s).unwrap();
        assert_eq!(f.get_act_default().unwrap(), ScmpAction::Errno(38));
        assert!(!f.get_ctl_nnp().unwrap());
        assert!(f.is_arch_present(ScmpArch::X86).unwrap());
        assert!(f.is_arch_present(ScmpArch::X32).unwrap());
        assert!(!f.is_arch_present(ScmpArch::Aarch64).unwrap());
        let text = pfc(&f);
        assert!(text.contains("getpid"), "{text}");
        assert!(!text.contains("getppid"), "{text}");
        assert!(text.contains("ERRNO(13)"), "{text}");
        assert!(text.contains("ERRNO(38)"), "{text}");
    }

    #[test]
    fn argument_conditions_and_or_as_runc() {
        let arg = |i: usize, v: u64, op: O| {
            LinuxSeccompArgBuilder::default()
                .index(i)
                .value(v)
                .op(op)
                .build()
                .unwrap()
        };
        let masked = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(0x7e02_0000u64)
            .value_two(0u64)
            .op(O::ScmpCmpMaskedEq)
            .build()
            .unwrap();
        let s = LinuxSeccompBuilder::default()
            .default_action(A::ScmpActAllow)
            .syscalls(vec![
                // Different indexes: both must hold, one rule.
                rule(&["personality"], A::ScmpActErrno)
                    .args(vec![arg(0, 8, O::ScmpCmpEq), arg(1, 3, O::ScmpCmpGt)])
                    .build()
                    .unwrap(),
                // The same index twice: alternatives.
                rule(&["socket"], A::ScmpActErrno)
                    .args(vec![arg(0, 16, O::ScmpCmpEq), arg(0, 40, O::ScmpCmpEq)])
                    .build()
                    .unwrap(),
                rule(&["clone"], A::ScmpActErrno)
                    .args(vec![masked])
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        let text = pfc(&build(&s).unwrap());
        // Each socket family its own comparison; personality's second
        // condition nested under its first (both must hold).
        assert!(text.contains("$a0.lo32 == 16"), "{text}");
        assert!(text.contains("$a0.lo32 == 40"), "{text}");
        let indent = |needle: &str| {
            let line = text.lines().find(|l| l.contains(needle)).unwrap();
            line.len() - line.trim_start().len()
        };
        assert!(indent("$a1.lo32 > 3") > indent("$a0.lo32 == 8"), "{text}");
        assert!(text.contains("$a0.lo32 & 0x7e020000 == 0"), "{text}");
    }

    #[test]
    fn notify_as_runc_allows_it_and_flags() {
        let notify = |names: &[&str]| {
            LinuxSeccompBuilder::default()
                .default_action(A::ScmpActAllow)
                .syscalls(vec![rule(names, A::ScmpActNotify).build().unwrap()])
        };
        let s = notify(&["getppid"]).build().unwrap();
        assert!(build(&s).is_ok());
        // Nobody to send the descriptor to: refused before anything runs.
        let e = compile(&s).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::InvalidArgument);
        assert!(e.message().contains("listenerPath"), "{e}");
        let p = compile(&notify(&["getppid"]).listener_path("/a").build().unwrap()).unwrap();
        assert!(p.notifies());
        // The process names its descriptor with write(2): never notified.
        let e = compile(
            &notify(&["mkdir", "write"])
                .listener_path("/a")
                .build()
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "seccomp: SCMP_ACT_NOTIFY cannot be used for the write syscall"
        );
        let s = LinuxSeccompBuilder::default()
            .default_action(A::ScmpActNotify)
            .listener_path("/a")
            .build()
            .unwrap();
        assert_eq!(
            compile(&s).unwrap_err().message(),
            "seccomp: SCMP_ACT_NOTIFY cannot be used as default action"
        );
        let s = LinuxSeccompBuilder::default()
            .default_action(A::ScmpActErrno)
            .flags(vec![F::SeccompFilterFlagLog, F::SeccompFilterFlagTsync])
            .build()
            .unwrap();
        let f = build(&s).unwrap();
        assert!(f.get_ctl_log().unwrap());
        assert!(!f.get_ctl_tsync().unwrap());
        let p = compile(&s).unwrap();
        assert_eq!(p.flags, libc::SECCOMP_FILTER_FLAG_LOG);
        assert!(!p.notifies());
    }

    /// Loads `p` in a forked child (no_new_privs, so no privilege needed)
    /// and returns what each syscall (no arguments) answered there: the
    /// value, or minus the errno.
    fn answers_under(p: &Program, calls: &[libc::c_long]) -> Vec<i64> {
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only makes system calls and leaves with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                drop(r);
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let mut out = [0i64; 8];
                if load(p).is_ok() {
                    for (o, nr) in out.iter_mut().zip(calls) {
                        // SAFETY: the syscalls probed take no pointers.
                        let v = unsafe { libc::syscall(*nr, 0, 0, 0) };
                        *o = if v < 0 {
                            -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
                        } else {
                            v
                        };
                    }
                }
                let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_ne_bytes()).collect();
                // SAFETY: write and _exit only.
                unsafe {
                    libc::write(w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                    libc::_exit(0)
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                let mut buf = Vec::new();
                std::fs::File::from(r).read_to_end(&mut buf).unwrap();
                nix::sys::wait::waitpid(child, None).unwrap();
                buf.chunks_exact(8)
                    .take(calls.len())
                    .map(|c| i64::from_ne_bytes(c.try_into().unwrap()))
                    .collect()
            }
        }
    }

    #[test]
    fn syscalls_newer_than_the_profile_get_enosys_as_under_runc() {
        // Allowed: what the child needs, and close_range (436), so the
        // profile knows nothing above 436 on x86_64.
        let s = LinuxSeccompBuilder::default()
            .default_action(A::ScmpActErrno)
            .architectures(vec![
                Arch::ScmpArchX86_64,
                Arch::ScmpArchX86,
                Arch::ScmpArchX32,
            ])
            .syscalls(vec![
                rule(
                    &["write", "exit_group", "exit", "getpid", "close_range"],
                    A::ScmpActAllow,
                )
                .build()
                .unwrap(),
            ])
            .build()
            .unwrap();
        let p = compile(&s).unwrap();
        // getpid allowed; getppid (110, known to the profile's range)
        // gets the default EPERM; process_madvise (440) and a number no
        // kernel has get ENOSYS.
        let got = answers_under(&p, &[libc::SYS_getpid, libc::SYS_getppid, 440, 1000]);
        assert!(got[0] > 0, "{got:?}");
        assert_eq!(got[1..], [-1, -38, -38]);
        // Without the stub (what libseccomp alone builds) the new ones get
        // EPERM too: the stub is what makes the difference.
        let plain = Program {
            filter: export(&build(&s).unwrap()).unwrap(),
            flags: 0,
        };
        let got = answers_under(&plain, &[libc::SYS_getppid, 440]);
        assert_eq!(got, [-1, -1]);
        // An errno default of ENOSYS already: same answers, no stub.
        let mut s = s;
        s.set_default_errno_ret(Some(38));
        let p = compile(&s).unwrap();
        assert_eq!(p.filter.len(), plain.filter.len());
        assert_eq!(answers_under(&p, &[libc::SYS_getppid, 440]), [-38, -38]);
    }
}
