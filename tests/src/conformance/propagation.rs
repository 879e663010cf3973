//! Conformance of bind mounts' propagation options (`rshared`, `rslave`,
//! `rprivate`, with `linux.rootfsPropagation` as the CRI sets it): what the
//! host mounts under a bind's source once the container runs, and what the
//! container (with CAP_SYS_ADMIN) mounts under the bind, each seen or not
//! from the other side. This is the kubelet's mountPropagation contract, as
//! critest's "Container Mount Propagation" checks it. Also runc's recursive
//! attributes (`rro`, `rnoexec`): a read-only bind whose source has a mount
//! under it leaves that one writable unless `rro` makes it read-only too
//! (critest's "recursive readonly mounts").

use super::hooks::{host_groups, normalise_groups};
use super::{Rt, Suite, both, check, has_line, sh, show};
use nix::mount::{MsFlags, mount};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A host directory whose `mnt` is a mount point bound onto itself and
/// made rshared, as critest makes a hostPath for bidirectional
/// propagation. Dropping it (also when a case fails midway) unmounts
/// whatever is mounted under it, its own, the host's and any that
/// propagated back from a container, and removes it.
struct SharedDir {
    dir: PathBuf,
}

impl SharedDir {
    fn new(dir: PathBuf) -> SharedDir {
        let guard = SharedDir { dir };
        let mnt = guard.mnt();
        std::fs::create_dir_all(&mnt).expect("make the shared directory");
        mount(
            Some(&mnt),
            &mnt,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("bind {} onto itself: {e}", mnt.display()));
        mount(
            None::<&str>,
            &mnt,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("make {} rshared: {e}", mnt.display()));
        guard
    }

    fn mnt(&self) -> PathBuf {
        self.dir.join("mnt")
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        // Mounts stacked on one point go one per pass.
        for _ in 0..8 {
            if mounts_under(&self.dir).is_empty() {
                break;
            }
            crate::guard::unmount_under(&self.dir);
        }
        let left = mounts_under(&self.dir);
        if left.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("propagation: still mounted on the host: {left:?}");
        }
    }
}

/// The host's (this process's) mount points at or under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == d || p.starts_with(&format!("{d}/")))
        .map(str::to_string)
        .collect()
}

/// One bind of the shared directory into a container: its options'
/// propagation and the spec's `linux.rootfsPropagation`, if any.
struct Variant {
    propagation: &'static str,
    rootfs: Option<&'static str>,
}

const VARIANTS: [Variant; 4] = [
    // The CRI's three (Bidirectional, HostToContainer, Private).
    Variant {
        propagation: "rshared",
        rootfs: Some("rshared"),
    },
    Variant {
        propagation: "rslave",
        rootfs: Some("rslave"),
    },
    Variant {
        propagation: "rprivate",
        rootfs: None,
    },
    // The bind's own option on a root left rslave: the container's copy
    // of the host's mount is a slave by then, so the bind is shared among
    // the container's own mounts and still receives from the host.
    Variant {
        propagation: "rshared",
        rootfs: None,
    },
];

/// Where the container sees the shared directory.
const DEST: &str = "/prop";

/// Runs the container of variant `n` and reports: the propagation fields
/// of its bind (peer groups named `host` or `own`), whether a tmpfs the
/// host mounts under the source after the start shows inside, whether the
/// container could mount a tmpfs under the bind, and whether the host sees
/// that one.
fn observe(s: &Suite, rt: Rt, dir: &SharedDir, n: u32, v: &Variant) -> String {
    let id = s.id(rt, n);
    let label = format!(
        "{} bind, rootfsPropagation {}",
        v.propagation,
        v.rootfs.unwrap_or("unset")
    );
    let (from_host, from_ctr) = (format!("host{n}"), format!("ctr{n}"));
    let host_at = dir.mnt().join(&from_host);
    let ctr_at = dir.mnt().join(&from_ctr);
    for d in [&host_at, &ctr_at] {
        std::fs::create_dir_all(d).expect("make a mount point");
    }
    let src = dir.mnt();
    let patch = |spec: &mut Value| {
        let bind = json!({"destination": DEST, "type": "bind", "source": src,
            "options": ["rbind", v.propagation, "rw"]});
        match spec["mounts"].as_array_mut() {
            Some(m) => m.push(bind),
            None => spec["mounts"] = json!([bind]),
        }
        if let Some(p) = v.rootfs {
            spec["linux"]["rootfsPropagation"] = json!(p);
        }
        // What the container needs to mount. critest's is privileged; ctr
        // 1.6 misreads `containers create --privileged IMAGE ID -- CMD`
        // (it took `--` for the id), so the capability goes in here.
        for set in ["bounding", "effective", "permitted"] {
            if let Some(caps) = spec["process"]["capabilities"][set].as_array_mut() {
                caps.push(json!("CAP_SYS_ADMIN"));
            }
        }
    };
    s.create_patched(rt, &id, &[], &["sleep", "120"], &patch);
    let started = s.ctr(&["tasks", "start", "-d", &id]);
    if !started.status.success() {
        s.remove(&id);
        return format!("{label}: start failed\n{}", show(&id, &started));
    }
    let pid = s.task(&id).map_or(0, |(p, _)| p);
    let inside = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    let fields = inside
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&DEST))
        .map(|f| {
            let opt: Vec<&str> = f[6..].iter().take_while(|x| **x != "-").copied().collect();
            let g = normalise_groups(&opt.join(" "), &host_groups());
            if g.is_empty() { "private".into() } else { g }
        })
        .unwrap_or_else(|| "<absent>".into());
    // The host's mount, made after the container started.
    mount(
        Some("tmpfs"),
        &host_at,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap_or_else(|e| panic!("mount a tmpfs on {}: {e}", host_at.display()));
    std::fs::write(host_at.join("made-on-host"), "").expect("write on the host's tmpfs");
    let exec = |eid: &str, script: &str| {
        let mut a = vec!["tasks", "exec", "--exec-id", eid, &id];
        a.extend(sh(script));
        show(&id, &s.ctr(&a))
    };
    let seen_inside = exec("e1", &format!("ls -A {DEST}/{from_host}"));
    let mounted = exec(
        "e2",
        &format!(
            "mount -t tmpfs -o size=1m tmpfs {DEST}/{from_ctr} && touch {DEST}/{from_ctr}/made-in-container && echo mounted"
        ),
    );
    let seen_on_host: Vec<String> = std::fs::read_dir(&ctr_at)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    s.remove(&id);
    let one = |t: &str| t.replace('\n', " ").trim().to_string();
    format!(
        "{label}: {DEST} {fields}\n\
         {label}: host's mount inside: {}\n\
         {label}: container's mount: {}\n\
         {label}: container's mount on the host: [{}]\n",
        one(&seen_inside),
        one(&mounted),
        seen_on_host.join(" ")
    )
}

