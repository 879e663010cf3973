//! Directory-backed snapshotters: the shared machinery, and the overlayfs
//! layout. Each snapshot owns `<root>/snapshots/<id>/fs` (and `work` for
//! overlay); metadata lives in `<root>/metadata.redb`.

use crate::contract::{GID_MAPPING, Info, Kind, Labels, Snapshotter, UID_MAPPING, Usage};
use crate::error::{Error, Result};
use crate::fsutil::disk_usage;
use crate::mount::Mount;
use crate::mount::private;
use crate::storage::Store;
use berth_proto::errdefs::Kind as ErrKind;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How a directory snapshotter lays out and mounts its snapshots.
pub trait Layout: Send + Sync + 'static {
    /// Name for messages and the proxy.
    fn name(&self) -> &'static str;
    /// Fills a new snapshot directory (`fs` exists, empty) given its
    /// parents' `fs` directories, nearest first.
    fn populate(&self, dir: &Path, parents: &[PathBuf]) -> Result<()>;
    /// The mounts of an active snapshot or view.
    fn mounts(&self, kind: Kind, dir: &Path, parents: &[PathBuf]) -> Vec<Mount>;
    /// Usage of the snapshot's own changes.
    fn usage(&self, dir: &Path, parents: &[PathBuf]) -> Result<Usage>;
}

/// A snapshotter keeping each snapshot in a directory.
pub struct Dirs<L: Layout> {
    root: PathBuf,
    store: Store,
    layout: L,
}

impl<L: Layout> Dirs<L> {
    /// Opens (creating) a snapshotter rooted at `root`.
    pub fn with_layout(root: &Path, layout: L) -> Result<Self> {
        // Others can neither list snapshots nor reach their contents.
        for d in [root.to_path_buf(), root.join("snapshots")] {
            private::dir(&d, private::OWNER_ONLY)
                .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        let store = Store::open(&root.join("metadata.redb"))?;
        Ok(Self {
            root: root.to_path_buf(),
            store,
            layout,
        })
    }

    /// Root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    fn fs_dirs(&self, ids: &[u64]) -> Vec<PathBuf> {
        ids.iter().map(|i| self.dir(*i).join("fs")).collect()
    }

    fn create(&self, key: &str, parent: &str, kind: Kind, labels: Labels) -> Result<Vec<Mount>> {
        // Shifting ownership would mean chown-copying every parent (or
        // idmapped mounts); until then the container would get a tree its
        // remapped root cannot write, so say so instead.
        if let Some(l) = [UID_MAPPING, GID_MAPPING]
            .into_iter()
            .find(|l| labels.contains_key(*l))
        {
            return Err(Error::new(
                ErrKind::Unimplemented,
                format!(
                    "snapshotter {} does not remap ids (label {l}): drop --remap-labels; `ctr run --uidmap/--gidmap` alone remaps a copy of the snapshot",
                    self.layout.name()
                ),
            ));
        }
        let tmp = tempfile::Builder::new()
            .prefix("new-")
            .tempdir_in(self.root.join("snapshots"))
            .map_err(|e| Error::io("create snapshot directory", e))?;
        let tmp_path = tmp.path().to_path_buf();
        fs::set_permissions(&tmp_path, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("chmod snapshot directory", e))?;
        fs::create_dir(tmp_path.join("fs")).map_err(|e| Error::io("create fs", e))?;
        fs::set_permissions(tmp_path.join("fs"), fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod fs", e))?;
        self.store.create(key, parent, kind, labels, |id, ids| {
            let parents = self.fs_dirs(ids);
            self.layout
                .populate(&tmp_path, &parents)
                .map_err(|e| e.context(format!("prepare {key:?}")))?;
            let dst = self.dir(id);
            fs::rename(&tmp_path, &dst)
                .map_err(|e| Error::io(format!("rename to {}", dst.display()), e))?;
            Ok(self.layout.mounts(kind, &dst, &parents))
        })
        // On failure the TempDir guard removes the half-made directory.
    }
}

impl<L: Layout> Snapshotter for Dirs<L> {
    fn stat(&self, key: &str) -> Result<Info> {
        Ok(self.store.get(key)?.0.info)
    }

