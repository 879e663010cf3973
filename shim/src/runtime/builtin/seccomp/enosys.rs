//! runc's `-ENOSYS` stub (its `patchbpf`): libseccomp answers a syscall the
//! profile does not name with the default action, usually `EPERM`, even
//! when the syscall is newer than the profile itself. Programs probing for
//! a new syscall (glibc's `clone3`, `faccessat2`, …) fall back on `ENOSYS`
//! but fail on `EPERM`; so runc puts a few instructions in front of the
//! filter: per architecture, a syscall numbered above every syscall the
//! profile names gets `ENOSYS`, everything else goes on to the filter.
//!
//! The semantics are runc's (1.1.15 and 1.2: the native architecture is
//! always covered; x86_64 and x32 share an audit architecture and are told
//! apart by the x32 bit; on s390(x) syscall 0 is the multiplexer unknown
//! syscalls end up as); the program is our own layout.

use crate::{Error, Result};
use libseccomp::{ScmpArch, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction as A};
use std::collections::BTreeMap;

/// The kernel's `AUDIT_ARCH_*` value (linux/audit.h: the ELF machine, plus
/// 64-bit and little-endian bits) that `seccomp_data.arch` holds for a
/// libseccomp architecture; x32 runs as x86_64. `None`: not one runc
/// knows, which fails the create as in runc.
fn audit_arch(a: ScmpArch) -> Option<u32> {
    const B64: u32 = 0x8000_0000;
    const LE: u32 = 0x4000_0000;
    Some(match a {
        ScmpArch::X86 => 3 | LE,
        ScmpArch::X8664 | ScmpArch::X32 => 62 | B64 | LE,
        ScmpArch::Arm => 40 | LE,
        ScmpArch::Aarch64 => 183 | B64 | LE,
        ScmpArch::Mips => 8,
        ScmpArch::Mipsel => 8 | LE,
        ScmpArch::Mips64 => 8 | B64,
        ScmpArch::Mipsel64 => 8 | B64 | LE,
        // N32: the CONVENTION_MIPS64_N32 bit (0x20000000).
        ScmpArch::Mips64N32 => 8 | B64 | 0x2000_0000,
        ScmpArch::Mipsel64N32 => 8 | B64 | LE | 0x2000_0000,
        ScmpArch::Ppc => 20,
        ScmpArch::Ppc64 => 21 | B64,
        ScmpArch::Ppc64Le => 21 | B64 | LE,
        ScmpArch::S390 => 22,
        ScmpArch::S390X => 22 | B64,
        ScmpArch::Riscv64 => 243 | B64 | LE,
        ScmpArch::Loongarch64 => 258 | B64 | LE,
        _ => return None,
    })
}

/// The bit x32 sets in its syscall numbers (`__X32_SYSCALL_BIT`).
const X32_BIT: u32 = 0x4000_0000;

/// Whether runc leaves the filter alone: a permissive default (allow, log,
/// trace: a tracer handles new syscalls itself), or a default that already
/// answers `ENOSYS`.
fn unpatched(s: &LinuxSeccomp) -> bool {
    match s.default_action() {
        A::ScmpActAllow | A::ScmpActLog | A::ScmpActTrace => true,
        A::ScmpActErrno => s.default_errno_ret() == Some(libc::ENOSYS as u32),
        _ => false,
    }
}

/// Per audit architecture, each libseccomp architecture's largest syscall
/// number in the profile.
type Last = BTreeMap<u32, Vec<(ScmpArch, u32)>>;

/// The largest syscall number the profile names, per audit architecture
/// and libseccomp architecture (x86_64 and x32 share one audit value);
/// architectures whose profile names no syscall they have are left out.
fn last_syscalls(s: &LinuxSeccomp) -> Result<Last> {
    let mut arches = vec![ScmpArch::native()];
    for a in s.architectures().iter().flatten() {
        let name = a.to_string();
        let arch: ScmpArch = name
            .parse()
            .map_err(|e| Error::invalid(format!("seccomp: {name}: {e}")))?;
        arches.push(if arch == ScmpArch::Native {
            ScmpArch::native()
        } else {
            arch
        });
    }
    let mut last = Last::new();
    for (i, &arch) in arches.iter().enumerate() {
        if arches[..i].contains(&arch) {
            continue;
        }
        let audit = audit_arch(arch).ok_or_else(|| {
            Error::invalid(format!(
                "seccomp: no -ENOSYS stub for architecture {arch:?} (as runc)"
            ))
        })?;
        let largest = s
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names())
            // Unknown names, and pseudo-syscalls (negative) of names this
            // architecture lacks, do not count.
            .filter_map(|n| ScmpSyscall::from_name_by_arch(n, arch).ok())
            .filter_map(|sc| u32::try_from(sc.as_raw_syscall()).ok())
            .max()
            .unwrap_or(0);
        if largest > 0 {
            last.entry(audit).or_default().push((arch, largest));
        }
    }
    Ok(last)
}

