//! `-u USER[:GROUP]` for `run` and `exec`: names and numbers resolved in
//! the container's /etc/passwd and /etc/group, as runc's libcontainer/user
//! does for docker. `run` reads the image's files through a read-only view
//! of its unpacked snapshot, `exec` the running container's through
//! /proc/<pid>/root; both open them with `RESOLVE_IN_ROOT`, so a symlink in
//! the image cannot lead to the host's files.
//!
//! The parsing and the reading are `berth_proto::userdb`'s, shared with
//! berthd's CRI.

use crate::ctx::Ctx;
use crate::error::CtlError;
use crate::image::{Lease, Resolved};
use anyhow::Result;
use berth_proto::client::with_lease;
use berth_proto::services::snapshots::v1 as sapi;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::services::tasks::v1 as tapi;
use berth_proto::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::userdb::{Groups, User, read_in_root, resolve};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// Resolves `spec` in the files under `root`, naming `what` (the flag or
/// the image) in the message.
pub fn resolve_in_root(root: &Path, spec: &str, what: &str) -> Result<User> {
    let read = |f: &str| {
        read_in_root(root, f)
            .map_err(|e| CtlError(format!("{what}: read the container's /{f}: {e}")))
    };
    let (passwd, group) = (read("etc/passwd")?, read("etc/group")?);
    resolve(spec, passwd.as_deref(), group.as_deref(), Groups::Runc)
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
    spec["process"]["user"] = serde_json::to_value(resolved?)?;
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

    #[test]
    fn messages_name_the_flag_and_the_user() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "web:x:1000:1000::/:/bin/sh\n").unwrap();
        let e = resolve_in_root(d.path(), "ghost", "--user")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--user \"ghost\": no user"), "{e}");
        let u = resolve_in_root(d.path(), "web:7", "the image's user").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1000, 7, vec![7]));
    }
}