    fn update(&self, info: Info, paths: &[String]) -> Result<Info> {
        self.store.update(&info, paths)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let (s, ids) = self.store.get(key)?;
        if s.info.kind == Kind::Committed {
            return Ok(s.usage);
        }
        self.layout.usage(&self.dir(s.id), &self.fs_dirs(&ids))
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let (s, ids) = self.store.get(key)?;
        if s.info.kind == Kind::Committed {
            return Err(Error::precondition(format!(
                "snapshot {key:?} is committed and cannot be mounted: prepare or view a child of it"
            )));
        }
        Ok(self
            .layout
            .mounts(s.info.kind, &self.dir(s.id), &self.fs_dirs(&ids)))
    }

    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active, labels)
    }

    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::View, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        let (s, ids) = self.store.get(key)?;
        let usage = if s.info.kind == Kind::Active {
            self.layout.usage(&self.dir(s.id), &self.fs_dirs(&ids))?
        } else {
            Usage::default() // refused by the store with a clear message
        };
        self.store.commit(name, key, labels, usage)
    }

    fn remove(&self, key: &str) -> Result<()> {
        let doomed = self.store.remove(key, |id| {
            let dir = self.dir(id);
            let doomed = self.root.join("snapshots").join(format!("rm-{id}"));
            match fs::rename(&dir, &doomed) {
                Ok(()) => Ok(Some(doomed)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(format!("remove {}", dir.display()), e)),
            }
        })?;
        // Outside the transaction: a crash here leaves an rm- directory
        // that cleanup removes.
        if let Some(d) = doomed
            && let Err(e) = fs::remove_dir_all(&d)
        {
            tracing::warn!("remove {}: {e}", d.display());
        }
        Ok(())
    }

    fn walk(&self, filters: &[String]) -> Result<Vec<Info>> {
        let f = berth_proto::filters::Filter::parse_all(filters)?;
        Ok(self
            .store
            .list()?
            .into_iter()
            .map(|s| s.info)
            .filter(|i| f.matches(i))
            .collect())
    }

    fn cleanup(&self) -> Result<()> {
        let ids = self.store.ids()?;
        let dir = self.root.join("snapshots");
        for e in fs::read_dir(&dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))? {
            let e = e.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
            let name = e.file_name().to_string_lossy().to_string();
            if name.parse::<u64>().is_ok_and(|id| ids.contains(&id)) {
                continue;
            }
            if let Err(err) = fs::remove_dir_all(e.path()) {
                tracing::warn!("cleanup {}: {err}", e.path().display());
            }
        }
        Ok(())
    }
}

/// The overlayfs layout: `fs` is the upper directory, `work` overlay's
/// work directory; parents are lower directories.
pub struct OverlayLayout;

/// The overlayfs snapshotter.
pub type Overlay = Dirs<OverlayLayout>;

impl Overlay {
    /// Opens an overlayfs snapshotter; fails clearly where overlayfs is absent.
    pub fn open(root: &Path) -> Result<Overlay> {
        let fss = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !fss.lines().any(|l| l.trim_end().ends_with("overlay")) {
            return Err(Error::precondition(
                "overlayfs is not available on this kernel: use the native snapshotter",
            ));
        }
        Dirs::with_layout(root, OverlayLayout)
    }
}

impl Layout for OverlayLayout {
    fn name(&self) -> &'static str {
        "overlayfs"
    }

    fn populate(&self, dir: &Path, parents: &[PathBuf]) -> Result<()> {
        fs::create_dir(dir.join("work")).map_err(|e| Error::io("create work", e))?;
        fs::set_permissions(dir.join("work"), fs::Permissions::from_mode(0o711))
            .map_err(|e| Error::io("chmod work", e))?;
        // The upper directory's owner shows through as the root's owner.
        if let Some(p) = parents.first() {
            let m = fs::metadata(p).map_err(|e| Error::io(format!("stat {}", p.display()), e))?;
            std::os::unix::fs::chown(dir.join("fs"), Some(m.uid()), Some(m.gid()))
                .map_err(|e| Error::io("chown fs", e))?;
        }
        Ok(())
    }

    fn mounts(&self, kind: Kind, dir: &Path, parents: &[PathBuf]) -> Vec<Mount> {
        let ro = if kind == Kind::View { "ro" } else { "rw" };
        let bind = |src: &Path| Mount {
            kind: "bind".into(),
            source: src.display().to_string(),
            target: String::new(),
            options: vec![ro.into(), "rbind".into()],
        };
        if parents.is_empty() {
            return vec![bind(&dir.join("fs"))];
        }
        let lower = format!(
            "lowerdir={}",
            parents
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        );
        if kind == Kind::View {
            if parents.len() == 1 {
                return vec![bind(&parents[0])];
            }
            return vec![Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options: vec!["index=off".into(), lower],
            }];
        }
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "index=off".into(),
                format!("workdir={}", dir.join("work").display()),
                format!("upperdir={}", dir.join("fs").display()),
                lower,
            ],
        }]
    }

    fn usage(&self, dir: &Path, _parents: &[PathBuf]) -> Result<Usage> {
        // The upper directory holds exactly this snapshot's changes.
        disk_usage(&dir.join("fs"))
    }
}
