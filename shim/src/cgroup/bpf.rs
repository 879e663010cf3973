//! Device rules on cgroup v2: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE`, built from the folded rules
//! ([`super::devices::Emulator`]) as runc's devicefilter builds it, and
//! attached to the container's cgroup directory with `BPF_PROG_ATTACH`
//! (replacing the program attached before, as runc does on update).
//!
//! Hand-written: the program uses nine instruction forms and the loader
//! five `bpf(2)` commands. The Rust eBPF crates load programs compiled to
//! ELF objects (aya, libbpf-rs over libbpf's C library) or are interpreters
//! (rbpf, used by the tests as an independent check of the encoding); none
//! is a small emitter and loader for a program made at run time, which is
//! also why runc itself dropped its eBPF library for raw `bpf(2)` calls.

use super::devices::{Emulator, M, Node, R, RWM, W};
use crate::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// struct bpf_cgroup_dev_ctx's device types and accesses.
const DEVCG_DEV_BLOCK: i32 = 1;
const DEVCG_DEV_CHAR: i32 = 2;
const DEVCG_ACC_MKNOD: i32 = 1;
const DEVCG_ACC_READ: i32 = 2;
const DEVCG_ACC_WRITE: i32 = 4;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

impl Insn {
    /// The 8 bytes the kernel reads (registers in one byte, `dst` in the
    /// low nibble on little-endian hosts, the high one on big-endian).
    pub fn to_bytes(self) -> [u8; 8] {
        let regs = if cfg!(target_endian = "little") {
            (self.src << 4) | (self.dst & 0xf)
        } else {
            (self.dst << 4) | (self.src & 0xf)
        };
        let off = self.off.to_ne_bytes();
        let imm = self.imm.to_ne_bytes();
        [
            self.code, regs, off[0], off[1], imm[0], imm[1], imm[2], imm[3],
        ]
    }
}

/// The program for a folded rule set. The context's first word holds the
/// device type (low 16 bits) and the access (high 16 bits), then major and
/// minor. Each exception is a block that falls through to the next when
/// the device or access does not match and returns its verdict when it
/// does; after the last, the default.
pub fn program(e: &Emulator) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),        // r2 = ctx->access_type
        insn(ALU32_AND_K, 2, 0, 0, 0xffff), // r2 &= 0xffff: the type
        insn(LDX_MEM_W, 3, 1, 0, 0),        // r3 = ctx->access_type
        insn(ALU32_RSH_K, 3, 0, 0, 16),     // r3 >>= 16: the access
        insn(LDX_MEM_W, 4, 1, 4, 0),        // r4 = ctx->major
        insn(LDX_MEM_W, 5, 1, 8, 0),        // r5 = ctx->minor
    ];
    for (meta, access) in &e.exceptions {
        let mut block = Vec::new();
        let ty = match meta.node {
            Node::Block => DEVCG_DEV_BLOCK,
            Node::Char => DEVCG_DEV_CHAR,
        };
        block.push(insn(JNE_K, 2, 0, 0, ty));
        if *access != RWM {
            let mut bits = 0;
            for (ours, theirs) in [
                (R, DEVCG_ACC_READ),
                (W, DEVCG_ACC_WRITE),
                (M, DEVCG_ACC_MKNOD),
            ] {
                if access & ours != 0 {
                    bits |= theirs;
                }
            }
            block.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU32_AND_K, 1, 0, 0, bits));
            if e.default_allow {
                // A deny exception matches any access it names, as v1's
                // kernel reads one (runc's program asks for all of them,
                // so it lets read+write through a write-only deny):
                // (r3 & bits) == 0 skips the block.
                block.push(insn(JEQ_K, 1, 0, 0, 0));
            } else {
                // An allow exception must cover every access asked for:
                // (r3 & bits) != r3 skips the block.
                block.push(insn(JNE_X, 1, 3, 0, 0));
            }
        }
        // Numbers are at most i32::MAX (devices::from_spec).
        if meta.major >= 0 {
            block.push(insn(
                JNE_K,
                4,
                0,
                0,
                i32::try_from(meta.major).unwrap_or(-1),
            ));
        }
        if meta.minor >= 0 {
            block.push(insn(
                JNE_K,
                5,
                0,
                0,
                i32::try_from(meta.minor).unwrap_or(-1),
            ));
        }
        // An exception's verdict is the opposite of the default.
        block.push(insn(ALU32_MOV_K, 0, 0, 0, i32::from(!e.default_allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        // Each jump skips to the end of its block.
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if matches!(ins.code, JEQ_K | JNE_K | JNE_X) {
                ins.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
            }
        }
        p.extend(block);
    }
    p.push(insn(ALU32_MOV_K, 0, 0, 0, i32::from(e.default_allow)));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// The program as the bytes `BPF_PROG_LOAD` takes.
pub fn bytecode(p: &[Insn]) -> Vec<u8> {
    p.iter().flat_map(|i| i.to_bytes()).collect()
}

// bpf(2) commands, the program type, the attach type and flags.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_F_REPLACE: u32 = 4;

/// `bpf(cmd, attr, size)`; a returned descriptor is the caller's.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    let size = libc::c_long::try_from(std::mem::size_of::<T>()).unwrap_or(0);
    loop {
        // SAFETY: attr is a live, writable bpf_attr prefix of `size` bytes;
        // the kernel zero-extends a shorter attr and writes back within it.
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size) };
        if r >= 0 {
            return Ok(r);
        }
        let e = std::io::Error::last_os_error();
        // The verifier may be interrupted by a signal (4.20+).
        if e.raw_os_error() != Some(libc::EAGAIN) || cmd != BPF_PROG_LOAD {
            return Err(e);
        }
    }
}

