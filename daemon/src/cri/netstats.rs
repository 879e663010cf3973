//! A pod's network usage for PodSandboxStats: the counters of the
//! interfaces in its network namespace (`/proc/net/dev` as a thread inside
//! it sees them), `eth0` as the default interface, as containerd's CRI
//! reports it. Host-network pods have none of their own.

use crate::error::{Error, Result, io_err};
use berth_proto::cri;
use std::os::fd::AsFd;
use std::path::Path;

/// The interface the kubelet takes as the pod's (CNI's `CNI_IFNAME`).
const DEFAULT_INTERFACE: &str = "eth0";

/// The usage of every interface but loopback in `/proc/net/dev` text.
pub fn parse(proc_net_dev: &str) -> Vec<cri::NetworkInterfaceUsage> {
    let u = |v: u64| Some(cri::UInt64Value { value: v });
    proc_net_dev
        .lines()
        .filter_map(|l| {
            let (name, counters) = l.split_once(':')?;
            let n: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<std::result::Result<_, _>>()
                .ok()?;
            // Receive: bytes packets errs drop fifo frame compressed
            // multicast; transmit: bytes packets errs …
            (n.len() >= 11 && name.trim() != "lo").then(|| cri::NetworkInterfaceUsage {
                name: name.trim().to_string(),
                rx_bytes: u(n[0]),
                rx_errors: u(n[2]),
                tx_bytes: u(n[8]),
                tx_errors: u(n[10]),
            })
        })
        .collect()
}

/// The network usage seen inside the namespace bind-mounted at `netns`.
pub async fn usage(netns: &Path, timestamp: i64) -> Result<cri::NetworkUsage> {
    let f =
        std::fs::File::open(netns).map_err(|e| io_err(format!("open {}", netns.display()), e))?;
    let text = tokio::task::spawn_blocking(move || {
        // A thread of its own: setns changes only the calling thread, and
        // this one is thrown away afterwards.
        std::thread::spawn(move || -> Result<String> {
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| io_err("enter the pod's network namespace", e.into()))?;
            std::fs::read_to_string("/proc/thread-self/net/dev")
                .map_err(|e| io_err("read the pod's /proc/net/dev", e))
        })
        .join()
        .map_err(|_| Error::internal("network statistics thread panicked"))?
    })
    .await
    .map_err(|e| Error::internal(format!("network statistics: {e}")))??;
    let interfaces = parse(&text);
    Ok(cri::NetworkUsage {
        timestamp,
        default_interface: interfaces
            .iter()
            .find(|i| i.name == DEFAULT_INTERFACE)
            .cloned(),
        interfaces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_every_interface_but_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0\n  \
            eth0:    1234      10    1    0    0     0          0         0     5678      20    2    0    0     0       0          0\n";
        let v = parse(text);
        assert_eq!(v.len(), 1);
        let e = &v[0];
        assert_eq!(e.name, "eth0");
        let get = |x: &Option<cri::UInt64Value>| x.as_ref().map(|v| v.value);
        assert_eq!(
            (
                get(&e.rx_bytes),
                get(&e.rx_errors),
                get(&e.tx_bytes),
                get(&e.tx_errors)
            ),
            (Some(1234), Some(1), Some(5678), Some(2))
        );
        assert!(parse("garbage\nx: 1 2\n").is_empty());
    }

    #[tokio::test]
    async fn a_missing_namespace_is_an_error() {
        let e = usage(Path::new("/nonexistent/netns"), 0).await.unwrap_err();
        assert!(e.chain().contains("/nonexistent/netns"), "{}", e.chain());
    }
}
