//! The host firewall rule that keeps containers off the host's loopback.
//!
//! portmap sets `route_localnet` on the bridge so that the host's
//! `127.0.0.1:<hostPort>` reaches a container. That also makes the host
//! accept packets for 127.0.0.0/8 arriving on the bridge: a container with
//! CAP_NET_RAW (a default capability) can reach any service the host binds
//! to 127.0.0.1 only (the CRI streaming server among them).
//! containerd leaves the fix to the kubelet (its KUBE-FIREWALL rule);
//! berthd also serves nodes without a kubelet, so before any plugin chain
//! with portmap runs it installs the same rule in a chain of its own:
//! drop packets for 127.0.0.0/8 from elsewhere unless conntrack knows them
//! (replies, and portmap's DNAT of the host's own localhost connections).
//! The rule stays when berthd stops, as the kubelet's does: it never drops
//! anything a host without portmap would have accepted.

use crate::error::{Error, Result, io_err};
use tokio::sync::OnceCell;

/// berthd's chain in the filter table, jumped to first from INPUT.
pub const CHAIN: &str = "BERTH-LOCALNET";

/// The rule of [`CHAIN`].
pub const RULE: [&str; 12] = [
    "!",
    "-s",
    "127.0.0.0/8",
    "-d",
    "127.0.0.0/8",
    "-m",
    "conntrack",
    "!",
    "--ctstate",
    "RELATED,ESTABLISHED,DNAT",
    "-j",
    "DROP",
];

/// Installs the rule once per daemon.
#[derive(Debug)]
pub struct LocalnetGuard {
    iptables: String,
    done: OnceCell<()>,
}

impl LocalnetGuard {
    /// A guard installing the rule with the `iptables` binary (a path or a
    /// name looked up in PATH, as portmap does).
    pub fn new(iptables: &str) -> Self {
        LocalnetGuard {
            iptables: iptables.to_string(),
            done: OnceCell::new(),
        }
    }

    /// Makes sure the chain, its rule and INPUT's jump to it exist; runs
    /// iptables only the first time it succeeds.
    pub async fn ensure(&self) -> Result<()> {
        self.done
            .get_or_try_init(|| self.install())
            .await
            .map(|_| ())
            .map_err(|e| {
                e.context(format!(
                    "install the {CHAIN} firewall rule that keeps containers off the host's \
                     127.0.0.0/8 (portmap lets them route there); is iptables working?"
                ))
            })
    }

    async fn install(&self) -> Result<()> {
        if !self.check(&["-N", CHAIN]).await? && !self.check(&["-L", CHAIN, "-n"]).await? {
            return Err(Error::unavailable(format!("cannot create chain {CHAIN}")));
        }
        let comment = [
            "-m",
            "comment",
            "--comment",
            "berthd: no container reaches the host's loopback",
        ];
        let mut full: Vec<&str> = vec![CHAIN];
        full.extend(&comment);
        full.extend(RULE);
        self.ensure_rule("-A", &full).await?;
        self.ensure_rule("-I", &["INPUT", "-j", CHAIN]).await
    }

    /// `-C` the rule, and add it with `how` (`-A`, `-I`) when absent.
    async fn ensure_rule(&self, how: &str, rule: &[&str]) -> Result<()> {
        let mut check = vec!["-C"];
        check.extend(rule);
        if self.check(&check).await? {
            return Ok(());
        }
        let mut add = vec![how];
        add.extend(rule);
        if self.check(&add).await? {
            Ok(())
        } else {
            Err(Error::unavailable(format!(
                "{} {} refused",
                self.iptables,
                add.join(" ")
            )))
        }
    }

    /// Runs `iptables -w -t filter ARGS`: whether it succeeded. A failure
    /// to run it at all is an error.
    async fn check(&self, args: &[&str]) -> Result<bool> {
        let out = tokio::process::Command::new(&self.iptables)
            .args(["-w", "-t", "filter"])
            .args(args)
            .output()
            .await
            .map_err(|e| io_err(format!("run {}", self.iptables), e))?;
        if !out.status.success() {
            tracing::debug!(
                "{} {}: {}",
                self.iptables,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.status.success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake iptables keeping its rules as lines of a file: `-N` fails
    /// for a chain that exists, `-C` for a rule that does not.
    fn fake(dir: &std::path::Path) -> String {
        let script = dir.join("iptables");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nstate={}\necho \"$*\" >> {}\nshift 3\nop=$1; shift\n\
                 touch $state\ncase $op in\n\
                 -N) grep -qx \"chain $*\" $state && exit 1; echo \"chain $*\" >> $state;;\n\
                 -L) grep -qx \"chain $1\" $state || exit 1;;\n\
                 -C) grep -qx -- \"$*\" $state || exit 1;;\n\
                 -A|-I) echo \"$*\" >> $state;;\nesac\n",
                dir.join("state").display(),
                dir.join("calls").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script.display().to_string()
    }

    fn calls(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_whitespace().nth(3).unwrap_or_default().to_string())
            .collect()
    }

    #[tokio::test]
    async fn installs_once_and_leaves_existing_rules_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ipt = fake(dir.path());
        let g = LocalnetGuard::new(&ipt);
        g.ensure().await.unwrap();
        assert_eq!(calls(dir.path()), ["-N", "-C", "-A", "-C", "-I"]);
        let state = std::fs::read_to_string(dir.path().join("state")).unwrap();
        assert!(state.contains(&format!("INPUT -j {CHAIN}")), "{state}");
        assert!(
            state.contains("! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"),
            "{state}"
        );
        // Once per daemon.
        g.ensure().await.unwrap();
        assert_eq!(calls(dir.path()).len(), 5);
        // Another daemon (or a restart) finds everything in place.
        std::fs::remove_file(dir.path().join("calls")).unwrap();
        LocalnetGuard::new(&ipt).ensure().await.unwrap();
        assert_eq!(calls(dir.path()), ["-N", "-L", "-C", "-C"]);
    }

    #[tokio::test]
    async fn no_iptables_is_a_clear_error_and_is_retried() {
        let g = LocalnetGuard::new("/nonexistent/iptables");
        let e = g.ensure().await.unwrap_err().chain();
        assert!(
            e.contains(CHAIN) && e.contains("/nonexistent/iptables"),
            "{e}"
        );
        assert!(g.ensure().await.is_err(), "not remembered as done");
    }
}