/// Where a conditional jump goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    /// The next instruction.
    Next,
    /// An instruction of the stub, by index.
    At(usize),
    /// The `ENOSYS` return.
    Enosys,
    /// The first instruction of libseccomp's filter.
    Filter,
}

/// One instruction before its jumps are resolved.
#[derive(Debug, Clone, Copy)]
struct Ins {
    code: u16,
    k: u32,
    jt: To,
    jf: To,
}

// The opcodes used (linux/filter.h): a 32-bit load from seccomp_data,
// jumps comparing the accumulator with k, and returning k.
const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET: u16 = 0x06; // BPF_RET | BPF_K

fn load(offset: u32) -> Ins {
    Ins {
        code: LD_ABS,
        k: offset,
        jt: To::Next,
        jf: To::Next,
    }
}

fn jump(code: u16, k: u32, jt: To, jf: To) -> Ins {
    Ins { code, k, jt, jf }
}

/// An unconditional jump (its target goes in `jt` until resolved).
fn always(to: To) -> Ins {
    jump(JA, 0, to, To::Next)
}

/// `nr > max` gets `ENOSYS`, the rest the filter.
fn above(max: Option<u32>) -> Ins {
    match max {
        Some(m) => jump(JGT, m, To::Enosys, To::Filter),
        // x86_64 or x32 not in the profile: the filter decides (libseccomp
        // gives the other ABI its bad-architecture action).
        None => always(To::Filter),
    }
}

// seccomp_data: nr at 0, arch at 4.
const NR: u32 = 0;
const ARCH: u32 = 4;

/// The stub for `last` (see [`last_syscalls`]), jumps unresolved.
fn stub(last: &Last) -> Vec<Ins> {
    let mut p = vec![load(ARCH)];
    for (&audit, abis) in last {
        let head = p.len();
        // Another architecture: on to the next block (patched below).
        p.push(jump(JEQ, audit, To::Next, To::Next));
        p.push(load(NR));
        let max_of = |a: ScmpArch| abis.iter().find(|(x, _)| *x == a).map(|(_, m)| *m);
        if abis
            .iter()
            .any(|(a, _)| matches!(a, ScmpArch::X8664 | ScmpArch::X32))
        {
            let at = p.len();
            p.push(jump(JSET, X32_BIT, To::At(at + 2), To::Next));
            p.push(above(max_of(ScmpArch::X8664)));
            p.push(above(max_of(ScmpArch::X32)));
        } else {
            if abis
                .iter()
                .any(|(a, _)| matches!(a, ScmpArch::S390 | ScmpArch::S390X))
            {
                p.push(jump(JEQ, 0, To::Enosys, To::Next));
            }
            let max = abis.iter().map(|(_, m)| *m).max();
            p.push(above(max));
        }
        let end = p.len();
        p[head].jf = To::At(end);
    }
    // An architecture the profile does not list: the filter's bad-arch action.
    p.push(always(To::Filter));
    p
}

/// Resolves the stub's jumps and puts it in front of `filter`.
fn assemble(stub: &[Ins], filter: &[libc::sock_filter]) -> Result<Vec<libc::sock_filter>> {
    let enosys = stub.len();
    let first = enosys + 1;
    let target = |t: To, at: usize| match t {
        To::Next => at + 1,
        To::At(i) => i,
        To::Enosys => enosys,
        To::Filter => first,
    };
    let mut out = Vec::with_capacity(first + filter.len());
    for (at, ins) in stub.iter().enumerate() {
        let off = |t: To| target(t, at) - (at + 1);
        let short = |t: To| {
            u8::try_from(off(t)).map_err(|_| Error::internal("seccomp: -ENOSYS stub jump too long"))
        };
        out.push(if ins.code == JA {
            libc::sock_filter {
                code: ins.code,
                jt: 0,
                jf: 0,
                k: u32::try_from(off(ins.jt)).unwrap_or(u32::MAX),
            }
        } else {
            libc::sock_filter {
                code: ins.code,
                jt: short(ins.jt)?,
                jf: short(ins.jf)?,
                k: ins.k,
            }
        });
    }
    out.push(libc::sock_filter {
        code: RET,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
    });
    out.extend_from_slice(filter);
    Ok(out)
}