pub fn bind_propagation(s: &Suite) {
    let obs = both(|rt| {
        let dir = SharedDir::new(s.d.dir.path().join(format!("propagation-{}", rt.name())));
        (1..)
            .zip(&VARIANTS)
            .map(|(n, v)| observe(s, rt, &dir, n, v))
            .collect::<String>()
    });
    check("bind_propagation", &obs, |o| {
        [
            "rshared bind, rootfsPropagation rshared: /prop shared:host",
            "rshared bind, rootfsPropagation rshared: host's mount inside: exit=0 made-on-host",
            "rshared bind, rootfsPropagation rshared: container's mount: exit=0 mounted",
            "rshared bind, rootfsPropagation rshared: container's mount on the host: [made-in-container]",
            "rslave bind, rootfsPropagation rslave: /prop master:host",
            "rslave bind, rootfsPropagation rslave: host's mount inside: exit=0 made-on-host",
            "rslave bind, rootfsPropagation rslave: container's mount: exit=0 mounted",
            "rslave bind, rootfsPropagation rslave: container's mount on the host: []",
            "rprivate bind, rootfsPropagation unset: /prop private",
            "rprivate bind, rootfsPropagation unset: host's mount inside: exit=0",
            "rprivate bind, rootfsPropagation unset: container's mount: exit=0 mounted",
            "rprivate bind, rootfsPropagation unset: container's mount on the host: []",
            "rshared bind, rootfsPropagation unset: /prop shared:own master:host",
            "rshared bind, rootfsPropagation unset: host's mount inside: exit=0 made-on-host",
            "rshared bind, rootfsPropagation unset: container's mount: exit=0 mounted",
            "rshared bind, rootfsPropagation unset: container's mount on the host: []",
        ]
        .iter()
        .filter_map(|l| has_line(o, l))
        .collect()
    });
}

/// The binds of the recursive attributes case: options, and a label.
const RECURSIVE: [(&str, &[&str]); 3] = [
    ("ro", &["rbind", "ro", "rprivate"]),
    ("rro", &["rbind", "ro", "rprivate", "rro"]),
    ("rnoexec", &["rbind", "rprivate", "rnoexec"]),
];

pub fn recursive_attributes(s: &Suite) {
    let obs = both(|rt| {
        // A host directory with a tmpfs mounted under it (SharedDir's
        // guard unmounts it).
        let dir = SharedDir::new(s.d.dir.path().join(format!("recursive-{}", rt.name())));
        let sub = dir.mnt().join("sub");
        std::fs::create_dir_all(&sub).expect("make the submount point");
        mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap_or_else(|e| panic!("mount a tmpfs on {}: {e}", sub.display()));
        let mut out = String::new();
        for (n, (label, options)) in (1..).zip(RECURSIVE) {
            let id = s.id(rt, n);
            let src = dir.mnt();
            let patch = |spec: &mut Value| {
                let bind = json!({"destination": "/b", "type": "bind", "source": src,
                    "options": options});
                match spec["mounts"].as_array_mut() {
                    Some(m) => m.push(bind),
                    None => spec["mounts"] = json!([bind]),
                }
            };
            // Each write reports the error's text or "ok"; the mount
            // options are /proc's for the bind and the submount.
            let script = "for d in /b /b/sub; do \
                  if touch $d/f 2>/dev/null; then w=ok; else w=refused; fi; \
                  o=$(awk -v d=$d '$5 == d {print $6}' /proc/self/mountinfo | tr , '\\n' | grep -xE 'ro|rw|noexec' | sort | tr '\\n' ' '); \
                  echo \"$d write=$w opts=$o\"; done";
            s.create_patched(rt, &id, &[], &sh(script), &patch);
            let ran = s.ctr(&["tasks", "start", &id]);
            for line in show(&id, &ran).lines() {
                out.push_str(&format!("{label}: {}\n", line.trim_end()));
            }
            s.remove(&id);
        }
        out
    });
    check("recursive_attributes", &obs, |o| {
        [
            "ro: /b write=refused opts=ro",
            "ro: /b/sub write=ok opts=rw",
            "rro: /b write=refused opts=ro",
            "rro: /b/sub write=refused opts=ro",
            "rnoexec: /b write=ok opts=noexec rw",
            "rnoexec: /b/sub write=ok opts=noexec rw",
        ]
        .iter()
        .filter_map(|l| has_line(o, l))
        .collect()
    });
}
