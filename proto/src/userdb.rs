//! `USER[:GROUP]` resolved in a container's /etc/passwd and /etc/group,
//! shared by `berthctl run/exec -u` (runc's rules) and berthd's CRI
//! (containerd's), and the files read inside a root so that a symlink in
//! an image cannot lead to the host's.
//!
//! The two files' format is a line of colon-separated fields; parsed here
//! (a few lines) since the crates for it read the host's database only.

use serde::Serialize;
use std::io::Read;
use std::path::Path;

/// The credentials a process runs with, shaped as the OCI spec's
/// `process.user` (without `umask` and `username`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// The primary group first (see [`Groups`] for the order).
    pub additional_gids: Vec<u32>,
}

/// Why a user does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("no user {0:?} in the container's /etc/passwd")]
    NoUser(String),
    #[error("user {0:?} has an invalid uid in the container's /etc/passwd")]
    InvalidUid(String),
    #[error("no group {0:?} in the container's /etc/group")]
    NoGroup(String),
}

/// Whose rules give the additional groups; the two differ, and each
/// caller keeps its reference's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Groups {
    /// runc's `GetExecUser` (docker's `-u`): a group given is the only
    /// one; without one, the user's primary group then every group that
    /// lists the user, in file order.
    Runc,
    /// containerd's CRI (`WithUser` + `WithAdditionalGIDs`): the primary
    /// gid (the group given, else the user's) and, whatever the group part
    /// says, every group listing the user by name except one named as the
    /// user; sorted.
    Cri,
    /// containerd's CRI with `SupplementalGroupsPolicy` Strict: the primary
    /// gid only, no memberships from /etc/group.
    CriStrict,
}

