//! IP subnets in CIDR notation: parsing, containment and overlap, all a
//! network definition needs (too small to take a crate for).

use crate::error::{Error, Result};
use std::net::IpAddr;

/// A subnet with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n` or `x::y/n`; host bits must be zero.
    pub fn parse(s: &str) -> Result<Subnet> {
        let bad = |why: &str| Error::invalid(format!("subnet {s:?}: {why}"));
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| bad("expected CIDR notation like 10.89.0.0/24"))?;
        let addr: IpAddr = a.parse().map_err(|_| bad("not an IP address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("bad prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad("prefix length too long"));
        }
        let net = Subnet { addr, prefix };
        if net.bits(addr) != net.bits(addr) & net.mask() {
            return Err(bad("host bits are set (use the network address)"));
        }
        Ok(net)
    }

    fn width(&self) -> u32 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    fn mask(&self) -> u128 {
        let w = self.width();
        let all = if w == 32 { u32::MAX as u128 } else { u128::MAX };
        if self.prefix == 0 {
            0
        } else {
            all & !(all >> self.prefix)
        }
    }

    fn bits(&self, ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v) => u32::from(v) as u128,
            IpAddr::V6(v) => u128::from(v),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && self.bits(ip) & self.mask() == self.bits(self.addr)
    }

    /// Two subnets overlap when either contains the other's network.
    pub fn overlaps(&self, o: &Subnet) -> bool {
        self.contains(o.addr) || o.contains(self.addr)
    }

    /// The `n`th address of the subnet (1 = the usual gateway), wrapping
    /// within the address family.
    pub fn nth(&self, n: u32) -> IpAddr {
        match self.addr {
            IpAddr::V4(v) => IpAddr::V4(u32::from(v).wrapping_add(n).into()),
            IpAddr::V6(v) => IpAddr::V6(u128::from(v).wrapping_add(n.into()).into()),
        }
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_contain_overlap() {
        let a = Subnet::parse("10.88.0.0/16").unwrap();
        let b = Subnet::parse("10.88.5.0/24").unwrap();
        let c = Subnet::parse("10.89.0.0/24").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(a.contains("10.88.255.1".parse().unwrap()));
        assert!(!a.contains("fd00::1".parse().unwrap()));
        assert_eq!(a.nth(1).to_string(), "10.88.0.1");
        assert_eq!(a.to_string(), "10.88.0.0/16");
        let v6 = Subnet::parse("fd00:1::/64").unwrap();
        assert!(v6.contains("fd00:1::5".parse().unwrap()));
        assert!(!v6.overlaps(&a));
        for bad in ["10.88.0.1/16", "10.88.0.0", "10.88.0.0/33", "x/8"] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
        assert!(Subnet::parse("0.0.0.0/0").unwrap().overlaps(&c));
    }
}
