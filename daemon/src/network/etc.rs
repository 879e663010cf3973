//! The name-resolution files berthd gives a networked container:
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, written under
//! `<state>/etc/<namespace>/<id>/` and bind-mounted read-only.
//!
//! Containers find each other through `/etc/hosts`, which berthd rewrites
//! whenever a container of the same namespace joins or leaves a shared
//! network (docker's embedded DNS would be a resident responder per
//! network; a file needs no process, works with any libc and any image,
//! and cannot be reached from outside the container).

use crate::error::{Result, io_err};
use berth_snapshotter::mount::private;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Name servers when neither the caller nor the host (minus loopback
/// servers, unreachable from a container's namespace) gives one: docker's.
pub const FALLBACK_SERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// What berthd knows of one attached container, kept beside its files so
/// that peers' hosts files can be rebuilt from disk alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub hostname: String,
    /// Network name and the addresses the container has on it.
    pub networks: Vec<(String, Vec<IpAddr>)>,
    /// `--add-host` entries.
    #[serde(default)]
    pub extra_hosts: Vec<(String, Ipv4Addr)>,
}

impl Record {
    fn on(&self, network: &str) -> bool {
        self.networks.iter().any(|(n, _)| n == network)
    }

    fn addresses(&self) -> impl Iterator<Item = &IpAddr> {
        self.networks.iter().flat_map(|(_, a)| a)
    }
}

/// `/etc/hosts` of `me`: loopback, its own addresses, every peer sharing
/// a network with it, then its extra hosts.
pub fn hosts(me: &Record, peers: &[Record]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         # Kept current by berthd: containers sharing a network with this one.\n",
    );
    let names = |r: &Record| {
        if r.hostname.is_empty() || r.hostname == r.id {
            r.id.clone()
        } else {
            format!("{} {}", r.hostname, r.id)
        }
    };
    let mut seen = std::collections::HashSet::new();
    for ip in me.addresses() {
        if seen.insert(*ip) {
            s.push_str(&format!("{ip}\t{}\n", names(me)));
        }
    }
    let mut peers: Vec<&Record> = peers.iter().filter(|p| p.id != me.id).collect();
    peers.sort_by(|a, b| a.id.cmp(&b.id));
    for p in peers {
        for (net, ips) in &p.networks {
            if !me.on(net) {
                continue;
            }
            for ip in ips {
                if seen.insert(*ip) {
                    s.push_str(&format!("{ip}\t{}\n", names(p)));
                }
            }
        }
    }
    for (name, ip) in &me.extra_hosts {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    s
}

/// `/etc/resolv.conf` from the host's: its search and options lines, with
/// `servers` instead of its name servers when given, else the host's minus
/// loopback ones (or [`FALLBACK_SERVERS`] when none is left).
pub fn resolv_conf(host: &str, servers: &[Ipv4Addr]) -> String {
    let mut out = String::new();
    let mut kept = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok())
                    && !ip.is_loopback()
                {
                    kept.push(ip.to_string());
                }
            }
            Some("search" | "domain" | "options") => {
                out.push_str(line.trim());
                out.push('\n');
            }
            _ => {}
        }
    }
    let chosen: Vec<String> = if !servers.is_empty() {
        servers.iter().map(ToString::to_string).collect()
    } else if !kept.is_empty() {
        kept
    } else {
        FALLBACK_SERVERS.iter().map(|s| s.to_string()).collect()
    };
    for s in chosen {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out
}

/// The folder of each container's files.
#[derive(Debug, Clone)]
pub struct EtcDir {
    root: PathBuf,
}

const RECORD: &str = "record.json";
/// The files, as the container sees them.
pub const FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

impl EtcDir {
    /// `state/etc`.
    pub fn new(state: &Path) -> Self {
        EtcDir {
            root: state.join("etc"),
        }
    }

    pub fn dir(&self, ns: &str, id: &str) -> PathBuf {
        self.root.join(ns).join(id)
    }

    /// Writes a container's files and record (its folder owner-only; the
    /// files world-readable, as a container user other than root reads
    /// them through the bind mounts).
    pub fn write(&self, ns: &str, r: &Record, hosts: &str, resolv: &str) -> Result<PathBuf> {
        let dir = self.dir(ns, &r.id);
        // The upper levels only pass through: nobody else can list them.
        for d in [&self.root, &self.root.join(ns)] {
            private::dir(d, private::PASS_THROUGH)
                .map_err(|e| io_err(format!("create {}", d.display()), e))?;
        }
        private::dir(&dir, private::OWNER_ONLY)
            .map_err(|e| io_err(format!("create {}", dir.display()), e))?;
        let record = serde_json::to_vec(r).map_err(|e| {
            crate::error::Error::internal(format!("encode the record of {}: {e}", r.id))
        })?;
        let hostname = format!("{}\n", r.hostname);
        for (name, bytes) in [
            ("hosts", hosts.as_bytes()),
            ("hostname", hostname.as_bytes()),
            ("resolv.conf", resolv.as_bytes()),
            (RECORD, record.as_slice()),
        ] {
            rewrite(&dir.join(name), bytes)?;
        }
        Ok(dir)
    }

