//! Running a test (or a benchmark) inside a private network and mount
//! namespace, so the bridges, addresses and iptables rules berthd makes
//! through CNI never touch the host's network; and counting what a
//! networked container can leave behind (IP reservations, netns mounts,
//! veths, iptables rules).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// Where Debian's containernetworking-plugins installs.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The plugins berthd's bridge networks use.
pub const CNI_PLUGINS: [&str; 4] = ["bridge", "host-local", "portmap", "firewall"];
/// Tools the re-exec and the counters need.
pub const NET_TOOLS: [&str; 3] = ["unshare", "mount", "iptables-save"];

/// Set in the re-executed process: it is already inside the namespaces.
const INNER: &str = "BERTH_PRIVATE_NETNS_INNER";

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Why networked containers cannot be run here (not root, a plugin or tool
/// missing), or None.
pub fn network_prerequisites() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("networked containers need root".into());
    }
    if let Some(p) = CNI_PLUGINS
        .iter()
        .find(|p| !Path::new(CNI_BIN_DIR).join(p).exists())
    {
        return Some(format!(
            "CNI plugin {CNI_BIN_DIR}/{p} is missing (install containernetworking-plugins)"
        ));
    }
    if let Some(t) = NET_TOOLS.iter().find(|t| !on_path(t)) {
        return Some(format!("{t} is not installed"));
    }
    None
}

/// Brings up the private namespace's loopback (down when the namespace is
/// made), for what listens on 127.0.0.1 inside it.
pub fn loopback_up() {
    crate::ok(
        "ip link set lo up",
        Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .output()
            .expect("run ip"),
    );
}

/// Says SKIPPED with `why`; under BERTH_REQUIRE_PEERS=1 fails instead.
pub fn skip(why: &str) {
    if std::env::var("BERTH_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{why} (BERTH_REQUIRE_PEERS=1)");
    }
    eprintln!("SKIPPED: {why}");
}

/// True in a process [`private_network`] started.
pub fn in_private_network() -> bool {
    std::env::var_os(INNER).is_some()
}

/// This executable again with `args`, inside `unshare --net --mount` with
/// private propagation and a fresh sysfs (so /sys/class/net lists the
/// private namespace's links; the cgroup mounts are carried over, the
/// containers need them).
pub fn private_network(args: &[&str]) -> Command {
    let exe = std::env::current_exe().expect("own executable");
    let mut c = Command::new("unshare");
    c.args(["--net", "--mount", "--propagation", "private", "--"])
        .args([
            "sh",
            "-c",
            "set -e; d=$(mktemp -d); mount --rbind /sys/fs/cgroup \"$d\"; \
             mount -t sysfs sysfs /sys; mount --move \"$d\" /sys/fs/cgroup; rmdir \"$d\"; \
             exec \"$0\" \"$@\"",
        ])
        .arg(exe)
        .args(args)
        .env(INNER, "1");
    c
}

/// Runs test `name` of this test binary inside [`private_network`] and
/// asserts it passed there.
pub fn run_test_in_private_network(name: &str) {
    let status: ExitStatus = private_network(&[name, "--exact", "--nocapture", "--test-threads=1"])
        .status()
        .expect("run unshare");
    assert!(status.success(), "{name} inside unshare failed: {status}");
}

/// A berthd configuration using the host's CNI plugins and networks kept
/// in `conf_dir`.
pub fn network_config(conf_dir: &Path) -> String {
    format!(
        "[network]\ncni_bin_dirs = [\"{CNI_BIN_DIR}\"]\ncni_conf_dir = \"{}\"\n",
        conf_dir.display()
    )
}

/// `GET path` over HTTP/1.0 at `addr`, retried until `limit` passes (a
/// server just started may not listen yet); the response body.
pub fn http_get(addr: SocketAddr, path: &str, limit: Duration) -> Result<String, String> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
            let mut r = Vec::new();
            s.read_to_end(&mut r)?;
            Ok(String::from_utf8_lossy(&r).into_owned())
        })();
        match attempt {
            Ok(r) if r.starts_with("HTTP/1.") => {
                let body = r.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                return if r.split(' ').nth(1) == Some("200") {
                    Ok(body.to_string())
                } else {
                    Err(format!("{addr}{path}: {}", r.lines().next().unwrap_or("")))
                };
            }
            Ok(r) => last = format!("not an HTTP response: {r:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{addr}{path}: {last}"))
}

/// Names of the links in this network namespace (needs the fresh sysfs
/// [`private_network`] mounts).
pub fn links() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("read /sys/class/net")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// What networked containers of the daemon whose state is `state` can
/// leave behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakCounts {
    /// host-local reservations: files named by an address under
    /// `<state>/cni/networks/<network>/`.
    pub ips: usize,
    /// Mounts at or below `<state>/netns`.
    pub netns_mounts: usize,
    /// Files (not folders) below `<state>/netns`.
    pub netns_files: usize,
    /// veth links in this network namespace.
    pub veths: usize,
    /// iptables/ip6tables lines of one container: rules and chains named
    /// by a CNI container ID (see [`container_rule`]).
    pub iptables_rules: usize,
}

