//! A running container's IPv4 addresses, per interface, for `inspect`:
//! read from its network namespace through /proc/<pid>/net (berthd keeps
//! no record of the addresses CNI gave, and berthctl runs on its host).

use std::net::Ipv4Addr;

/// `(interface, address)` of every non-loopback IPv4 address the
/// process's network namespace holds; empty when unreadable.
pub fn addresses(pid: u32) -> Vec<(String, String)> {
    let read =
        |f: &str| std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default();
    let routes = routes(&read("route"));
    local_addresses(&read("fib_trie"))
        .into_iter()
        .filter_map(|ip| {
            let dev = routes
                .iter()
                .find(|(_, dst, mask)| u32::from(ip) & mask == *dst && *mask != 0)?
                .0
                .clone();
            Some((dev, ip.to_string()))
        })
        .collect()
}

/// The LOCAL host addresses of a `fib_trie` listing, loopback excluded.
fn local_addresses(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let t = line.trim();
        if let Some(ip) = t.strip_prefix("|-- ") {
            last = ip.parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(ip) = last
            && !ip.is_loopback()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// `(interface, destination, mask)` of each route in `/proc/net/route`
/// (the kernel prints the network-order bytes as a host integer).
fn routes(table: &str) -> Vec<(String, u32, u32)> {
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|n| u32::from_be_bytes(n.to_ne_bytes()))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), hex(f.get(1)?)?, hex(f.get(7)?)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_map_to_their_interfaces() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                   |-- 127.0.0.1\n  /32 host LOCAL\n  |-- 10.89.0.0\n  /24 link UNICAST\n\
                   |-- 10.89.0.5\n  /32 host LOCAL\n |-- 10.90.1.7\n /32 host LOCAL\n\
                   Local:\n |-- 10.89.0.5\n /32 host LOCAL\n";
        assert_eq!(
            local_addresses(fib),
            [
                "10.89.0.5".parse::<Ipv4Addr>().unwrap(),
                "10.90.1.7".parse().unwrap()
            ]
        );
        let route = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     eth0\t00000000\t0100590A\t0003\t0\t0\t0\t00000000\n\
                     eth0\t0000590A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                     eth1\t00015A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        let r = routes(route);
        assert_eq!(
            r[1],
            (
                "eth0".into(),
                u32::from(Ipv4Addr::new(10, 89, 0, 0)),
                0xFFFF_FF00
            )
        );
        assert_eq!(r[2].1, u32::from(Ipv4Addr::new(10, 90, 1, 0)));
        // This process's own namespace: whatever it holds, no loopback.
        assert!(
            addresses(std::process::id())
                .iter()
                .all(|(_, ip)| !ip.starts_with("127."))
        );
    }
}
