//! The files a pod's containers share, under `<state>/cri/pods/<id>/`:
//! `hostname`, `hosts` (a copy of the host's, as containerd makes it: the
//! kubelet manages pod hosts entries itself), `resolv.conf` (the pod's DNS
//! config, else a copy of the host's) and `shm/`, a tmpfs for /dev/shm
//! unless the pod uses the host's IPC namespace.

use crate::error::{Error, Result, io_err};
use berth_proto::cri;
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// The size of a pod's /dev/shm (containerd's defaultShmSize).
pub const SHM_SIZE: u64 = 64 << 20;

/// resolv.conf text of a pod's DNS config; `None` when it names nothing.
pub fn resolv_conf(dns: &cri::DnsConfig) -> Option<String> {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out += &format!("search {}\n", dns.searches.join(" "));
    }
    for s in &dns.servers {
        out += &format!("nameserver {s}\n");
    }
    if !dns.options.is_empty() {
        out += &format!("options {}\n", dns.options.join(" "));
    }
    (!out.is_empty()).then_some(out)
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(|e| io_err(format!("write {}", path.display()), e))
}

fn copy(from: &str, to: &Path) -> Result<()> {
    let data = std::fs::read(from).map_err(|e| io_err(format!("read the host's {from}"), e))?;
    write(to, &data)
}

/// Makes the pod's files in `dir`; returns the shm path ("" for host IPC).
pub fn set_up(dir: &Path, config: &cri::PodSandboxConfig, host_ipc: bool) -> Result<String> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(format!("create {}", dir.display()), e))?;
    let hostname = if config.hostname.is_empty() {
        nix::unistd::gethostname()
            .map_err(|e| Error::internal(format!("read the host name: {e}")))?
            .to_string_lossy()
            .into_owned()
    } else {
        config.hostname.clone()
    };
    write(&dir.join("hostname"), format!("{hostname}\n").as_bytes())?;
    copy("/etc/hosts", &dir.join("hosts"))?;
    match config.dns_config.as_ref().and_then(resolv_conf) {
        Some(text) => write(&dir.join("resolv.conf"), text.as_bytes())?,
        None => copy("/etc/resolv.conf", &dir.join("resolv.conf"))?,
    }
    if host_ipc {
        if !Path::new("/dev/shm").exists() {
            return Err(Error::precondition(
                "the pod uses the host's IPC namespace but the host has no /dev/shm",
            ));
        }
        return Ok(String::new());
    }
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm).map_err(|e| io_err(format!("create {}", shm.display()), e))?;
    if !is_mountpoint(&shm) {
        nix::mount::mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("mode=1777,size={SHM_SIZE}").as_str()),
        )
        .map_err(|e| Error::internal(format!("mount the pod's shm at {}: {e}", shm.display())))?;
    }
    Ok(shm.display().to_string())
}

fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Some(parent)) = (std::fs::metadata(p), p.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|pm| pm.dev() != m.dev())
}

/// Unmounts the pod's shm (detached: a container still holding it keeps
/// its view). Repeatable.
pub fn unmount_shm(dir: &Path) -> Result<()> {
    let shm = dir.join("shm");
    if is_mountpoint(&shm) {
        nix::mount::umount2(&shm, MntFlags::MNT_DETACH)
            .map_err(|e| Error::internal(format!("unmount {}: {e}", shm.display())))?;
    }
    Ok(())
}

/// Unmounts the pod's shm and removes `dir`. Repeatable.
pub fn tear_down(dir: &Path) -> Result<()> {
    unmount_shm(dir)?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("remove {}", dir.display()), e)),
    }
}

/// The pod file paths containers mount.
pub fn paths(dir: &Path) -> [(String, PathBuf); 3] {
    [
        ("/etc/hostname".into(), dir.join("hostname")),
        ("/etc/hosts".into(), dir.join("hosts")),
        ("/etc/resolv.conf".into(), dir.join("resolv.conf")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_as_containerd_writes_it() {
        let d = cri::DnsConfig {
            servers: vec!["10.0.0.10".into(), "8.8.8.8".into()],
            searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&d).unwrap(),
            "search ns.svc.cluster.local cluster.local\nnameserver 10.0.0.10\nnameserver 8.8.8.8\noptions ndots:5\n"
        );
        assert_eq!(resolv_conf(&cri::DnsConfig::default()), None);
    }
}
