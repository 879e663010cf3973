//! ContainerStats and ListContainerStats: CPU and memory from the task
//! service's metrics (the shim's cgroup statistics, v1 or v2), the
//! writable layer's usage from the snapshotter, as containerd's CRI.

use super::container::now_ns;
use super::store::CriContainer;
use super::{CriService, NAMESPACE};
use crate::error::{Error, Result};
use berth_proto::cri;
use berth_proto::filters::Filter;
use berth_proto::pb::io::containerd::cgroups::{v1, v2};
use berth_proto::typeurl;

/// CPU time (ns) and memory (usage, working set, rss, faults) of a task's
/// metrics; `None` for an unknown type.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sample {
    pub cpu_ns: u64,
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub available: Option<u64>,
    /// Tasks in the cgroup (the pids controller's count: threads too).
    pub pids: u64,
}

/// The working set as the kubelet counts it: usage less inactive file
/// pages (never below zero).
fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

pub fn sample(any: &prost_types::Any) -> Option<Sample> {
    if let Some(m) = typeurl::unpack::<v1::Metrics>(any) {
        let mem = m.memory.unwrap_or_default();
        let usage = mem.usage.unwrap_or_default();
        let limit = usage.limit;
        let ws = working_set(usage.usage, mem.total_inactive_file);
        return Some(Sample {
            cpu_ns: m.cpu.and_then(|c| c.usage).map(|u| u.total).unwrap_or(0),
            usage: usage.usage,
            working_set: ws,
            rss: mem.total_rss,
            page_faults: mem.total_pg_fault,
            major_page_faults: mem.total_pg_maj_fault,
            // v1 reports "no limit" as a huge number.
            available: (limit < (1 << 62)).then(|| limit.saturating_sub(ws)),
            pids: m.pids.map_or(0, |p| p.current),
        });
    }
    let m = typeurl::unpack::<v2::Metrics>(any)?;
    let mem = m.memory.unwrap_or_default();
    let ws = working_set(mem.usage, mem.inactive_file);
    Some(Sample {
        cpu_ns: m
            .cpu
            .map(|c| c.usage_usec.saturating_mul(1000))
            .unwrap_or(0),
        usage: mem.usage,
        working_set: ws,
        rss: mem.anon,
        page_faults: mem.pgfault,
        major_page_faults: mem.pgmajfault,
        available: (mem.usage_limit < u64::MAX / 2).then(|| mem.usage_limit.saturating_sub(ws)),
        pids: m.pids.map_or(0, |p| p.current),
    })
}