/// Resolves `spec` (`USER[:GROUP]`, names or numbers) against the files'
/// text (`None`: the file is absent, so only numbers resolve). A uid not in
/// /etc/passwd runs with gid 0 and no memberships.
pub fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
    rules: Groups,
) -> Result<User, UserError> {
    let users = records(passwd, 4);
    let groups = records(group, 3);
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, entry) = match u.parse::<u32>() {
        Ok(uid) => (uid, users.iter().find(|f| f[2].parse() == Ok(uid))),
        Err(_) => {
            let f = users
                .iter()
                .find(|f| f[0] == u)
                .ok_or_else(|| UserError::NoUser(u.into()))?;
            let uid = f[2].parse().map_err(|_| UserError::InvalidUid(u.into()))?;
            (uid, Some(f))
        }
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| UserError::NoGroup(g.into()))?,
        },
        None => entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    let name = entry.map(|f| f[0]);
    // The groups whose member list names the user.
    let member = |f: &&Vec<&str>| {
        name.is_some_and(|n| {
            f.get(3)
                .is_some_and(|m| m.split(',').any(|x| x.trim() == n))
        })
    };
    let mut additional_gids = vec![gid];
    match rules {
        Groups::Runc if g.is_none() => {
            for x in groups
                .iter()
                .filter(member)
                .filter_map(|f| f[2].parse().ok())
            {
                if !additional_gids.contains(&x) {
                    additional_gids.push(x);
                }
            }
        }
        Groups::Runc | Groups::CriStrict => {}
        Groups::Cri => {
            additional_gids.extend(
                groups
                    .iter()
                    .filter(member)
                    .filter(|f| Some(f[0]) != name)
                    .filter_map(|f| f[2].parse::<u32>().ok()),
            );
            additional_gids.sort_unstable();
            additional_gids.dedup();
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

/// The lines of a passwd or group file with at least `min` fields.
fn records(text: Option<&str>, min: usize) -> Vec<Vec<&str>> {
    text.unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= min)
        .collect()
}

/// Reads `rel` (e.g. `etc/passwd`) inside `root` with every symlink
/// resolved within it; `None` when it does not exist.
pub fn read_in_root(root: &Path, rel: &str) -> std::io::Result<Option<String>> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
    use nix::sys::stat::Mode;
    let dir = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(&dir, rel, how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut s = String::new();
    // Bounded: a hostile image's "passwd" could be anything.
    std::fs::File::from(fd)
        .take(16 << 20)
        .read_to_string(&mut s)?;
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1::/:/bin/false\n\
                          nobody:x:65534:65534:nobody:/home:/bin/false\nweb:x:1000:1000::/srv:/bin/sh\n";
    const GROUP: &str = "root:x:0:\ndaemon:x:1:\nwheel:x:10:root,web\nnogroup:x:65533:\n\
                         nobody:x:65534:\nweb:x:1000:web\nlog:x:20:daemon, web\naudio:x:29:other\n";

    fn user(uid: u32, gid: u32, additional_gids: &[u32]) -> User {
        User {
            uid,
            gid,
            additional_gids: additional_gids.to_vec(),
        }
    }

    #[test]
    fn runc_rules() {
        let r = |spec: &str| resolve(spec, Some(PASSWD), Some(GROUP), Groups::Runc);
        assert_eq!(r("nobody").unwrap(), user(65534, 65534, &[65534]));
        // File order; the group named as the user counts (its gid is the
        // primary one here, so it is not repeated).
        assert_eq!(r("web").unwrap(), user(1000, 1000, &[1000, 10, 20]));
        assert_eq!(r("1000").unwrap(), user(1000, 1000, &[1000, 10, 20]));
        // A group given is the only one.
        assert_eq!(r("web:nogroup").unwrap(), user(1000, 65533, &[65533]));
        assert_eq!(r("4242").unwrap(), user(4242, 0, &[0]));
        assert_eq!(r("4242:7").unwrap(), user(4242, 7, &[7]));
        assert_eq!(r("nobody:0").unwrap().gid, 0);
        assert_eq!(r("ghost").unwrap_err(), UserError::NoUser("ghost".into()));
        assert_eq!(
            r("web:ghosts").unwrap_err(),
            UserError::NoGroup("ghosts".into())
        );
        // Without the files only numbers resolve.
        assert_eq!(resolve("5:6", None, None, Groups::Runc).unwrap().uid, 5);
        assert!(resolve("nobody", None, None, Groups::Runc).is_err());
    }

    #[test]
    fn cri_rules() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1001::/srv:/bin/sh\n";
        let r = |spec: &str| resolve(spec, Some(passwd), Some(GROUP), Groups::Cri);
        // Sorted; "web" (gid 1000) lists web but is named as the user.
        assert_eq!(r("web").unwrap(), user(1000, 1001, &[10, 20, 1001]));
        // Memberships come from the user's name even with a group given.
        assert_eq!(r("1000:29").unwrap(), user(1000, 29, &[10, 20, 29]));
        assert_eq!(r("1000:audio").unwrap().gid, 29);
        assert_eq!(r("4242").unwrap(), user(4242, 0, &[0]));
        // Strict: no memberships from the image's /etc/group.
        let strict = |spec: &str| resolve(spec, Some(passwd), Some(GROUP), Groups::CriStrict);
        assert_eq!(strict("web").unwrap(), user(1000, 1001, &[1001]));
        assert_eq!(strict("1000:29").unwrap(), user(1000, 29, &[29]));
        assert!(r("ghost").is_err());
        assert!(r("web:ghosts").is_err());
        assert_eq!(resolve("7:8", None, None, Groups::Cri).unwrap().gid, 8);
    }

    #[test]
    fn an_invalid_uid_is_refused_by_name_only() {
        let passwd = "bad:x:nope:0::/:/bin/sh\n";
        assert_eq!(
            resolve("bad", Some(passwd), None, Groups::Runc).unwrap_err(),
            UserError::InvalidUid("bad".into())
        );
        assert_eq!(
            resolve("0", Some(passwd), None, Groups::Cri).unwrap().uid,
            0
        );
    }

    #[test]
    fn users_serialize_as_the_spec_user() {
        assert_eq!(
            serde_json::to_value(user(1, 2, &[2, 3])).unwrap(),
            serde_json::json!({"uid": 1, "gid": 2, "additionalGids": [2, 3]})
        );
    }

    #[test]
    fn files_are_read_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/group"), GROUP).unwrap();
        // An absolute symlink resolves inside the root, not on the host.
        std::os::unix::fs::symlink("/etc/group", d.path().join("etc/passwd")).unwrap();
        assert_eq!(
            read_in_root(d.path(), "etc/passwd").unwrap().as_deref(),
            Some(GROUP)
        );
        assert_eq!(read_in_root(d.path(), "etc/shadow").unwrap(), None);
        assert_eq!(read_in_root(d.path(), "etc/group/x").unwrap(), None);
    }
}
