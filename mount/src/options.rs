//! The one parser for fstab-style mount options, shared by rootfs mounts
//! (containerd's semantics) and OCI spec mounts (runc's semantics).

use nix::mount::MsFlags;

/// Mount options split into what `mount(2)` takes.
///
/// Later options override earlier ones (`ro,rw` is read-write), as in
/// containerd and runc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags to set on the mount (`ro`, `nosuid`, `bind`, `remount`, …).
    pub flags: MsFlags,
    /// Flags the options explicitly clear (`rw`, `suid`, `atime`, …) and no
    /// later option sets again; a remount that must keep other flags
    /// (runc's "cleared flags") needs these, a fresh mount does not.
    pub clear: MsFlags,
    /// Propagation changes, in option order, each one `mount(2)` call after
    /// the mount itself (the kernel takes one propagation type per call).
    /// Each is one of `MS_PRIVATE`, `MS_SHARED`, `MS_SLAVE`,
    /// `MS_UNBINDABLE`, with `MS_REC` for the `r…` forms.
    pub propagation: Vec<MsFlags>,
    /// Options that are no flag: the filesystem's data string, in order.
    pub data: Vec<String>,
    /// `loop` was given: the source is a file to attach to a loop device
    /// (containerd's meaning); it is not passed on as data.
    pub loop_device: bool,
    /// runc's recursive attributes (`rro`, `rnosuid`, … `rnosymfollow`):
    /// what `mount_setattr(2)` with `AT_RECURSIVE` sets on the mount and
    /// every mount below it, after the mount is made; `None` when no such
    /// option was given.
    pub recursive: Option<RecursiveAttrs>,
}

/// The `mount_attr` of a recursive `mount_setattr(2)`: `MOUNT_ATTR_*` bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecursiveAttrs {
    pub set: u64,
    pub clear: u64,
}

/// `MOUNT_ATTR_*` (linux/mount.h).
pub mod attr {
    pub const RDONLY: u64 = 0x0000_0001;
    pub const NOSUID: u64 = 0x0000_0002;
    pub const NODEV: u64 = 0x0000_0004;
    pub const NOEXEC: u64 = 0x0000_0008;
    /// The atime mode: one of RELATIME (0), NOATIME, STRICTATIME.
    pub const ATIME: u64 = 0x0000_0070;
    pub const RELATIME: u64 = 0x0000_0000;
    pub const NOATIME: u64 = 0x0000_0010;
    pub const STRICTATIME: u64 = 0x0000_0020;
    pub const NODIRATIME: u64 = 0x0000_0080;
    pub const NOSYMFOLLOW: u64 = 0x0020_0000;
}

impl Default for MountOptions {
    /// No flags, no propagation, no data: what no options mean.
    fn default() -> Self {
        Self {
            flags: MsFlags::empty(),
            clear: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            loop_device: false,
            recursive: None,
        }
    }
}

impl MountOptions {
    /// The data string for `mount(2)`: the data options joined by commas.
    pub fn data_string(&self) -> String {
        self.data.join(",")
    }
}

/// What one option does.
enum Effect {
    Set(MsFlags),
    Clear(MsFlags),
    Propagate(MsFlags),
    Loop,
    /// A recursive attribute: set it, or clear it (`true`).
    Recursive(u64, bool),
}