fn u(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

impl CriService {
    /// The statistics of one container (CPU and memory only while it runs).
    async fn stats_of(&self, c: &CriContainer) -> Result<cri::ContainerStats> {
        Ok(self.stats_and_sample(c).await?.0)
    }

    /// [`Self::stats_of`] and the task's raw sample they came from.
    async fn stats_and_sample(
        &self,
        c: &CriContainer,
    ) -> Result<(cri::ContainerStats, Option<Sample>)> {
        let cfg = c.meta.config.clone().unwrap_or_default();
        let now = now_ns();
        let mut out = cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: c.meta.id.clone(),
                metadata: cfg.metadata.clone(),
                labels: cfg.labels.clone(),
                annotations: cfg.annotations.clone(),
            }),
            ..Default::default()
        };
        let rec = &c.record.record;
        if !rec.snapshot_key.is_empty()
            && let Ok(usage) = self
                .snapshots
                .usage(NAMESPACE, &rec.snapshotter, &rec.snapshot_key)
        {
            out.writable_layer = Some(cri::FilesystemUsage {
                timestamp: now,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self
                        .root
                        .join("snapshots")
                        .join(&rec.snapshotter)
                        .to_string_lossy()
                        .into_owned(),
                }),
                used_bytes: u(u64::try_from(usage.size).unwrap_or(0)),
                inodes_used: u(u64::try_from(usage.inodes).unwrap_or(0)),
            });
        }
        let sample = self.task_sample(&c.meta.id).await?;
        if let Some(s) = &sample {
            out.cpu = Some(cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: u(s.cpu_ns),
                usage_nano_cores: None,
                psi: None,
            });
            out.memory = Some(cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: u(s.working_set),
                available_bytes: s.available.and_then(u),
                usage_bytes: u(s.usage),
                rss_bytes: u(s.rss),
                page_faults: u(s.page_faults),
                major_page_faults: u(s.major_page_faults),
                psi: None,
            });
        }
        Ok((out, sample))
    }

    pub async fn container_stats(
        &self,
        r: cri::ContainerStatsRequest,
    ) -> Result<cri::ContainerStatsResponse> {
        let c = self.store.container(&r.container_id)?;
        Ok(cri::ContainerStatsResponse {
            stats: Some(self.stats_of(&c).await?),
        })
    }

    pub async fn list_container_stats(
        &self,
        r: cri::ListContainerStatsRequest,
    ) -> Result<cri::ListContainerStatsResponse> {
        let f = r.filter.unwrap_or_default();
        let filter = cri::ContainerFilter {
            id: f.id,
            state: None,
            pod_sandbox_id: f.pod_sandbox_id,
            label_selector: f.label_selector,
        };
        let mut stats = Vec::new();
        for c in self.store.cri_containers()? {
            if !super::container::matches(&c, &filter) {
                continue;
            }
            stats.push(self.stats_of(&c).await?);
        }
        Ok(cri::ListContainerStatsResponse { stats })
    }

    /// The metrics sample of task `id` (none when it does not run).
    async fn task_sample(&self, id: &str) -> Result<Option<Sample>> {
        let filter = Filter::parse(&format!("id=={id}"))
            .map_err(|e| Error::internal(format!("metrics filter: {e}")))?;
        Ok(self
            .tasks
            .metrics(NAMESPACE, &filter)
            .await?
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.data.as_ref())
            .and_then(sample))
    }

    /// A pod's statistics: CPU, memory and process count of its infra
    /// task and running containers added up (each has a cgroup of its own
    /// below the pod's parent), its network namespace's interfaces, and
    /// each container's statistics.
    async fn pod_stats_of(&self, sb: &super::store::Sandbox) -> Result<cri::PodSandboxStats> {
        let now = now_ns();
        let cfg = sb.meta.config.clone().unwrap_or_default();
        let mut total = self.task_sample(&sb.meta.id).await?;
        let mut containers = Vec::new();
        for c in self.store.containers_of(&sb.meta.id)? {
            let (st, sample) = self.stats_and_sample(&c).await?;
            if let Some(s) = sample {
                let t = total.get_or_insert_with(Sample::default);
                t.cpu_ns += s.cpu_ns;
                t.usage += s.usage;
                t.working_set += s.working_set;
                t.rss += s.rss;
                t.page_faults += s.page_faults;
                t.major_page_faults += s.major_page_faults;
                t.pids += s.pids;
            }
            containers.push(st);
        }
        // Only a pod with a network namespace of its own (ready, not host
        // network) has network usage.
        let netns = self.networks.netns().path(NAMESPACE, &sb.meta.id)?;
        let network = if netns.exists() {
            super::netstats::usage(&netns, now)
                .await
                .inspect_err(|e| tracing::debug!("pod {} network usage: {}", sb.meta.id, e.chain()))
                .ok()
        } else {
            None
        };
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: sb.meta.id.clone(),
                metadata: cfg.metadata.clone(),
                labels: cfg.labels.clone(),
                annotations: cfg.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: total.as_ref().map(|s| cri::CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: u(s.cpu_ns),
                    usage_nano_cores: None,
                    psi: None,
                }),
                memory: total.as_ref().map(|s| cri::MemoryUsage {
                    timestamp: now,
                    working_set_bytes: u(s.working_set),
                    available_bytes: None,
                    usage_bytes: u(s.usage),
                    rss_bytes: u(s.rss),
                    page_faults: u(s.page_faults),
                    major_page_faults: u(s.major_page_faults),
                    psi: None,
                }),
                process: total.as_ref().map(|s| cri::ProcessUsage {
                    timestamp: now,
                    process_count: u(s.pids),
                }),
                network,
                containers,
                ..Default::default()
            }),
            windows: None,
        })
    }

    pub async fn pod_sandbox_stats(
        &self,
        r: cri::PodSandboxStatsRequest,
    ) -> Result<cri::PodSandboxStatsResponse> {
        let sb = self.store.sandbox(&r.pod_sandbox_id)?;
        Ok(cri::PodSandboxStatsResponse {
            stats: Some(self.pod_stats_of(&sb).await?),
        })
    }

    pub async fn list_pod_sandbox_stats(
        &self,
        r: cri::ListPodSandboxStatsRequest,
    ) -> Result<cri::ListPodSandboxStatsResponse> {
        let f = r.filter.unwrap_or_default();
        let mut stats = Vec::new();
        for sb in self.store.sandboxes()? {
            let labels = sb
                .meta
                .config
                .as_ref()
                .map(|c| c.labels.clone())
                .unwrap_or_default();
            if !sb.meta.id.starts_with(&f.id)
                || !f
                    .label_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            {
                continue;
            }
            stats.push(self.pod_stats_of(&sb).await?);
        }
        Ok(cri::ListPodSandboxStatsResponse { stats })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_from_both_cgroup_versions() {
        let v1m = v1::Metrics {
            pids: Some(v1::PidsStat {
                current: 3,
                limit: 0,
            }),
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage {
                    total: 5_000,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            memory: Some(v1::MemoryStat {
                total_inactive_file: 100,
                total_rss: 700,
                usage: Some(v1::MemoryEntry {
                    usage: 1_000,
                    limit: 8 << 20,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = sample(&typeurl::pack(&v1m)).unwrap();
        assert_eq!(
            (s.cpu_ns, s.usage, s.working_set, s.rss),
            (5_000, 1_000, 900, 700)
        );
        assert_eq!(s.available, Some((8 << 20) - 900));
        assert_eq!(s.pids, 3);
        let v2m = v2::Metrics {
            cpu: Some(v2::CpuStat {
                usage_usec: 3,
                ..Default::default()
            }),
            memory: Some(v2::MemoryStat {
                usage: 50,
                inactive_file: 80,
                usage_limit: u64::MAX,
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = sample(&typeurl::pack(&v2m)).unwrap();
        assert_eq!((s.cpu_ns, s.working_set, s.available), (3_000, 0, None));
        assert_eq!(s.pids, 0, "no pids controller: none counted");
        assert!(sample(&prost_types::Any::default()).is_none());
    }
}
