//! What the runtime of each runtime handler can do, found once when the CRI
//! service starts, as containerd finds it: recursive read-only mounts need
//! `mount_setattr(2)` (Linux 5.12) and, for an external runtime, `rro` among
//! the mount options its `features` subcommand lists (the OCI
//! runtime-features document runc and crun print); the shim's built-in
//! runtime has them whenever the kernel does.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One runtime's abilities the CRI reports (`Status`'s
/// `RuntimeHandlerFeatures`) and checks requests against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    pub recursive_read_only_mounts: bool,
}

/// The features of each handler ("" and the configured ones), given the
/// runtime binary each names ("" = the built-in runtime).
pub fn probe_all<'a>(
    handlers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> HashMap<String, Features> {
    let kernel = berth_mount::setattr_supported();
    handlers
        .into_iter()
        .map(|(handler, binary)| {
            let rro = kernel
                && (binary.is_empty()
                    || mount_options(binary).is_some_and(|o| o.iter().any(|x| x == "rro")));
            (
                handler.to_string(),
                Features {
                    recursive_read_only_mounts: rro,
                },
            )
        })
        .collect()
}

/// The `mountOptions` of `<binary> features`; `None` when it has no such
/// subcommand (older runc, crun before 1.13), fails, or takes over 5 s.
fn mount_options(binary: &str) -> Option<Vec<String>> {
    let mut child = Command::new(binary)
        .arg("features")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_mount_options(&out.stdout)
}

/// `mountOptions` of an OCI runtime-features document.
fn parse_mount_options(json: &[u8]) -> Option<Vec<String>> {
    let doc: serde_json::Value = serde_json::from_slice(json).ok()?;
    Some(
        doc.get("mountOptions")?
            .as_array()?
            .iter()
            .filter_map(|o| o.as_str().map(String::from))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_features_documents_are_read_for_their_mount_options() {
        let doc = br#"{"ociVersionMin":"1.0.0","mountOptions":["ro","rro","rbind"],"hooks":[]}"#;
        assert_eq!(
            parse_mount_options(doc),
            Some(vec!["ro".into(), "rro".into(), "rbind".into()])
        );
        assert_eq!(parse_mount_options(b"{}"), None);
        assert_eq!(parse_mount_options(b"runc: unknown command"), None);
    }

    #[test]
    fn a_runtime_without_features_has_none() {
        let f = probe_all([
            ("", ""),
            ("none", "/nonexistent/runtime"),
            ("false", "false"),
        ]);
        assert_eq!(f["none"], Features::default());
        assert_eq!(f["false"], Features::default());
        // The built-in runtime's follow the kernel (5.12+ everywhere berth runs).
        assert_eq!(
            f[""].recursive_read_only_mounts,
            berth_mount::setattr_supported()
        );
    }
}
