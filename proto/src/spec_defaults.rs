//! The mounts and device rules every container's OCI spec starts from, as
//! containerd's `oci.populateDefaultUnixSpec` writes them: one copy for
//! `berthctl run` and berthd's CRI containers and pods.

use serde_json::{Value, json};

/// containerd's default mounts, in its order: /proc, /dev, /dev/pts,
/// /dev/shm, /dev/mqueue, /sys and /run.
pub fn mounts() -> Vec<Value> {
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
    ]
}

/// [`mounts`] without those at the destinations `skip` (the CRI has no
/// /run; a pod binds its own /dev/shm).
pub fn mounts_except(skip: &[&str]) -> Vec<Value> {
    mounts()
        .into_iter()
        .filter(|m| !skip.iter().any(|s| m["destination"] == *s))
        .collect()
}

/// The device cgroup rules every container gets (runc's defaults): deny
/// all, then null, zero, full, tty, random, urandom, console, the pty
/// slaves, ptmx and tun.
pub fn device_rules() -> Vec<Value> {
    let dev = |major: i64, minor: i64| json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"});
    vec![
        json!({"allow": false, "access": "rwm"}),
        dev(1, 3),
        dev(1, 8),
        dev(1, 7),
        dev(5, 0),
        dev(1, 5),
        dev(1, 9),
        dev(5, 1),
        dev(136, -1),
        dev(5, 2),
        dev(10, 200),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn except_drops_only_the_named_destinations_and_keeps_the_order() {
        let dests = |v: Vec<Value>| -> Vec<String> {
            v.iter()
                .map(|m| m["destination"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            dests(mounts_except(&["/run", "/dev/shm"])),
            ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys"]
        );
        assert_eq!(dests(mounts_except(&[])), dests(mounts()));
        assert_eq!(device_rules()[0]["allow"], false);
    }
}