/// The table: the union of runc's `mountFlags`/`mountPropagationMapping`
/// (libcontainer/specconv) and containerd's `parseMountOptions`
/// (mount/mount_linux.go) for the options either of berth's former parsers
/// knew.
fn effect(option: &str) -> Option<Effect> {
    use Effect::*;
    Some(match option {
        "defaults" => Set(MsFlags::empty()),
        "ro" => Set(MsFlags::MS_RDONLY),
        "rw" => Clear(MsFlags::MS_RDONLY),
        "nosuid" => Set(MsFlags::MS_NOSUID),
        "suid" => Clear(MsFlags::MS_NOSUID),
        "nodev" => Set(MsFlags::MS_NODEV),
        "dev" => Clear(MsFlags::MS_NODEV),
        "noexec" => Set(MsFlags::MS_NOEXEC),
        "exec" => Clear(MsFlags::MS_NOEXEC),
        "sync" => Set(MsFlags::MS_SYNCHRONOUS),
        "async" => Clear(MsFlags::MS_SYNCHRONOUS),
        "dirsync" => Set(MsFlags::MS_DIRSYNC),
        "remount" => Set(MsFlags::MS_REMOUNT),
        "mand" => Set(MsFlags::MS_MANDLOCK),
        "nomand" => Clear(MsFlags::MS_MANDLOCK),
        "noatime" => Set(MsFlags::MS_NOATIME),
        "atime" => Clear(MsFlags::MS_NOATIME),
        "nodiratime" => Set(MsFlags::MS_NODIRATIME),
        "diratime" => Clear(MsFlags::MS_NODIRATIME),
        "relatime" => Set(MsFlags::MS_RELATIME),
        "norelatime" => Clear(MsFlags::MS_RELATIME),
        "strictatime" => Set(MsFlags::MS_STRICTATIME),
        "nostrictatime" => Clear(MsFlags::MS_STRICTATIME),
        "bind" => Set(MsFlags::MS_BIND),
        "rbind" => Set(MsFlags::MS_BIND.union(MsFlags::MS_REC)),
        "private" => Propagate(MsFlags::MS_PRIVATE),
        "rprivate" => Propagate(MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
        "shared" => Propagate(MsFlags::MS_SHARED),
        "rshared" => Propagate(MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
        "slave" => Propagate(MsFlags::MS_SLAVE),
        "rslave" => Propagate(MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
        "unbindable" => Propagate(MsFlags::MS_UNBINDABLE),
        "runbindable" => Propagate(MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
        "loop" => Loop,
        // runc's recursive options (libcontainer/specconv), for
        // mount_setattr(2): `r` + the flag name sets it, `r` + its opposite
        // clears it.
        "rro" => Recursive(attr::RDONLY, false),
        "rrw" => Recursive(attr::RDONLY, true),
        "rnosuid" => Recursive(attr::NOSUID, false),
        "rsuid" => Recursive(attr::NOSUID, true),
        "rnodev" => Recursive(attr::NODEV, false),
        "rdev" => Recursive(attr::NODEV, true),
        "rnoexec" => Recursive(attr::NOEXEC, false),
        "rexec" => Recursive(attr::NOEXEC, true),
        "rnodiratime" => Recursive(attr::NODIRATIME, false),
        "rdiratime" => Recursive(attr::NODIRATIME, true),
        "rrelatime" => Recursive(attr::RELATIME, false),
        "rnorelatime" => Recursive(attr::RELATIME, true),
        "rnoatime" => Recursive(attr::NOATIME, false),
        "ratime" => Recursive(attr::NOATIME, true),
        "rstrictatime" => Recursive(attr::STRICTATIME, false),
        "rnostrictatime" => Recursive(attr::STRICTATIME, true),
        "rnosymfollow" => Recursive(attr::NOSYMFOLLOW, false),
        "rsymfollow" => Recursive(attr::NOSYMFOLLOW, true),
        _ => return None,
    })
}

/// Splits fstab-style options into flags to set and clear, propagation
/// changes, `loop`, and the filesystem data options.
///
/// Never fails: an option the table does not know is filesystem data
/// (`lowerdir=…`, `mode=755`, `size=64m`), kept in its original order, for
/// the kernel to judge.
pub fn parse_options<S: AsRef<str>>(options: &[S]) -> MountOptions {
    let mut out = MountOptions::default();
    for o in options {
        let o = o.as_ref();
        match effect(o) {
            Some(Effect::Set(f)) => {
                out.flags |= f;
                out.clear &= !f;
            }
            Some(Effect::Clear(f)) => {
                out.flags &= !f;
                out.clear |= f;
            }
            Some(Effect::Propagate(p)) => out.propagation.push(p),
            Some(Effect::Loop) => out.loop_device = true,
            Some(Effect::Recursive(a, clear)) => {
                let r = out.recursive.get_or_insert_with(RecursiveAttrs::default);
                if clear {
                    r.clear |= a;
                } else {
                    r.set |= a;
                    // An atime mode replaces the others (mount_setattr(2)
                    // wants the whole field cleared to set one).
                    if a & attr::ATIME == a {
                        r.clear |= attr::ATIME;
                    }
                }
            }
            None => out.data.push(o.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: MsFlags = MsFlags::empty();

    #[test]
    fn every_option_alone() {
        // (option, set, clear, propagation)
        let table: &[(&str, MsFlags, MsFlags, MsFlags)] = &[
            ("defaults", NONE, NONE, NONE),
            ("ro", MsFlags::MS_RDONLY, NONE, NONE),
            ("rw", NONE, MsFlags::MS_RDONLY, NONE),
            ("nosuid", MsFlags::MS_NOSUID, NONE, NONE),
            ("suid", NONE, MsFlags::MS_NOSUID, NONE),
            ("nodev", MsFlags::MS_NODEV, NONE, NONE),
            ("dev", NONE, MsFlags::MS_NODEV, NONE),
            ("noexec", MsFlags::MS_NOEXEC, NONE, NONE),
            ("exec", NONE, MsFlags::MS_NOEXEC, NONE),
            ("sync", MsFlags::MS_SYNCHRONOUS, NONE, NONE),
            ("async", NONE, MsFlags::MS_SYNCHRONOUS, NONE),
            ("dirsync", MsFlags::MS_DIRSYNC, NONE, NONE),
            ("remount", MsFlags::MS_REMOUNT, NONE, NONE),
            ("mand", MsFlags::MS_MANDLOCK, NONE, NONE),
            ("nomand", NONE, MsFlags::MS_MANDLOCK, NONE),
            ("noatime", MsFlags::MS_NOATIME, NONE, NONE),
            ("atime", NONE, MsFlags::MS_NOATIME, NONE),
            ("nodiratime", MsFlags::MS_NODIRATIME, NONE, NONE),
            ("diratime", NONE, MsFlags::MS_NODIRATIME, NONE),
            ("relatime", MsFlags::MS_RELATIME, NONE, NONE),
            ("norelatime", NONE, MsFlags::MS_RELATIME, NONE),
            ("strictatime", MsFlags::MS_STRICTATIME, NONE, NONE),
            ("nostrictatime", NONE, MsFlags::MS_STRICTATIME, NONE),
            ("bind", MsFlags::MS_BIND, NONE, NONE),
            ("rbind", MsFlags::MS_BIND.union(MsFlags::MS_REC), NONE, NONE),
            ("private", NONE, NONE, MsFlags::MS_PRIVATE),
            (
                "rprivate",
                NONE,
                NONE,
                MsFlags::MS_PRIVATE.union(MsFlags::MS_REC),
            ),
            ("shared", NONE, NONE, MsFlags::MS_SHARED),
            (
                "rshared",
                NONE,
                NONE,
                MsFlags::MS_SHARED.union(MsFlags::MS_REC),
            ),
            ("slave", NONE, NONE, MsFlags::MS_SLAVE),
            (
                "rslave",
                NONE,
                NONE,
                MsFlags::MS_SLAVE.union(MsFlags::MS_REC),
            ),
            ("unbindable", NONE, NONE, MsFlags::MS_UNBINDABLE),
            (
                "runbindable",
                NONE,
                NONE,
                MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC),
            ),
        ];
        for &(opt, set, clear, prop) in table {
            let got = parse_options(&[opt]);
            let want = MountOptions {
                flags: set,
                clear,
                propagation: if prop.is_empty() { vec![] } else { vec![prop] },
                data: vec![],
                loop_device: false,
                recursive: None,
            };
            assert_eq!(got, want, "option {opt}");
        }
    }

    #[test]
    fn recursive_attributes_as_runc_reads_them() {
        let r = |opts: &[&str]| parse_options(opts).recursive;
        let a = |set, clear| Some(RecursiveAttrs { set, clear });
        assert_eq!(r(&["rbind", "ro", "rprivate"]), None);
        assert_eq!(r(&["rro"]), a(attr::RDONLY, 0));
        assert_eq!(r(&["rrw"]), a(0, attr::RDONLY));
        assert_eq!(
            r(&["rro", "rnosuid", "rnodev", "rnoexec", "rnosymfollow"]),
            a(
                attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC | attr::NOSYMFOLLOW,
                0
            )
        );
        assert_eq!(r(&["rnoatime"]), a(attr::NOATIME, attr::ATIME));
        assert_eq!(r(&["rrelatime"]), a(0, attr::ATIME));
        assert_eq!(r(&["ratime"]), a(0, attr::NOATIME));
        // Not flags, not data: the plain options keep their meaning.
        let o = parse_options(&["rbind", "ro", "rro"]);
        assert_eq!(
            o.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert!(o.data.is_empty());
    }

    #[test]
    fn later_options_win() {
        let o = parse_options(&["ro", "rw"]);
        assert_eq!((o.flags, o.clear), (NONE, MsFlags::MS_RDONLY));
        let o = parse_options(&["rw", "ro"]);
        assert_eq!((o.flags, o.clear), (MsFlags::MS_RDONLY, NONE));
        let o = parse_options(&["nosuid", "nodev", "suid", "noexec", "exec", "noexec"]);
        assert_eq!(
            (o.flags, o.clear),
            (MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, MsFlags::MS_NOSUID)
        );
        let o = parse_options(&["noatime", "atime", "relatime"]);
        assert_eq!(
            (o.flags, o.clear),
            (MsFlags::MS_RELATIME, MsFlags::MS_NOATIME)
        );
    }

    #[test]
    fn data_options_keep_their_order_and_unknown_options_are_data() {
        let o = parse_options(&[
            "index=off",
            "ro",
            "lowerdir=/a:/b",
            "nosuid",
            "upperdir=/u",
            "workdir=/w",
            "volatile",
            "mode=755",
            "no-such-option",
        ]);
        assert_eq!(o.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(
            o.data,
            [
                "index=off",
                "lowerdir=/a:/b",
                "upperdir=/u",
                "workdir=/w",
                "volatile",
                "mode=755",
                "no-such-option"
            ]
        );
        assert_eq!(
            o.data_string(),
            "index=off,lowerdir=/a:/b,upperdir=/u,workdir=/w,volatile,mode=755,no-such-option"
        );
        // Near-misses of flag names are data too: matching is exact.
        let o = parse_options(&["RO", "ro ", "r", "nosuid=1"]);
        assert_eq!(o.flags, NONE);
        assert_eq!(o.data, ["RO", "ro ", "r", "nosuid=1"]);
    }

    #[test]
    fn loop_and_propagation_combinations() {
        let o = parse_options(&["loop", "ro", "rprivate"]);
        assert!(o.loop_device);
        assert_eq!(o.flags, MsFlags::MS_RDONLY);
        assert_eq!(o.propagation, [MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert!(o.data.is_empty());

        // Several propagation changes are applied one by one, in order.
        let o = parse_options(&["rbind", "rprivate", "shared", "rw"]);
        assert!(!o.loop_device);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(o.clear, MsFlags::MS_RDONLY);
        assert_eq!(
            o.propagation,
            [MsFlags::MS_PRIVATE | MsFlags::MS_REC, MsFlags::MS_SHARED]
        );

        // Propagation never leaks into the mount flags.
        let o = parse_options(&["rslave", "runbindable", "bind", "loop", "offset=512"]);
        assert_eq!(o.flags, MsFlags::MS_BIND);
        assert_eq!(
            o.propagation,
            [
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                MsFlags::MS_UNBINDABLE | MsFlags::MS_REC
            ]
        );
        assert!(o.loop_device);
        assert_eq!(o.data, ["offset=512"]);

        let o = parse_options::<&str>(&[]);
        assert_eq!(o, MountOptions::default());
    }
}
