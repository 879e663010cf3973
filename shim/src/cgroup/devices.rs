//! Device rules, as runc reads `linux.resources.devices`: the spec's rules
//! in order, then runc's defaults, folded into one allow-list or deny-list
//! with exceptions (runc's devices "emulator"). From that state cgroup v1
//! gets the `devices.allow`/`devices.deny` writes that lead there from the
//! cgroup's current `devices.list`, and cgroup v2 an eBPF program
//! ([`super::bpf`]). Folding first is what makes both hierarchies agree:
//! every container starts from "deny everything", whatever the spec's first
//! rule, and a rule that would punch a hole in a wildcard (which v1 silently
//! ignores) is refused.

use crate::{Error, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use std::collections::BTreeMap;

/// A node type a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    /// `b`. Ordered before `c`, as runc sorts its rules.
    Block,
    /// `c`.
    Char,
}

/// Access bits: read, write, mknod.
pub const R: u8 = 1;
pub const W: u8 = 2;
pub const M: u8 = 4;
pub const RWM: u8 = R | W | M;

/// What a rule matches: a node type and numbers, `-1` for any.
/// Ordered (major, minor, type) as runc writes its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Meta {
    pub major: i64,
    pub minor: i64,
    pub node: Node,
}

/// One rule. `node` `None` is `a`: every device, whatever the numbers and
/// access say (the kernel and runc read it so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub node: Option<Node>,
    pub major: i64,
    pub minor: i64,
    pub access: u8,
    pub allow: bool,
}

/// The largest device number a rule may name: beyond any Linux device
/// number (12-bit major, 20-bit minor), and what a BPF immediate holds.
const MAX_NUMBER: i64 = i32::MAX as i64;

impl Rule {
    const fn allow(node: Node, major: i64, minor: i64, access: u8) -> Rule {
        Rule {
            node: Some(node),
            major,
            minor,
            access,
            allow: true,
        }
    }

    /// The rule as `devices.allow`/`devices.deny` take it (`c 1:3 rwm`).
    pub fn cgroup_string(&self) -> String {
        let num = |n: i64| {
            if n < 0 {
                "*".to_string()
            } else {
                n.to_string()
            }
        };
        let t = match self.node {
            None => 'a',
            Some(Node::Block) => 'b',
            Some(Node::Char) => 'c',
        };
        format!(
            "{t} {}:{} {}",
            num(self.major),
            num(self.minor),
            access_string(self.access)
        )
    }

    fn meta(&self) -> Option<Meta> {
        self.node.map(|node| Meta {
            major: self.major,
            minor: self.minor,
            node,
        })
    }
}

