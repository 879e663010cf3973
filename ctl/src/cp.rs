//! `berthctl cp`, docker's grammar: `cp CONTAINER:SRC DEST` and `cp SRC
//! CONTAINER:DEST`. A running (or created) container is reached through
//! `/proc/<pid>/root`, so its volumes are included; a stopped one through
//! its snapshot, mounted in a temporary directory for the copy. Either way
//! [`crate::rootfs`] keeps every path inside the container's root.

use crate::cli::CpArgs;
use crate::ctx::Ctx;
use crate::error::CtlError;
use crate::ps::{get_container, get_task};
use crate::rootfs::{Kind, Root, split};
use anyhow::{Result, bail};
use berth_proto::pb::containerd::v1::types::Status;
use berth_proto::services::snapshots::v1 as sapi;
use berth_proto::services::snapshots::v1::snapshots_client::SnapshotsClient;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
pub enum Side {
    Host(String),
    Container { name: String, path: String },
}

/// docker's rule: `NAME:PATH` names a container unless the argument is
/// plainly a local path (absolute, or starting with `.`).
pub fn side(arg: &str) -> Side {
    if arg.starts_with('/') || arg.starts_with('.') {
        return Side::Host(arg.into());
    }
    match arg.split_once(':') {
        Some((name, path)) if !name.contains('/') => Side::Container {
            name: name.into(),
            path: path.into(),
        },
        _ => Side::Host(arg.into()),
    }
}

/// Checks the two sides: exactly one in a container, paths not empty.
pub fn sides(src: &str, dest: &str) -> Result<(Side, Side), CtlError> {
    if src == "-" || dest == "-" {
        return Err(CtlError(
            "cp with - (a tar stream on stdin/stdout) is not supported: copy to or from a path"
                .into(),
        ));
    }
    let (s, d) = (side(src), side(dest));
    for x in [&s, &d] {
        match x {
            Side::Container { name, path } if name.is_empty() || path.is_empty() => {
                return Err(CtlError(format!(
                    "{}: give CONTAINER:PATH with both parts",
                    if x == &s { src } else { dest }
                )));
            }
            Side::Host(p) if p.is_empty() => {
                return Err(CtlError("a host path must not be empty".into()));
            }
            _ => {}
        }
    }
    match (&s, &d) {
        (Side::Container { .. }, Side::Container { .. }) => Err(CtlError(
            "copying between containers is not supported: copy to the host first".into(),
        )),
        (Side::Host(_), Side::Host(_)) => Err(CtlError(
            "one of SRC and DEST must be CONTAINER:PATH (e.g. berthctl cp web:/etc/hosts .)".into(),
        )),
        _ => Ok((s, d)),
    }
}

/// A snapshot mounted for the copy; unmounted (and its directory removed)
/// when dropped, also after a failed copy.
struct Mounted {
    dir: Option<tempfile::TempDir>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            match berth_mount::unmount(d.path()) {
                Ok(()) => drop(d),
                Err(e) => {
                    // Never remove a directory that may still show the
                    // container's files.
                    eprintln!("berthctl: unmount {}: {e}", d.path().display());
                    let _ = d.keep();
                }
            }
        }
    }
}

/// The container's root, and what keeps it mounted while in use.
async fn container_root(ctx: &Ctx, name: &str) -> Result<(Root, Option<Mounted>)> {
    let c = get_container(ctx, name).await?;
    let task = get_task(ctx, name).await?;
    if let Some(t) = task.filter(|t| t.pid > 0 && t.status != Status::Stopped as i32) {
        let dir = PathBuf::from(format!("/proc/{}/root", t.pid));
        return Ok((Root::open(&dir).map_err(|e| CtlError(e.to_string()))?, None));
    }
    if c.snapshot_key.is_empty() {
        bail!(CtlError(format!(
            "container {name} has no root file system snapshot"
        )));
    }
    let mounts = SnapshotsClient::new(ctx.ch.clone())
        .mounts(ctx.req(sapi::MountsRequest {
            snapshotter: c.snapshotter.clone(),
            key: c.snapshot_key.clone(),
        }))
        .await?
        .into_inner()
        .mounts;
    let dir = tempfile::Builder::new().prefix("berthctl-cp-").tempdir()?;
    let mounts: Vec<berth_mount::Mount> = mounts.into_iter().map(Into::into).collect();
    berth_mount::mount_all(&mounts, dir.path())
        .map_err(|e| CtlError(format!("mount the snapshot of {name}: {e}")))?;
    let guard = Mounted { dir: Some(dir) };
    let path = guard
        .dir
        .as_ref()
        .map(|d| d.path().to_path_buf())
        .unwrap_or_default();
    Ok((
        Root::open(&path).map_err(|e| CtlError(e.to_string()))?,
        Some(guard),
    ))
}

