//! Statistics read from cgroup files, in containerd's cgroup v1 metrics
//! format (what clients of this shim decode on either host).

use super::base::{read_keyed, read_u64};
use berth_proto::pb::io::containerd::cgroups::v1 as m;
use std::path::Path;

/// containerd's memory statistics from a v1 memory cgroup.
pub fn v1_memory(d: &Path) -> m::MemoryStat {
    let st = read_keyed(d, "memory.stat");
    let s = |k: &str| st.get(k).copied().unwrap_or(0);
    let entry = |prefix: &str| m::MemoryEntry {
        limit: read_u64(d, &format!("{prefix}.limit_in_bytes")).unwrap_or(0),
        usage: read_u64(d, &format!("{prefix}.usage_in_bytes")).unwrap_or(0),
        max: read_u64(d, &format!("{prefix}.max_usage_in_bytes")).unwrap_or(0),
        failcnt: read_u64(d, &format!("{prefix}.failcnt")).unwrap_or(0),
    };
    m::MemoryStat {
        cache: s("cache"),
        rss: s("rss"),
        rss_huge: s("rss_huge"),
        mapped_file: s("mapped_file"),
        dirty: s("dirty"),
        writeback: s("writeback"),
        pg_pg_in: s("pgpgin"),
        pg_pg_out: s("pgpgout"),
        pg_fault: s("pgfault"),
        pg_maj_fault: s("pgmajfault"),
        inactive_anon: s("inactive_anon"),
        active_anon: s("active_anon"),
        inactive_file: s("inactive_file"),
        active_file: s("active_file"),
        unevictable: s("unevictable"),
        hierarchical_memory_limit: s("hierarchical_memory_limit"),
        hierarchical_swap_limit: s("hierarchical_memsw_limit"),
        total_cache: s("total_cache"),
        total_rss: s("total_rss"),
        total_rss_huge: s("total_rss_huge"),
        total_mapped_file: s("total_mapped_file"),
        total_dirty: s("total_dirty"),
        total_writeback: s("total_writeback"),
        total_pg_pg_in: s("total_pgpgin"),
        total_pg_pg_out: s("total_pgpgout"),
        total_pg_fault: s("total_pgfault"),
        total_pg_maj_fault: s("total_pgmajfault"),
        total_inactive_anon: s("total_inactive_anon"),
        total_active_anon: s("total_active_anon"),
        total_inactive_file: s("total_inactive_file"),
        total_active_file: s("total_active_file"),
        total_unevictable: s("total_unevictable"),
        usage: Some(entry("memory")),
        swap: Some(entry("memory.memsw")),
        kernel: None,
        kernel_tcp: None,
    }
}