/// `rwm` order, as the kernel and runc print access.
pub fn access_string(a: u8) -> String {
    [(R, 'r'), (W, 'w'), (M, 'm')]
        .iter()
        .filter(|(b, _)| a & b != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// runc's rules for every container, after the spec's (specconv's
/// `AllowedDevices`): mknod of any node; null, random, full, tty, zero,
/// urandom; ptys (136:*, /dev/ptmx 5:2); tun/tap.
pub const DEFAULTS: [Rule; 11] = [
    Rule::allow(Node::Char, -1, -1, M),
    Rule::allow(Node::Block, -1, -1, M),
    Rule::allow(Node::Char, 1, 3, RWM),
    Rule::allow(Node::Char, 1, 8, RWM),
    Rule::allow(Node::Char, 1, 7, RWM),
    Rule::allow(Node::Char, 5, 0, RWM),
    Rule::allow(Node::Char, 1, 5, RWM),
    Rule::allow(Node::Char, 1, 9, RWM),
    Rule::allow(Node::Char, 136, -1, RWM),
    Rule::allow(Node::Char, 5, 2, RWM),
    Rule::allow(Node::Char, 10, 200, RWM),
];

/// The spec's rule `i` of `linux.resources.devices`, checked as runc
/// checks it (a cgroup type, an access of `r`, `w`, `m` only, not empty).
pub fn from_spec(i: usize, d: &LinuxDeviceCgroup) -> Result<Rule> {
    let field = format!("linux.resources.devices[{i}]");
    let node = match d.typ() {
        None | Some(LinuxDeviceType::A) => None,
        Some(LinuxDeviceType::B) => Some(Node::Block),
        Some(LinuxDeviceType::C) => Some(Node::Char),
        Some(t) => {
            return Err(Error::invalid(format!(
                "{field}.type {:?} is not a device cgroup type (a, b or c)",
                t.as_str()
            )));
        }
    };
    let number = |what: &str, n: Option<i64>| match n {
        None => Ok(-1),
        Some(n) if n < 0 => Ok(-1),
        Some(n) if n > MAX_NUMBER => Err(Error::invalid(format!(
            "{field}.{what} {n} is beyond any device number"
        ))),
        Some(n) => Ok(n),
    };
    let access = d.access().as_deref().unwrap_or("");
    if access.is_empty() {
        return Err(Error::invalid(format!("{field}.access is empty")));
    }
    let mut bits = 0;
    for c in access.chars() {
        bits |= match c {
            'r' => R,
            'w' => W,
            'm' => M,
            _ => {
                return Err(Error::invalid(format!(
                    "{field}.access {access:?} has {c:?}: only r, w and m are device accesses"
                )));
            }
        };
    }
    Ok(Rule {
        node,
        major: number("major", d.major())?,
        minor: number("minor", d.minor())?,
        access: bits,
        allow: d.allow(),
    })
}

/// The rules a container's device cgroup gets: the spec's, then runc's
/// defaults (which the spec cannot take away, as with runc).
pub fn container_rules(spec: &[LinuxDeviceCgroup]) -> Result<Vec<Rule>> {
    let mut v = spec
        .iter()
        .enumerate()
        .map(|(i, d)| from_spec(i, d))
        .collect::<Result<Vec<_>>>()?;
    v.extend(DEFAULTS);
    Ok(v)
}

/// A device cgroup's state: a default (allow or deny) and the exceptions
/// to it, each with the accesses it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Emulator {
    pub default_allow: bool,
    pub exceptions: BTreeMap<Meta, u8>,
}

impl Emulator {
    /// The state `rules` lead to from "deny everything".
    pub fn from_rules(rules: &[Rule]) -> Result<Emulator> {
        let mut e = Emulator::default();
        for r in rules {
            e.apply(r)?;
        }
        Ok(e)
    }

    /// The state a v1 `devices.list` shows. An allow-all cgroup lists
    /// `a *:* rwm` and hides its deny exceptions; it reads as allow-all.
    pub fn from_list(list: &str) -> Result<Emulator> {
        let mut e = Emulator::default();
        for line in list.lines().filter(|l| !l.trim().is_empty()) {
            let bad = || Error::internal(format!("devices.list: cannot read rule {line:?}"));
            let mut f = line.split([' ', ':']);
            let (Some(t), Some(maj), Some(min), Some(acc), None) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                return Err(bad());
            };
            let num = |s: &str| -> Result<i64> {
                if s == "*" {
                    return Ok(-1);
                }
                s.parse::<u32>().map(i64::from).map_err(|_| bad())
            };
            let node = match t {
                "a" => None,
                "b" => Some(Node::Block),
                "c" => Some(Node::Char),
                _ => return Err(bad()),
            };
            let mut access = 0;
            for c in acc.chars() {
                access |= match c {
                    'r' => R,
                    'w' => W,
                    'm' => M,
                    _ => return Err(bad()),
                };
            }
            e.apply(&Rule {
                node,
                major: num(maj)?,
                minor: num(min)?,
                access,
                allow: true,
            })?;
        }
        Ok(e)
    }

    /// Applies one rule as the v1 kernel would, except that removing
    /// access a wildcard exception grants is refused (v1 ignores it
    /// silently: the access would stay).
    pub fn apply(&mut self, r: &Rule) -> Result<()> {
        let Some(meta) = r.meta() else {
            // `a`: the whole state resets to the rule's default.
            *self = Emulator {
                default_allow: r.allow,
                exceptions: BTreeMap::new(),
            };
            return Ok(());
        };
        if r.allow == self.default_allow {
            self.remove(meta, r)
        } else {
            *self.exceptions.entry(meta).or_insert(0) |= r.access;
            Ok(())
        }
    }

    fn remove(&mut self, meta: Meta, r: &Rule) -> Result<()> {
        let partial = [
            Meta { major: -1, ..meta },
            Meta { minor: -1, ..meta },
            Meta {
                major: -1,
                minor: -1,
                ..meta
            },
        ];
        for p in partial.into_iter().filter(|p| *p != meta) {
            let held = self.exceptions.get(&p).copied().unwrap_or(0);
            if held & r.access != 0 {
                let wide = Rule {
                    node: Some(p.node),
                    major: p.major,
                    minor: p.minor,
                    access: held,
                    allow: !self.default_allow,
                };
                return Err(Error::invalid(format!(
                    "device rule {:?} ({}) cannot take access out of the wider rule {:?} before it: \
                     the device cgroup cannot punch a hole in a wildcard; order the rules so the narrow one comes first or drop the wildcard",
                    r.cgroup_string(),
                    if r.allow { "allow" } else { "deny" },
                    wide.cgroup_string(),
                )));
            }
        }
        if let Some(a) = self.exceptions.get_mut(&meta) {
            *a &= !r.access;
            if *a == 0 {
                self.exceptions.remove(&meta);
            }
        }
        Ok(())
    }

    /// The fewest rules that turn a cgroup in state `self` into `target`:
    /// a reset (`a`) when the default changes or `self` allows all (whose
    /// deny exceptions cannot be read back), then the exceptions dropped,
    /// then those gained, each in (major, minor, type) order.
    pub fn transition(&self, target: &Emulator) -> Vec<Rule> {
        let mut out = Vec::new();
        let empty = BTreeMap::new();
        let old = if self.default_allow || self.default_allow != target.default_allow {
            out.push(Rule {
                node: None,
                major: -1,
                minor: -1,
                access: RWM,
                allow: target.default_allow,
            });
            &empty
        } else {
            &self.exceptions
        };
        let rule = |m: &Meta, access: u8, allow: bool| Rule {
            node: Some(m.node),
            major: m.major,
            minor: m.minor,
            access,
            allow,
        };
        for (m, a) in old {
            let dropped = a & !target.exceptions.get(m).copied().unwrap_or(0);
            if dropped != 0 {
                out.push(rule(m, dropped, target.default_allow));
            }
        }
        for (m, a) in &target.exceptions {
            let gained = a & !old.get(m).copied().unwrap_or(0);
            if gained != 0 {
                out.push(rule(m, gained, !target.default_allow));
            }
        }
        out
    }

    /// The state as rules from "deny everything": an `a` allow first when
    /// the default is allow, then the exceptions, each opposite to the
    /// default.
    pub fn rules(&self) -> Vec<Rule> {
        Emulator::default().transition(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn spec(
        allow: bool,
        t: Option<LinuxDeviceType>,
        maj: Option<i64>,
        min: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access(access);
        if let Some(t) = t {
            b = b.typ(t);
        }
        if let Some(m) = maj {
            b = b.major(m);
        }
        if let Some(m) = min {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    fn strings(rules: &[Rule]) -> Vec<String> {
        rules
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    if r.allow { "allow" } else { "deny" },
                    r.cgroup_string()
                )
            })
            .collect()
    }

    #[test]
    fn spec_rules_are_checked_and_named() {
        let ok = from_spec(
            0,
            &spec(true, Some(LinuxDeviceType::C), Some(10), None, "mr"),
        )
        .unwrap();
        assert_eq!(ok.cgroup_string(), "c 10:* rm");
        assert_eq!(
            from_spec(0, &spec(false, None, None, None, "rwm"))
                .unwrap()
                .node,
            None
        );
        let e = from_spec(
            3,
            &spec(true, Some(LinuxDeviceType::C), Some(1), Some(3), ""),
        )
        .unwrap_err();
        assert_eq!(e.message(), "linux.resources.devices[3].access is empty");
        let e = from_spec(1, &spec(true, Some(LinuxDeviceType::P), None, None, "rwm")).unwrap_err();
        assert!(
            e.message()
                .contains("linux.resources.devices[1].type \"p\""),
            "{e}"
        );
        let e = from_spec(
            2,
            &spec(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rwx"),
        )
        .unwrap_err();
        assert!(
            e.message().contains("devices[2].access \"rwx\" has 'x'"),
            "{e}"
        );
        let e = from_spec(
            0,
            &spec(true, Some(LinuxDeviceType::C), Some(1 << 40), Some(3), "r"),
        )
        .unwrap_err();
        assert!(e.message().contains("devices[0].major"), "{e}");
    }

    #[test]
    fn containerd_default_spec_folds_to_an_allow_list() {
        // containerd's default: deny all, then runc's defaults.
        let rules = container_rules(&[spec(false, None, None, None, "rwm")]).unwrap();
        let e = Emulator::from_rules(&rules).unwrap();
        assert!(!e.default_allow);
        assert_eq!(
            strings(&e.rules()),
            vec![
                "allow b *:* m",
                "allow c *:* m",
                "allow c 1:3 rwm",
                "allow c 1:5 rwm",
                "allow c 1:7 rwm",
                "allow c 1:8 rwm",
                "allow c 1:9 rwm",
                "allow c 5:0 rwm",
                "allow c 5:2 rwm",
                "allow c 10:200 rwm",
                "allow c 136:* rwm",
            ]
        );
        // No rule at all is the same list: every container starts from
        // "deny everything", as with runc.
        assert_eq!(
            Emulator::from_rules(&container_rules(&[]).unwrap()).unwrap(),
            e
        );
    }

    #[test]
    fn privileged_allows_all_and_order_matters() {
        let all = spec(true, None, None, None, "rwm");
        let e =
            Emulator::from_rules(&container_rules(std::slice::from_ref(&all)).unwrap()).unwrap();
        assert!(e.default_allow);
        assert!(e.exceptions.is_empty(), "defaults are no-ops in allow-all");
        assert_eq!(strings(&e.rules()), vec!["allow a *:* rwm"]);
        // Allow all, then deny one device: an allow-all with one exception.
        let kmsg = spec(false, Some(LinuxDeviceType::C), Some(1), Some(11), "rw");
        let e =
            Emulator::from_rules(&[all.clone(), kmsg.clone()].map(|d| from_spec(0, &d).unwrap()))
                .unwrap();
        assert_eq!(
            strings(&e.rules()),
            vec!["allow a *:* rwm", "deny c 1:11 rw"]
        );
        // The other order: the later allow-all wins.
        let e = Emulator::from_rules(&[kmsg, all].map(|d| from_spec(0, &d).unwrap())).unwrap();
        assert_eq!(strings(&e.rules()), vec!["allow a *:* rwm"]);
        // Denying part of an allowed device keeps the rest.
        let r = [
            spec(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rwm"),
            spec(false, Some(LinuxDeviceType::C), Some(1), Some(3), "w"),
        ]
        .map(|d| from_spec(0, &d).unwrap());
        assert_eq!(
            strings(&Emulator::from_rules(&r).unwrap().rules()),
            vec!["allow c 1:3 rm"]
        );
    }

    #[test]
    fn a_hole_in_a_wildcard_is_refused() {
        let r = [
            spec(true, Some(LinuxDeviceType::C), Some(1), None, "rwm"),
            spec(false, Some(LinuxDeviceType::C), Some(1), Some(3), "w"),
        ]
        .map(|d| from_spec(0, &d).unwrap());
        let e = Emulator::from_rules(&r).unwrap_err();
        assert!(e.message().contains("\"c 1:3 w\" (deny)"), "{e}");
        assert!(e.message().contains("\"c 1:* rwm\""), "{e}");
        // Access the wildcard does not grant may go.
        let r = [
            spec(true, Some(LinuxDeviceType::C), Some(1), None, "m"),
            spec(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rw"),
            spec(false, Some(LinuxDeviceType::C), Some(1), Some(3), "w"),
        ]
        .map(|d| from_spec(0, &d).unwrap());
        assert_eq!(
            strings(&Emulator::from_rules(&r).unwrap().rules()),
            vec!["allow c 1:* m", "allow c 1:3 r"]
        );
    }

    #[test]
    fn transitions_from_devices_list() {
        let target = Emulator::from_rules(&container_rules(&[]).unwrap()).unwrap();
        // A new v1 cgroup allows all: the reset comes first.
        let fresh = Emulator::from_list("a *:* rwm\n").unwrap();
        assert!(fresh.default_allow);
        let t = strings(&fresh.transition(&target));
        assert_eq!(t[0], "deny a *:* rwm");
        assert_eq!(t.len(), 1 + DEFAULTS.len());
        // Already there: nothing to write.
        let list: String = target
            .rules()
            .iter()
            .map(|r| r.cgroup_string() + "\n")
            .collect();
        let now = Emulator::from_list(&list).unwrap();
        assert_eq!(now, target);
        assert!(now.transition(&target).is_empty());
        // One more device and less access on another: only the changes,
        // with no moment of deny-all.
        let mut more = container_rules(&[]).unwrap();
        more.push(
            from_spec(
                0,
                &spec(true, Some(LinuxDeviceType::C), Some(10), Some(229), "rwm"),
            )
            .unwrap(),
        );
        more.push(
            from_spec(
                0,
                &spec(false, Some(LinuxDeviceType::C), Some(1), Some(7), "w"),
            )
            .unwrap(),
        );
        let next = Emulator::from_rules(&more).unwrap();
        assert_eq!(
            strings(&now.transition(&next)),
            vec!["deny c 1:7 w", "allow c 10:229 rwm"]
        );
        assert!(Emulator::from_list("x 1:2 rwm").is_err());
    }
}