/// `filter` (libseccomp's program for `s`) with runc's stub in front when
/// runc would add one.
pub fn patch(s: &LinuxSeccomp, filter: Vec<libc::sock_filter>) -> Result<Vec<libc::sock_filter>> {
    if unpatched(s) {
        return Ok(filter);
    }
    assemble(&stub(&last_syscalls(s)?), &filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Arch, LinuxSeccompBuilder, LinuxSyscallBuilder};

    fn profile(default: A, arches: Vec<Arch>, names: &[&str]) -> LinuxSeccomp {
        LinuxSeccompBuilder::default()
            .default_action(default)
            .architectures(arches)
            .syscalls(vec![
                LinuxSyscallBuilder::default()
                    .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .action(A::ScmpActAllow)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap()
    }

    #[test]
    fn audit_values_are_the_ones_libseccomp_checks() {
        // libseccomp's own program compares seccomp_data.arch with the
        // same constants: each must appear in a filter for that arch
        // (little-endian ones: libseccomp writes a big-endian arch's
        // program in that arch's byte order).
        for arch in [
            ScmpArch::X86,
            ScmpArch::X8664,
            ScmpArch::X32,
            ScmpArch::Arm,
            ScmpArch::Aarch64,
            ScmpArch::Mipsel,
            ScmpArch::Mipsel64,
            ScmpArch::Mipsel64N32,
            ScmpArch::Ppc64Le,
            ScmpArch::Riscv64,
        ] {
            let mut f = libseccomp::ScmpFilterContext::new(libseccomp::ScmpAction::Allow).unwrap();
            f.remove_arch(ScmpArch::native()).unwrap();
            f.add_arch(arch).unwrap();
            f.add_rule(
                libseccomp::ScmpAction::Errno(1),
                ScmpSyscall::from_name("read").unwrap(),
            )
            .unwrap();
            let prog = super::super::export(&f).unwrap();
            let want = audit_arch(arch).unwrap();
            assert!(
                prog.iter().any(|i| i.k == want && i.code == JEQ),
                "{arch:?}: no check for {want:#x}"
            );
        }
    }

    #[test]
    fn largest_syscall_per_arch_and_x32_apart() {
        let s = profile(
            A::ScmpActErrno,
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
            &["read", "close_range", "no_such_call"],
        );
        let last = last_syscalls(&s).unwrap();
        // close_range is 436 everywhere on x86; x32 numbers carry the bit.
        assert_eq!(
            last[&0xC000_003E],
            vec![(ScmpArch::X8664, 436), (ScmpArch::X32, 436 | X32_BIT)]
        );
        assert_eq!(last[&0x4000_0003], vec![(ScmpArch::X86, 436)]);
        // Permissive defaults, or ENOSYS already: no stub.
        let filter = vec![libc::sock_filter {
            code: 6,
            jt: 0,
            jf: 0,
            k: 0,
        }];
        for (d, errno) in [
            (A::ScmpActAllow, None),
            (A::ScmpActLog, None),
            (A::ScmpActTrace, None),
            (A::ScmpActErrno, Some(38)),
        ] {
            let mut s = profile(d, vec![], &["read"]);
            s.set_default_errno_ret(errno);
            assert_eq!(patch(&s, filter.clone()).unwrap().len(), 1, "{d:?}");
        }
        let s = profile(A::ScmpActKillProcess, vec![], &["read"]);
        assert!(patch(&s, filter).unwrap().len() > 1);
    }

    #[test]
    fn stub_jumps_resolve_to_enosys_or_the_filter() {
        let s = profile(
            A::ScmpActErrno,
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchS390x],
            &["read", "close_range"],
        );
        let filter = vec![
            libc::sock_filter {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: 4,
            };
            3
        ];
        let p = patch(&s, filter).unwrap();
        let enosys = p
            .iter()
            .position(|i| i.k == libc::SECCOMP_RET_ERRNO | 38)
            .unwrap();
        let first = enosys + 1;
        assert_eq!(p.len(), first + 3);
        for (at, i) in p[..enosys].iter().enumerate() {
            if i.code == JA {
                assert_eq!(at + 1 + i.k as usize, first, "ja at {at}");
            } else if i.code & 0x07 == 0x05 {
                // BPF_JMP class: a conditional jump.
                for t in [i.jt, i.jf] {
                    assert!(
                        at + 1 + (t as usize) < first + 1,
                        "jump at {at} leaves the stub"
                    );
                }
            }
        }
    }
}
