//! Guards for tests that fail midway: what a test started outside its own
//! processes must still go when it ends — shims (they outlive berthd by
//! design) and their containers, mounts under its directory, and cgroups.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Kills every shim serving the daemon at `sock` and each one's container
/// init, then removes the containers' cgroups and unmounts whatever is
/// left under `dir`. A test that ended cleanly has none of these.
pub fn after_daemon(sock: &Path, dir: &Path) {
    // The shim of a task berthd just deleted was told to shut down and
    // exits by itself (it lingers ~100 ms so its last reply and events go
    // out); only one still there after a grace is left behind.
    let grace = Instant::now() + Duration::from_secs(2);
    while shims_serving(sock).into_iter().any(task_deleted) && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    end_shims(sock, dir, true);
}

/// What a power cut does to the containers of the daemon at `sock` (call
/// it with the daemon dead): every shim and container init killed, their
/// cgroups and the mounts under `state` gone.
pub fn power_off(sock: &Path, state: &Path) {
    end_shims(sock, state, false);
}

/// Kills the shims serving `sock` and their inits, removes their cgroups
/// and unmounts what is under `dir`; `report` names each shim killed.
fn end_shims(sock: &Path, dir: &Path, report: bool) {
    let mut killed = Vec::new();
    let mut cgroups = Vec::new();
    for pid in shims_serving(sock) {
        if report && task_deleted(pid) {
            eprintln!("guard: shim {pid} outlived its deleted task (a leak)");
        }
        let bundle = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        if let Some(b) = &bundle {
            if let Some(init) = std::fs::read_to_string(b.join("init.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .filter(|p| *p > 1)
            {
                signal(init);
                killed.push(init);
            }
            if let Some(cg) = cgroups_path(b) {
                cgroups.push(cg);
            }
        }
        if report {
            eprintln!("guard: killing shim {pid} left by the test");
        }
        signal(pid);
        killed.push(pid);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while killed
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}/exe")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for cg in cgroups {
        remove_cgroups(&cg);
    }
    unmount_under(dir);
}

fn signal(pid: i32) {
    // SAFETY: kill(2) with a pid we found serving our own test daemon.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Every process's pid and argv.
/// The shim processes serving the daemon at `sock`.
pub fn shims_serving(sock: &Path) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, args)| {
            args.first().is_some_and(|a| a.ends_with(b"-v2"))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-address" && w[1] == sock.as_os_str().as_bytes())
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Whether the task of shim `pid` was deleted: berthd removes the bundle
/// (the shim's working directory) right after telling it to shut down. A
/// shim already exiting has no working directory left to read.
fn task_deleted(pid: i32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/cwd")).map_or(true, |cwd| {
        cwd.as_os_str().as_bytes().ends_with(b" (deleted)")
    })
}

fn processes() -> Vec<(i32, Vec<Vec<u8>>)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            Some((pid, args))
        })
        .collect()
}

/// The cgroup a bundle's spec names (cgroupfs paths only).
fn cgroups_path(bundle: &Path) -> Option<String> {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ok()?).ok()?;
    let p = spec["linux"]["cgroupsPath"].as_str()?;
    p.starts_with('/').then(|| p.to_string())
}

/// Removes the cgroup `rel` (e.g. a namespace's level, `/<ns>`) and what is
/// below it from every hierarchy, children first. A cgroup that still holds
/// processes cannot go: that is reported, not hidden.
pub fn remove_cgroups(rel: &str) {
    fn dirs(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs(&e.path(), out);
            }
        }
        out.push(dir.to_path_buf());
    }
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let top = h.path().join(rel.trim_start_matches('/'));
        if !top.is_dir() {
            continue;
        }
        let mut all = Vec::new();
        dirs(&top, &mut all);
        for d in all {
            // A cgroup whose last process was just killed stays busy for a
            // moment after the process is gone.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match std::fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        eprintln!("cannot remove cgroup {}: {e}", d.display());
                        break;
                    }
                }
            }
        }
    }
}

/// Unmounts whatever is still mounted under `dir`, deepest first, so that
/// removing the directory never reaches into a mount.
pub fn unmount_under(dir: &Path) {
    let root = dir.as_os_str().as_bytes().to_vec();
    let mut points: Vec<Vec<u8>> = std::fs::read("/proc/self/mountinfo")
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4).map(unescape))
        .filter(|p| p.starts_with(&root) && matches!(p.get(root.len()), None | Some(b'/')))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let Ok(c) = std::ffi::CString::new(p) else {
            continue;
        };
        // SAFETY: umount2 with a valid NUL-terminated path.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal.and_then(|d| {
            let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            u8::try_from(v).ok()
        }) {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(super::unescape(br"/a\040b\134c"), b"/a b\\c");
        assert_eq!(super::unescape(br"/x\9"), br"/x\9");
    }
}