pub(crate) async fn run(ctx: &Ctx, a: CpArgs) -> Result<()> {
    let (s, d) = sides(&a.src, &a.dest)?;
    match (s, d) {
        (Side::Container { name, path }, Side::Host(dest)) => {
            let (root, guard) = container_root(ctx, &name).await?;
            let r = tokio::task::block_in_place(|| copy_out(&root, &name, &path, Path::new(&dest)));
            drop(guard);
            r
        }
        (Side::Host(src), Side::Container { name, path }) => {
            let (root, guard) = container_root(ctx, &name).await?;
            let r = tokio::task::block_in_place(|| copy_in(&root, Path::new(&src), &path));
            drop(guard);
            r
        }
        _ => unreachable!("sides() admits one container side"),
    }
}

/// Whether a path asks for a directory's contents (`dir/.`) or the root.
fn wants_contents(p: &str) -> bool {
    p.ends_with("/.") || p.trim_end_matches('/').is_empty()
}

fn copy_out(root: &Root, name: &str, src: &str, dest: &Path) -> Result<()> {
    let err = |e: crate::rootfs::CopyError| CtlError(e.to_string());
    let kind = root.kind(src).map_err(err)?;
    if matches!(kind, Kind::Missing) {
        bail!(CtlError(format!(
            "no such file or directory in {name}: {src}"
        )));
    }
    let src_dir = matches!(kind, Kind::Dir);
    let dest_s = dest.to_string_lossy();
    let target = match std::fs::metadata(dest) {
        Ok(m) if m.is_dir() => {
            if wants_contents(src) {
                dest.to_path_buf()
            } else {
                dest.join(split(src).1)
            }
        }
        Ok(_) if src_dir => bail!(CtlError(format!(
            "cannot copy directory {name}:{src} to file {dest_s}"
        ))),
        Ok(_) => dest.to_path_buf(),
        Err(_) if dest_s.ends_with('/') && !src_dir => bail!(CtlError(format!(
            "destination directory {dest_s} does not exist"
        ))),
        Err(_) => {
            let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
            if parent.is_some_and(|p| !p.is_dir()) {
                bail!(CtlError(format!(
                    "destination directory {} does not exist",
                    parent.unwrap_or(Path::new(".")).display()
                )));
            }
            dest.to_path_buf()
        }
    };
    let src = if wants_contents(src) && src.trim_end_matches('/').is_empty() {
        "/."
    } else {
        src
    };
    root.copy_out(src, &target).map_err(err)?;
    Ok(())
}

fn copy_in(root: &Root, src: &Path, dest: &str) -> Result<()> {
    let err = |e: crate::rootfs::CopyError| CtlError(e.to_string());
    let m =
        std::fs::symlink_metadata(src).map_err(|e| CtlError(format!("{}: {e}", src.display())))?;
    let src_s = src.to_string_lossy();
    match root.kind(dest).map_err(err)? {
        Kind::Dir if wants_contents(&src_s) && m.is_dir() => {
            for e in std::fs::read_dir(src)? {
                let e = e?;
                root.copy_in(&e.path(), dest, &e.file_name()).map_err(err)?;
            }
        }
        Kind::Dir => {
            let base = src
                .file_name()
                .ok_or_else(|| CtlError(format!("{src_s}: cannot tell its name")))?;
            root.copy_in(src, dest, base).map_err(err)?;
        }
        Kind::Other if m.is_dir() => bail!(CtlError(format!(
            "cannot copy directory {src_s} to a file: {dest}"
        ))),
        Kind::Missing if dest.ends_with('/') && !m.is_dir() => bail!(CtlError(format!(
            "destination directory {dest} does not exist in the container"
        ))),
        Kind::Other | Kind::Missing => {
            let (parent, name) = split(dest);
            root.copy_in(src, &parent, OsStr::new(&name))
                .map_err(|e| CtlError(format!("{e} (does the destination's directory exist?)")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, path: &str) -> Side {
        Side::Container {
            name: name.into(),
            path: path.into(),
        }
    }

    #[test]
    fn sides_as_docker_reads_them() {
        assert_eq!(side("web:/etc"), c("web", "/etc"));
        assert_eq!(side("./a:b"), Side::Host("./a:b".into()));
        assert_eq!(side("/tmp/a:b"), Side::Host("/tmp/a:b".into()));
        assert_eq!(side("dir/a:b"), Side::Host("dir/a:b".into()));
        assert_eq!(side("file"), Side::Host("file".into()));
        assert!(sides("web:/a", "db:/b").is_err());
        assert!(sides("a", "b").unwrap_err().0.contains("CONTAINER:PATH"));
        assert!(sides("web:", "b").unwrap_err().0.contains("both parts"));
        assert!(
            sides("-", "web:/x")
                .unwrap_err()
                .0
                .contains("not supported")
        );
        assert!(sides("web:/a", ".").is_ok());
    }

    #[test]
    fn contents_paths() {
        assert!(wants_contents("/a/."));
        assert!(wants_contents("/"));
        assert!(!wants_contents("/a"));
    }
}