    /// Rewrites a live container's hosts file in place: its bind mount
    /// holds the inode, so a rename would go unseen.
    pub fn rewrite_hosts(&self, ns: &str, id: &str, hosts: &str) -> Result<()> {
        rewrite(&self.dir(ns, id).join("hosts"), hosts.as_bytes())
    }

    /// The records of a namespace's attached containers.
    pub fn records(&self, ns: &str) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for id in self.ids(ns)? {
            let p = self.dir(ns, &id).join(RECORD);
            match std::fs::read(&p) {
                Ok(b) => match serde_json::from_slice(&b) {
                    Ok(r) => out.push(r),
                    Err(e) => tracing::warn!("{}: unreadable ({e}); skipped", p.display()),
                },
                // Being set up, or half torn down.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("read {}", p.display()), e)),
            }
        }
        Ok(out)
    }

    /// The namespaces with a folder here.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        list(&self.root)
    }

    /// The ids with a folder in `ns`.
    pub fn ids(&self, ns: &str) -> Result<Vec<String>> {
        list(&self.root.join(ns))
    }

    /// Removes a container's files; missing is fine.
    pub fn remove(&self, ns: &str, id: &str) -> Result<()> {
        let dir = self.dir(ns, id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err(format!("remove {}", dir.display()), e));
            }
            _ => {}
        }
        let _ = std::fs::remove_dir(self.root.join(ns));
        Ok(())
    }
}

fn list(dir: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("read {}", dir.display()), e)),
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    Ok(v)
}

/// Replaces a file's contents in place with one write (readers see the
/// old or the new text; these files are far below a page).
fn rewrite(path: &Path, bytes: &[u8]) -> Result<()> {
    let werr = |e| io_err(format!("write {}", path.display()), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(werr)?;
    f.write_all(bytes).map_err(werr)?;
    f.set_len(bytes.len() as u64).map_err(werr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, host: &str, nets: &[(&str, &str)]) -> Record {
        Record {
            id: id.into(),
            hostname: host.into(),
            networks: nets
                .iter()
                .map(|(n, ip)| (n.to_string(), vec![ip.parse().unwrap()]))
                .collect(),
            extra_hosts: vec![],
        }
    }

    #[test]
    fn hosts_lists_peers_on_shared_networks_only() {
        let mut me = rec("web", "web", &[("a", "10.1.0.2")]);
        me.extra_hosts = vec![("db".into(), Ipv4Addr::new(10, 9, 9, 9))];
        let peers = vec![
            me.clone(),
            rec("api", "apihost", &[("a", "10.1.0.3"), ("b", "10.2.0.3")]),
            rec("other", "other", &[("b", "10.2.0.4")]),
        ];
        let h = hosts(&me, &peers);
        assert!(h.contains("10.1.0.2\tweb\n"), "{h}");
        assert!(h.contains("10.1.0.3\tapihost api\n"), "{h}");
        assert!(!h.contains("10.2.0.3"), "{h}");
        assert!(!h.contains("other"), "{h}");
        assert!(h.ends_with("10.9.9.9\tdb\n"), "{h}");
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"), "{h}");
    }

    #[test]
    fn resolv_conf_drops_loopback_servers_and_keeps_search() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nsearch example.org\noptions edns0\n";
        assert_eq!(
            resolv_conf(host, &[]),
            "search example.org\noptions edns0\nnameserver 10.0.0.1\n"
        );
        assert_eq!(
            resolv_conf(host, &[Ipv4Addr::new(1, 2, 3, 4)]),
            "search example.org\noptions edns0\nnameserver 1.2.3.4\n"
        );
        assert_eq!(
            resolv_conf("nameserver 127.0.0.1\nnameserver ::1\n", &[]),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }

    #[test]
    fn files_are_rewritten_in_place_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let etc = EtcDir::new(tmp.path());
        let r = rec("c1", "c1", &[("a", "10.1.0.2")]);
        let dir = etc
            .write("ns", &r, "one\n", "nameserver 1.1.1.1\n")
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(dir.join("hosts")).unwrap().ino();
        etc.rewrite_hosts("ns", "c1", "x\n").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("hosts")).unwrap(), "x\n");
        assert_eq!(std::fs::metadata(dir.join("hosts")).unwrap().ino(), ino);
        assert_eq!(etc.records("ns").unwrap(), vec![r]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("etc/ns")), 0o711);
        assert_eq!(mode(&dir.join("resolv.conf")), 0o644);
        etc.remove("ns", "c1").unwrap();
        etc.remove("ns", "c1").unwrap();
        assert!(!tmp.path().join("etc/ns").exists());
        assert_eq!(etc.namespaces().unwrap(), Vec::<String>::new());
    }
}
