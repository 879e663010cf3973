//! The spec's `linux.seccomp` as runc builds it, through libseccomp: the
//! default action and errno, every rule's action, errno and argument
//! conditions, the extra architectures and the filter flags. [`build`]
//! only translates (no privilege needed, unit-tested); the process loads
//! the result through `Sys::seccomp_load` as its last step before exec
//! (see `exec::prepare`). What we cannot do as runc does (NOTIFY, which
//! needs the listener protocol) is refused, never skipped.

use crate::{Error, Result};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use libseccomp::{ScmpSyscall, error::SeccompError};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompFilterFlag as F, LinuxSeccompOperator as O,
};

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
        A::ScmpActNotify => {
            return Err(Error::unimplemented(
                "seccomp: SCMP_ACT_NOTIFY (listenerPath) is not supported by the built-in runtime yet: use runc (BinaryName)",
            ));
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        Arch, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder,
    };

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
        let e = action(A::ScmpActNotify, None).unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::Unimplemented);
        assert!(e.message().contains("NOTIFY"), "{e}");
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
    fn notify_rule_and_flags() {
        let s = LinuxSeccompBuilder::default()
            .default_action(A::ScmpActAllow)
            .syscalls(vec![rule(&["getpid"], A::ScmpActNotify).build().unwrap()])
            .build()
            .unwrap();
        assert_eq!(
            build(&s).unwrap_err().kind(),
            berth_proto::errdefs::Kind::Unimplemented
        );
        let s = LinuxSeccompBuilder::default()
            .default_action(A::ScmpActErrno)
            .flags(vec![F::SeccompFilterFlagLog, F::SeccompFilterFlagTsync])
            .build()
            .unwrap();
        let f = build(&s).unwrap();
        assert!(f.get_ctl_log().unwrap());
        assert!(!f.get_ctl_tsync().unwrap());
    }
}
