//! Mounts as snapshotters describe them, and performing them: the
//! [`berth_mount`] crate, with this crate's errors, plus [`TempMount`].

use crate::error::{Error, Result};
use std::path::Path;

pub use berth_mount::{Mount, MountOptions, parse_options, private};

impl From<berth_mount::Error> for Error {
    fn from(e: berth_mount::Error) -> Self {
        match e {
            berth_mount::Error::Sys { what, errno } => Error::sys(what, errno),
            berth_mount::Error::Invalid(m) => Error::invalid(m),
            berth_mount::Error::Unsupported(m) => {
                Error::new(berth_proto::errdefs::Kind::Unimplemented, m)
            }
            berth_mount::Error::Internal(m) => Error::internal(m),
        }
    }
}

/// Mounts every mount onto `target`, in order; see [`berth_mount::mount_all`].
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    Ok(berth_mount::mount_all(mounts, target)?)
}

/// Unmounts `target`; see [`berth_mount::unmount`].
pub fn unmount(target: &Path) -> Result<()> {
    Ok(berth_mount::unmount(target)?)
}

/// Mounts on a fresh temporary directory; unmounted and removed on drop,
/// even when the caller fails.
pub struct TempMount {
    dir: Option<tempfile::TempDir>,
}

impl TempMount {
    /// Mounts `mounts` on a new directory under `base` (or the system temp dir).
    pub fn new(mounts: &[Mount], base: Option<&Path>) -> Result<TempMount> {
        let mut b = tempfile::Builder::new();
        let dir = match base {
            Some(p) => {
                // The mounted snapshot must not be reachable by others.
                private::dir(p, private::OWNER_ONLY)
                    .map_err(|e| Error::io(format!("create {}", p.display()), e))?;
                b.prefix("mnt-").tempdir_in(p)
            }
            None => b.prefix("berth-mnt-").tempdir(),
        }
        .map_err(|e| Error::io("create mount point", e))?;
        mount_all(mounts, dir.path())?;
        Ok(TempMount { dir: Some(dir) })
    }

    /// Where the mounts are.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/"), |d| d.path())
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            if let Err(e) = unmount(d.path()) {
                tracing::warn!("{}", e.message());
                // Never delete through a mount that is still there.
                let _ = d.keep();
                return;
            }
            let _ = std::fs::remove_dir(d.path());
        }
    }
}
