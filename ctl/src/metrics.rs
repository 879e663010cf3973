//! A task's metrics as the daemon sends them, containerd's cgroup v1 or v2
//! statistics (`io.containerd.cgroups.v1.Metrics` or
//! `io.containerd.cgroups.v2.Metrics`, by the host's hierarchy), read into
//! one summary that `berthctl tasks metrics` prints.

use berth_proto::pb::io::containerd::cgroups::{v1, v2};
use berth_proto::typeurl;
use serde_json::{Value, json};

/// What berthctl shows of either type. Limits keep each type's own "no
/// limit" value (v1: a huge memory limit, pids 0; v2: the largest number),
/// so the JSON carries the numbers as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `v1` or `v2`: which type the numbers came in.
    pub cgroup: &'static str,
    pub memory_usage: u64,
    pub memory_limit: u64,
    /// The peak; v2's type has none.
    pub memory_max: Option<u64>,
    pub cpu_total_ns: u64,
    pub cpu_kernel_ns: u64,
    pub cpu_user_ns: u64,
    pub pids_current: u64,
    pub pids_limit: u64,
}

/// Reads either type; `None` for any other.
pub fn decode(any: &prost_types::Any) -> Option<Summary> {
    if let Some(m) = typeurl::unpack::<v1::Metrics>(any) {
        let usage = m.memory.and_then(|m| m.usage).unwrap_or_default();
        let cpu = m.cpu.and_then(|c| c.usage).unwrap_or_default();
        let pids = m.pids.unwrap_or_default();
        return Some(Summary {
            cgroup: "v1",
            memory_usage: usage.usage,
            memory_limit: usage.limit,
            memory_max: Some(usage.max),
            cpu_total_ns: cpu.total,
            cpu_kernel_ns: cpu.kernel,
            cpu_user_ns: cpu.user,
            pids_current: pids.current,
            pids_limit: pids.limit,
        });
    }
    let m = typeurl::unpack::<v2::Metrics>(any)?;
    let mem = m.memory.unwrap_or_default();
    let cpu = m.cpu.unwrap_or_default();
    let pids = m.pids.unwrap_or_default();
    // v2 counts CPU time in microseconds.
    let ns = |us: u64| us.saturating_mul(1000);
    Some(Summary {
        cgroup: "v2",
        memory_usage: mem.usage,
        memory_limit: mem.usage_limit,
        memory_max: None,
        cpu_total_ns: ns(cpu.usage_usec),
        cpu_kernel_ns: ns(cpu.system_usec),
        cpu_user_ns: ns(cpu.user_usec),
        pids_current: pids.current,
        pids_limit: pids.limit,
    })
}

impl Summary {
    /// `berthctl tasks metrics --format json`.
    pub fn json(&self, id: &str) -> Value {
        json!({"id": id, "cgroup": self.cgroup,
               "memory": {"usage": self.memory_usage, "limit": self.memory_limit, "max": self.memory_max},
               "cpu": {"total_ns": self.cpu_total_ns, "kernel_ns": self.cpu_kernel_ns, "user_ns": self.cpu_user_ns},
               "pids": {"current": self.pids_current, "limit": self.pids_limit}})
    }

