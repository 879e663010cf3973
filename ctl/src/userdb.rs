//! `-u USER[:GROUP]` for `run` and `exec`: names and numbers resolved in
//! the container's /etc/passwd and /etc/group, as runc's libcontainer/user
//! does for docker. `run` reads the image's files through a read-only view
//! of its unpacked snapshot, `exec` the running container's through
//! /proc/<pid>/root; both open them with `RESOLVE_IN_ROOT`, so a symlink in
//! the image cannot lead to the host's files.
//!
//! The two files' format is a line of colon-separated fields; parsed here
//! (a few lines) since the crates for it read the host's database only.

use crate::ctx::Ctx;
use crate::error::CtlError;
use crate::image::{Lease, Resolved};
use anyhow::Result;
use berth_proto::client::with_lease;
use berth_proto::services::snapshots::v1 as sapi;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::services::tasks::v1 as tapi;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The credentials a process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// The primary group first, then those /etc/group lists the user in.
    pub additional_gids: Vec<u32>,
}

impl User {
    pub fn json(&self) -> Value {
        json!({"uid": self.uid, "gid": self.gid, "additionalGids": self.additional_gids})
    }
}

/// Resolves `spec` (`USER[:GROUP]`) against the files' text (`None`: the
/// file is absent, so only numbers resolve). Without a group, the user's
/// passwd group and its /etc/group memberships; with one, that group only.
pub fn resolve(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<User, String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users: Vec<Vec<&str>> = records(passwd.unwrap_or_default(), 4);
    let groups: Vec<Vec<&str>> = records(group.unwrap_or_default(), 3);
    let entry = match u.parse::<u32>() {
        Ok(uid) => users.iter().find(|f| f[2].parse() == Ok(uid)),
        Err(_) => Some(
            users
                .iter()
                .find(|f| f[0] == u)
                .ok_or_else(|| format!("no user {u:?} in the container's /etc/passwd"))?,
        ),
    };
    let uid = match entry {
        Some(f) => f[2]
            .parse()
            .map_err(|_| format!("user {u:?} has an invalid uid in /etc/passwd"))?,
        None => u.parse().unwrap_or_default(),
    };
    let name = entry.map(|f| f[0]);
    let (gid, extra) = match g {
        Some(g) => {
            let gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => groups
                    .iter()
                    .find(|f| f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| format!("no group {g:?} in the container's /etc/group"))?,
            };
            (gid, Vec::new())
        }
        None => {
            let gid = entry.and_then(|f| f[3].parse().ok()).unwrap_or(0);
            let member: Vec<u32> = name
                .map(|n| {
                    groups
                        .iter()
                        .filter(|f| {
                            f.get(3)
                                .is_some_and(|m| m.split(',').any(|x| x.trim() == n))
                        })
                        .filter_map(|f| f[2].parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            (gid, member)
        }
    };
    let mut additional_gids = vec![gid];
    for x in extra {
        if !additional_gids.contains(&x) {
            additional_gids.push(x);
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

/// The lines of a passwd or group file with at least `min` fields.
fn records(text: &str, min: usize) -> Vec<Vec<&str>> {
    text.lines()
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

/// Resolves `spec` in the files under `root`, naming `what` (the flag or
/// the image) in the message.
pub fn resolve_in_root(root: &Path, spec: &str, what: &str) -> Result<User> {
    let read = |f: &str| {
        read_in_root(root, f)
            .map_err(|e| CtlError(format!("{what}: read the container's /{f}: {e}")))
    };
    let (passwd, group) = (read("etc/passwd")?, read("etc/group")?);
    resolve(spec, passwd.as_deref(), group.as_deref())
        .map_err(|e| CtlError(format!("{what} {spec:?}: {e}")).into())
}

/// `run`: resolves `-u` (or the image's `User`) in the image and sets the
/// spec's user; nothing to do for root by default. Reads the files through
/// a read-only view of the image's top snapshot, under the run's lease,
/// removed before returning.
pub async fn apply_to_run(
    ctx: &Ctx,
    img: &Resolved,
    lease: &Lease,
    user: Option<&str>,
    spec: &mut Value,
) -> Result<()> {
    let (spec_user, what) = match user {
        Some(u) => (u.to_string(), "--user"),
        None => match img.config["config"]["User"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            Some(u) => (u.to_string(), "the image's user"),
            None => return Ok(()),
        },
    };
    let key = format!("berthctl-user-{}", uuid::Uuid::new_v4().simple());
    let mut sn = SnapshotsClient::new(ctx.ch.clone());
    let mounts = sn
        .view(with_lease(
            ctx.req(sapi::ViewSnapshotRequest {
                snapshotter: ctx.snapshotter.clone(),
                key: key.clone(),
                parent: img.top().to_string(),
                labels: HashMap::new(),
            }),
            &lease.id,
        ))
        .await?
        .into_inner()
        .mounts;
    let resolved = (|| {
        let tmp = tempfile::Builder::new()
            .prefix("berthctl-user-")
            .tempdir()?;
        let mounts: Vec<berth_mount::Mount> = mounts.into_iter().map(Into::into).collect();
        berth_mount::mount_all(&mounts, tmp.path())
            .map_err(|e| CtlError(format!("mount the image to look up {what}: {e}")))?;
        let r = resolve_in_root(tmp.path(), &spec_user, what);
        let _ = berth_mount::unmount(tmp.path());
        r
    })();
    let _ = sn
        .remove(ctx.req(sapi::RemoveSnapshotRequest {
            snapshotter: ctx.snapshotter.clone(),
            key,
        }))
        .await;
    spec["process"]["user"] = resolved?.json();
    Ok(())
}

/// `exec -u`: resolves `spec` in the running container's files (through
/// its init's /proc/<pid>/root).
pub async fn for_exec(ctx: &Ctx, id: &str, spec: &str) -> Result<User> {
    use berth_proto::pb::containerd::v1::types::Status;
    let task = TasksClient::new(ctx.ch.clone())
        .get(ctx.req(tapi::GetRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }))
        .await?
        .into_inner()
        .process
        .unwrap_or_default();
    if task.status != Status::Running as i32 || task.pid == 0 {
        return Err(CtlError(format!("container {id} is not running")).into());
    }
    let pid = task.pid;
    resolve_in_root(Path::new(&format!("/proc/{pid}/root")), spec, "--user")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1::/:/bin/false\n\
                          nobody:x:65534:65534:nobody:/home:/bin/false\nweb:x:1000:1000::/srv:/bin/sh\n";
    const GROUP: &str = "root:x:0:\ndaemon:x:1:\nwheel:x:10:root,web\nnogroup:x:65533:\n\
                         nobody:x:65534:\nweb:x:1000:\nlog:x:20:daemon, web\n";

    fn r(spec: &str) -> Result<User, String> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn names_and_numbers_resolve_like_runc() {
        assert_eq!(
            r("nobody").unwrap(),
            User {
                uid: 65534,
                gid: 65534,
                additional_gids: vec![65534]
            }
        );
        assert_eq!(
            r("web").unwrap(),
            User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![1000, 10, 20]
            }
        );
        assert_eq!(
            r("web:nogroup").unwrap(),
            User {
                uid: 1000,
                gid: 65533,
                additional_gids: vec![65533]
            }
        );
        assert_eq!(r("1000").unwrap().gid, 1000);
        assert_eq!(r("1000").unwrap().additional_gids, [1000, 10, 20]);
        assert_eq!(
            r("4242").unwrap(),
            User {
                uid: 4242,
                gid: 0,
                additional_gids: vec![0]
            }
        );
        assert_eq!(
            r("4242:7").unwrap(),
            User {
                uid: 4242,
                gid: 7,
                additional_gids: vec![7]
            }
        );
        assert_eq!(r("nobody:0").unwrap().gid, 0);
        assert!(r("ghost").unwrap_err().contains("no user \"ghost\""));
        assert!(r("web:ghosts").unwrap_err().contains("no group \"ghosts\""));
        // Without the files only numbers resolve.
        assert_eq!(resolve("5:6", None, None).unwrap().uid, 5);
        assert!(resolve("nobody", None, None).is_err());
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
        let e = resolve_in_root(d.path(), "ghost", "--user")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--user \"ghost\": no user"), "{e}");
    }
}
