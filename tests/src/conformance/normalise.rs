//! Normalising what a container reports, so that the observations of two
//! runtimes compare equal exactly when a program in the container could
//! not tell them apart: numbers the kernel hands out per instance (mount
//! ids, device numbers of anonymous filesystems, snapshot paths) go, what a
//! program acts on (mount points, types, flags, options) stays.

use std::collections::HashMap;
use std::process::Output;

/// The exit status of a command: its code, or `signal N`.
pub fn code(out: &Output) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (out.status.code(), out.status.signal()) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => format!("signal {s}"),
        _ => "?".into(),
    }
}

/// `/proc/self/mountinfo`, one line per mount, sorted by mount point:
/// `<point> on <parent point> root=<root> <type> <source> <per-mount
/// options> | <superblock options>`. Dropped: mount and parent ids (the
/// parent is named by its point), `major:minor` (anonymous device numbers
/// differ per mount), optional fields (peer group numbers), and the
/// overlay rootfs's lowerdir/upperdir/workdir paths (the snapshot's
/// directories, which differ per container). Sorting drops the order in
/// which the runtime made sibling mounts (runc makes readonly paths before
/// masked ones), which no program in the container can act on: none of
/// them overlaps another.
pub fn mountinfo(text: &str) -> String {
    struct M<'a> {
        id: &'a str,
        parent: &'a str,
        root: &'a str,
        point: &'a str,
        opts: &'a str,
        fstype: &'a str,
        source: &'a str,
        sopts: String,
    }
    let mounts: Vec<M> = text
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let g: Vec<&str> = post.split(' ').collect();
            if f.len() < 6 || g.len() < 3 {
                return None;
            }
            let sopts = g[2]
                .split(',')
                .map(|o| match o.split_once('=') {
                    Some((k, _)) if ["lowerdir", "upperdir", "workdir"].contains(&k) => {
                        format!("{k}=<snapshot>")
                    }
                    _ => o.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",");
            Some(M {
                id: f[0],
                parent: f[1],
                root: f[3],
                point: f[4],
                opts: f[5],
                fstype: g[0],
                source: g[1],
                sopts,
            })
        })
        .collect();
    let points: HashMap<&str, &str> = mounts.iter().map(|m| (m.id, m.point)).collect();
    let mut lines: Vec<String> = mounts
        .iter()
        .map(|m| {
            format!(
                "{} on {} root={} {} {} {} | {}",
                m.point,
                points.get(m.parent).copied().unwrap_or("<outside>"),
                m.root,
                m.fstype,
                m.source,
                m.opts,
                m.sopts
            )
        })
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

/// A line diff of two observations: lines only in the first (`-`, the
/// built-in runtime's) and only in the second (`+`, runc's), in order.
pub fn diff(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // Longest common subsequence; observations are a few hundred lines.
    let mut t = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            t[i][j] = if a[i] == b[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || t[i][j + 1] >= t[i + 1][j]) {
            out.push_str(&format!("  + runc:     {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("  - built-in: {}\n", a[i]));
            i += 1;
        }
    }
    out
}

/// Replaces the value of each `key=value` token whose key is in `keys`
/// (e.g. pids a runtime hands out) by `<key>`.
pub fn mask_values(text: &str, keys: &[&str]) -> String {
    text.lines()
        .map(|l| {
            l.split(' ')
                .map(|w| match w.split_once('=') {
                    Some((k, _)) if keys.contains(&k) => format!("{k}=<{k}>"),
                    _ => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_names_parents_and_drops_instance_numbers() {
        let m = "71 48 0:40 / / rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c\n\
                 73 71 0:44 / /dev rw,nosuid shared:5 - tmpfs tmpfs rw,mode=755\n\
                 72 71 0:43 / /proc rw,nosuid - proc proc rw\n";
        assert_eq!(
            mountinfo(m),
            "/ on <outside> root=/ overlay overlay rw,relatime | rw,lowerdir=<snapshot>,upperdir=<snapshot>,workdir=<snapshot>\n\
             /dev on / root=/ tmpfs tmpfs rw,nosuid | rw,mode=755\n\
             /proc on / root=/ proc proc rw,nosuid | rw\n"
        );
    }

    #[test]
    fn diff_shows_only_what_differs() {
        assert_eq!(
            diff("a\nb\nc\n", "a\nx\nc\n"),
            "  + runc:     x\n  - built-in: b\n"
        );
        assert_eq!(diff("a\n", "a\n"), "");
    }

    #[test]
    fn masks_values_by_key() {
        assert_eq!(mask_values("pid=7 x=1\n", &["pid"]), "pid=<pid> x=1\n");
    }
}