fn owned(fd: libc::c_long) -> std::io::Result<OwnedFd> {
    let fd =
        i32::try_from(fd).map_err(|_| std::io::Error::other("bpf: descriptor out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_u32(fd: &impl AsRawFd) -> u32 {
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

/// Loads a cgroup device program; a refusal carries the verifier's log.
pub fn load(p: &[Insn]) -> Result<OwnedFd> {
    #[repr(C)]
    struct Load {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
    }
    let code = bytecode(p);
    let license = c"Apache";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = Load {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(p.len()).unwrap_or(u32::MAX),
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
    };
    let first = match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => return owned(fd).map_err(|e| Error::io("load the device cgroup program", e)),
        Err(e) => e,
    };
    // Again with the verifier's log, for the error.
    attr.log_level = 1;
    attr.log_size = u32::try_from(log.len()).unwrap_or(0);
    attr.log_buf = log.as_mut_ptr() as u64;
    if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
        return owned(fd).map_err(|e| Error::io("load the device cgroup program", e));
    }
    let end = log.iter().position(|b| *b == 0).unwrap_or(0);
    let text = String::from_utf8_lossy(&log[..end]);
    Err(Error::io(
        format!(
            "load the device cgroup program (BPF_PROG_LOAD){}{}",
            if text.trim().is_empty() {
                ""
            } else {
                ": verifier: "
            },
            text.trim()
        ),
        first,
    ))
}

/// The device programs attached to a cgroup directory, as descriptors.
pub fn attached(cgroup: &OwnedFd) -> Result<Vec<OwnedFd>> {
    // Up to `revision`: kernels 6.17+ write it whatever the size passed.
    #[repr(C)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    // A cgroup holds at most 64 programs of one attach type.
    let mut ids = vec![0u32; 64];
    let mut q = Query {
        target_fd: fd_u32(cgroup),
        attach_type: BPF_CGROUP_DEVICE,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: u32::try_from(ids.len()).unwrap_or(0),
        _pad: 0,
        prog_attach_flags: 0,
        link_ids: 0,
        link_attach_flags: 0,
        revision: 0,
    };
    bpf(BPF_PROG_QUERY, &mut q).map_err(|e| Error::io("query the cgroup's device programs", e))?;
    let n = usize::try_from(q.prog_cnt).unwrap_or(0).min(ids.len());
    let mut out = Vec::new();
    for &id in &ids[..n] {
        #[repr(C)]
        struct ById {
            id: u32,
        }
        match bpf(BPF_PROG_GET_FD_BY_ID, &mut ById { id }) {
            Ok(fd) => out.push(owned(fd).map_err(|e| Error::io("open a device program", e))?),
            // Gone meanwhile: nothing to replace.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(Error::io(format!("open device program {id}"), e)),
        }
    }
    Ok(out)
}

#[repr(C)]
struct Attach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn attach_raw(cgroup: &OwnedFd, prog: &OwnedFd, replace: Option<&OwnedFd>) -> std::io::Result<()> {
    let mut a = Attach {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI | if replace.is_some() { BPF_F_REPLACE } else { 0 },
        replace_bpf_fd: replace.map_or(0, fd_u32),
    };
    bpf(BPF_PROG_ATTACH, &mut a).map(|_| ())
}

fn detach(cgroup: &OwnedFd, prog: &OwnedFd) -> std::io::Result<()> {
    let mut a = Attach {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_DETACH, &mut a).map(|_| ())
}

/// Makes `e` the device rules of the cgroup at `dir`: its program is
/// attached (multi-attach, so programs of ancestors still apply) and the
/// ones attached before are replaced, atomically when there was one.
pub fn set_device_rules(dir: &Path, e: &Emulator) -> Result<()> {
    let what = |w: &str| format!("{w} for cgroup {}", dir.display());
    let cgroup: OwnedFd = std::fs::File::open(dir)
        .map_err(|err| Error::io(what("open the cgroup directory"), err))?
        .into();
    let old = attached(&cgroup).map_err(|err| err.context(what("device rules")))?;
    let prog = load(&program(e)).map_err(|err| err.context(what("device rules")))?;
    if let [one] = old.as_slice() {
        match attach_raw(&cgroup, &prog, Some(one)) {
            Ok(()) => return Ok(()),
            // No BPF_F_REPLACE (before 5.6): attach, then detach.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {}
            Err(err) => {
                return Err(Error::io(
                    what("replace the device program (BPF_PROG_ATTACH)"),
                    err,
                ));
            }
        }
    }
    attach_raw(&cgroup, &prog, None)
        .map_err(|err| Error::io(what("attach the device program (BPF_PROG_ATTACH)"), err))?;
    for o in &old {
        detach(&cgroup, o).map_err(|err| {
            Error::io(what("detach the old device program (BPF_PROG_DETACH)"), err)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::devices::{Emulator, container_rules, from_spec};
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

    /// The program's verdict for one access, run by rbpf's interpreter
    /// over a `bpf_cgroup_dev_ctx`.
    pub fn verdict(p: &[Insn], ty: i32, access: i32, major: u32, minor: u32) -> u64 {
        let code = bytecode(p);
        let mut ctx = Vec::new();
        ctx.extend_from_slice(&(u32::try_from(ty | (access << 16)).unwrap()).to_ne_bytes());
        ctx.extend_from_slice(&major.to_ne_bytes());
        ctx.extend_from_slice(&minor.to_ne_bytes());
        let vm = rbpf::EbpfVmRaw::new(Some(&code)).unwrap();
        vm.execute_program(&mut ctx).unwrap()
    }

    const C: i32 = DEVCG_DEV_CHAR;
    const B: i32 = DEVCG_DEV_BLOCK;
    const RD: i32 = DEVCG_ACC_READ;
    const WR: i32 = DEVCG_ACC_WRITE;
    const MK: i32 = DEVCG_ACC_MKNOD;

    fn rule(
        allow: bool,
        t: Option<LinuxDeviceType>,
        maj: Option<i64>,
        min: Option<i64>,
        a: &str,
    ) -> oci_spec::runtime::LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).access(a);
        if let Some(t) = t {
            b = b.typ(t);
        }
        if let Some(m) = maj {
            b = b.major(m);
        }
        if let Some(m) = min {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    #[test]
    fn default_program_allows_the_defaults_only() {
        let e = Emulator::from_rules(
            &container_rules(&[rule(false, None, None, None, "rwm")]).unwrap(),
        )
        .unwrap();
        let p = program(&e);
        for (maj, min) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (10, 200),
            (136, 4),
        ] {
            assert_eq!(verdict(&p, C, RD | WR, maj, min), 1, "c {maj}:{min}");
            assert_eq!(verdict(&p, C, RD, maj, min), 1, "c {maj}:{min}");
        }
        // Not listed: denied; mknod of anything: allowed.
        assert_eq!(verdict(&p, C, RD, 1, 11), 0, "kmsg");
        assert_eq!(verdict(&p, B, RD, 8, 0), 0, "a disk");
        assert_eq!(verdict(&p, B, MK, 8, 0), 1, "mknod of a disk");
        assert_eq!(verdict(&p, C, MK, 1, 11), 1, "mknod of kmsg");
        assert_eq!(verdict(&p, C, MK | RD, 1, 11), 0, "mknod and read together");
        // Type matters: block 1:3 is not /dev/null.
        assert_eq!(verdict(&p, B, RD, 1, 3), 0);
    }

    #[test]
    fn allow_all_with_a_denied_device_and_partial_access() {
        let rules = [
            rule(true, None, None, None, "rwm"),
            rule(false, Some(LinuxDeviceType::C), Some(1), Some(11), "w"),
        ]
        .iter()
        .enumerate()
        .map(|(i, d)| from_spec(i, d).unwrap())
        .collect::<Vec<_>>();
        let p = program(&Emulator::from_rules(&rules).unwrap());
        assert_eq!(verdict(&p, C, RD, 1, 11), 1, "reading is not denied");
        assert_eq!(verdict(&p, C, WR, 1, 11), 0);
        assert_eq!(
            verdict(&p, C, RD | WR, 1, 11),
            0,
            "an access the deny covers"
        );
        assert_eq!(verdict(&p, B, RD | WR, 8, 0), 1);
        // Read-only /dev/fuse in an allow-list.
        let rules = container_rules(&[
            rule(false, None, None, None, "rwm"),
            rule(true, Some(LinuxDeviceType::C), Some(10), Some(229), "r"),
        ])
        .unwrap();
        let p = program(&Emulator::from_rules(&rules).unwrap());
        assert_eq!(verdict(&p, C, RD, 10, 229), 1);
        assert_eq!(verdict(&p, C, WR, 10, 229), 0);
        assert_eq!(verdict(&p, C, RD, 10, 228), 0);
    }

    #[test]
    fn encoding_of_the_instruction_forms() {
        // r2 = *(u32 *)(r1 + 0): dst in the low nibble on little-endian.
        let b = insn(LDX_MEM_W, 2, 1, 0, 0).to_bytes();
        if cfg!(target_endian = "little") {
            assert_eq!(b, [0x61, 0x12, 0, 0, 0, 0, 0, 0]);
        }
        let b = insn(JNE_K, 4, 0, 3, 136).to_bytes();
        assert_eq!(b[0], 0x55);
        assert_eq!(i16::from_ne_bytes([b[2], b[3]]), 3);
        assert_eq!(i32::from_ne_bytes([b[4], b[5], b[6], b[7]]), 136);
    }
}