    /// The table's rows, sizes in words; no limit (either type's way of
    /// saying so) is "unlimited".
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let size = |n: u64| crate::output::human_size(i64::try_from(n).unwrap_or(i64::MAX));
        // v1 gives "no memory limit" as the largest page-aligned i64,
        // v2 as the largest u64.
        let memory_limit = if self.memory_limit >= (1 << 62) {
            "unlimited".into()
        } else {
            size(self.memory_limit)
        };
        let pids_limit = if self.pids_limit == 0 || self.pids_limit == u64::MAX {
            "unlimited".into()
        } else {
            self.pids_limit.to_string()
        };
        let mut rows = vec![
            ("memory.usage", size(self.memory_usage)),
            ("memory.limit", memory_limit),
        ];
        if let Some(max) = self.memory_max {
            rows.push(("memory.max_usage", size(max)));
        }
        rows.extend([
            (
                "cpu.usage",
                format!("{:.3}s", self.cpu_total_ns as f64 / 1e9),
            ),
            ("pids.current", self.pids_current.to_string()),
            ("pids.limit", pids_limit),
        ]);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_metrics_decode() {
        let m = v1::Metrics {
            memory: Some(v1::MemoryStat {
                usage: Some(v1::MemoryEntry {
                    usage: 2048,
                    limit: 33_554_432,
                    max: 4096,
                    failcnt: 0,
                }),
                ..Default::default()
            }),
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage {
                    total: 1_500_000_000,
                    kernel: 500_000_000,
                    user: 1_000_000_000,
                    per_cpu: vec![],
                }),
                throttling: None,
            }),
            pids: Some(v1::PidsStat {
                current: 3,
                limit: 0,
            }),
            ..Default::default()
        };
        let any = typeurl::pack(&m);
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let s = decode(&any).unwrap();
        assert_eq!(
            s,
            Summary {
                cgroup: "v1",
                memory_usage: 2048,
                memory_limit: 33_554_432,
                memory_max: Some(4096),
                cpu_total_ns: 1_500_000_000,
                cpu_kernel_ns: 500_000_000,
                cpu_user_ns: 1_000_000_000,
                pids_current: 3,
                pids_limit: 0,
            }
        );
        let rows = s.rows();
        assert!(
            rows.contains(&("memory.limit", "32.0 MiB".into())),
            "{rows:?}"
        );
        assert!(
            rows.contains(&("memory.max_usage", "4.0 KiB".into())),
            "{rows:?}"
        );
        assert!(rows.contains(&("cpu.usage", "1.500s".into())), "{rows:?}");
        assert!(
            rows.contains(&("pids.limit", "unlimited".into())),
            "{rows:?}"
        );
        assert_eq!(s.json("c1")["memory"]["max"], 4096);
    }

    #[test]
    fn v2_metrics_decode() {
        let m = v2::Metrics {
            memory: Some(v2::MemoryStat {
                usage: 12288,
                usage_limit: u64::MAX,
                anon: 4096,
                ..Default::default()
            }),
            cpu: Some(v2::CpuStat {
                usage_usec: 2500,
                user_usec: 2000,
                system_usec: 500,
                ..Default::default()
            }),
            pids: Some(v2::PidsStat {
                current: 2,
                limit: 40,
            }),
            ..Default::default()
        };
        let any = typeurl::pack(&m);
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let s = decode(&any).unwrap();
        assert_eq!(
            s,
            Summary {
                cgroup: "v2",
                memory_usage: 12288,
                memory_limit: u64::MAX,
                memory_max: None,
                cpu_total_ns: 2_500_000,
                cpu_kernel_ns: 500_000,
                cpu_user_ns: 2_000_000,
                pids_current: 2,
                pids_limit: 40,
            }
        );
        let rows = s.rows();
        assert!(
            rows.contains(&("memory.usage", "12.0 KiB".into())),
            "{rows:?}"
        );
        assert!(
            rows.contains(&("memory.limit", "unlimited".into())),
            "{rows:?}"
        );
        assert!(
            rows.iter().all(|(k, _)| *k != "memory.max_usage"),
            "{rows:?}"
        );
        assert!(rows.contains(&("cpu.usage", "0.003s".into())), "{rows:?}");
        assert!(rows.contains(&("pids.limit", "40".into())), "{rows:?}");
        let j = s.json("c1");
        assert_eq!(j["cgroup"], "v2");
        assert!(j["memory"]["max"].is_null());
        // v2 with no pids limit ("max") is unlimited too.
        let unlimited = Summary {
            pids_limit: u64::MAX,
            ..s
        };
        assert!(
            unlimited
                .rows()
                .contains(&("pids.limit", "unlimited".into()))
        );
    }

    #[test]
    fn other_types_are_not_metrics() {
        let any = prost_types::Any {
            type_url: "io.containerd.cgroups.v3.Metrics".into(),
            value: vec![],
        };
        assert!(decode(&any).is_none());
    }
}