impl LeakCounts {
    pub fn now(state: &Path) -> LeakCounts {
        let netns = state.join("netns");
        LeakCounts {
            ips: reservations(&state.join("cni/networks")),
            netns_mounts: mounts_under(&netns),
            netns_files: files_under(&netns),
            veths: links().iter().filter(|l| l.starts_with("veth")).count(),
            iptables_rules: iptables_lines()
                .iter()
                .filter(|l| container_rule(l))
                .count(),
        }
    }

    /// All zero.
    pub fn none(&self) -> bool {
        *self
            == LeakCounts {
                ips: 0,
                netns_mounts: 0,
                netns_files: 0,
                veths: 0,
                iptables_rules: 0,
            }
    }
}

impl std::fmt::Display for LeakCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ips={} netns_mounts={} netns_files={} veths={} iptables_rules={}",
            self.ips, self.netns_mounts, self.netns_files, self.veths, self.iptables_rules
        )
    }
}

/// host-local's reservation files below `ipam` (one folder per network).
pub fn reservations(ipam: &Path) -> usize {
    let Ok(nets) = std::fs::read_dir(ipam) else {
        return 0;
    };
    nets.flatten()
        .filter_map(|n| std::fs::read_dir(n.path()).ok())
        .flat_map(|rd| rd.flatten())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<IpAddr>().is_ok())
        })
        .count()
}

/// Reserved addresses of network `net` (host-local's files).
pub fn reserved_ips(ipam: &Path, net: &str) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = std::fs::read_dir(ipam.join(net))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Mount points at or below `dir` in this mount namespace.
pub fn mounts_under(dir: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|m| m.starts_with(dir))
        .count()
}

/// Non-directory entries below `dir`, recursively.
pub fn files_under(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// Every table's lines from `iptables-save` and `ip6tables-save` (the
/// latter when installed).
pub fn iptables_lines() -> Vec<String> {
    let mut v = Vec::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        if tool == "ip6tables-save" && !on_path(tool) {
            continue;
        }
        let out = Command::new(tool).output().expect(tool);
        assert!(out.status.success(), "{tool}: {out:?}");
        v.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from),
        );
    }
    v
}

/// Whether an iptables-save line belongs to one container rather than to
/// the plugins' shared chains: it carries a container ID comment
/// (`id: "…"`, bridge's masquerading and portmap's DNAT rules), or names a
/// chain made for one container (`CNI-<hash>`, `CNI-DN-<hash>`), or
/// matches a single address (`/32`, `/128`: the firewall plugin's
/// accept rules).
pub fn container_rule(line: &str) -> bool {
    if line.contains("id: \"") || line.contains("id: \\\"") {
        return true;
    }
    line.split(|c: char| c.is_whitespace() || c == ':')
        .any(|tok| per_container_chain(tok) || single_address(tok))
}

fn per_container_chain(tok: &str) -> bool {
    let Some(rest) = tok.strip_prefix("CNI-") else {
        return false;
    };
    let rest = rest.strip_prefix("DN-").unwrap_or(rest);
    rest.len() >= 16 && rest.chars().all(|c| c.is_ascii_hexdigit())
}

fn single_address(tok: &str) -> bool {
    let (ip, len) = match tok.split_once('/') {
        Some(x) => x,
        None => return false,
    };
    match ip.parse::<IpAddr>() {
        // Loopback sources are portmap's shared hairpin rules.
        Ok(IpAddr::V4(a)) => len == "32" && !a.is_loopback(),
        Ok(IpAddr::V6(a)) => len == "128" && !a.is_loopback(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_rules_are_told_from_shared_ones() {
        for l in [
            "-A POSTROUTING -s 10.88.0.2/32 -m comment --comment \"name: \\\"bridge\\\" id: \\\"ab\\\"\" -j CNI-0123456789abcdef01234567",
            ":CNI-0123456789abcdef01234567 - [0:0]",
            ":CNI-DN-0123456789abcdef01234 - [0:0]",
            "-A CNI-FORWARD -d 10.88.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"bridge\\\" id: \\\"ab\\\"\" -m multiport --dports 8080 -j CNI-DN-0123456789abcdef01234",
        ] {
            assert!(container_rule(l), "{l}");
        }
        for l in [
            ":CNI-HOSTPORT-DNAT - [0:0]",
            ":CNI-FORWARD - [0:0]",
            "-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD",
            "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE",
            "-A CNI-HOSTPORT-SETMARK -s 127.0.0.1/32 -j MARK --set-xmark 0x2000/0x2000",
            "-A POSTROUTING -s 10.88.0.0/16 -j MASQUERADE",
        ] {
            assert!(!container_rule(l), "{l}");
        }
    }
}
