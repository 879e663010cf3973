//! The per-container shim, `containerd-shim-berth-v2`.
//!
//! It speaks containerd's shim v2 contract, so both berthd and real
//! containerd 1.6/1.7 can drive it:
//!
//! * `… start` (run with the bundle as working directory) starts a shim
//!   serving the `containerd.task.v2.Task` ttrpc API on a unix socket and
//!   prints its address; a shim already serving that container is reused.
//! * `… delete` cleans up after a shim that died and prints a
//!   `containerd.task.v2.DeleteResponse` with the saved exit status.
//!
//! The serving shim ([`service`]) is a child subreaper running one
//! current-thread tokio runtime (no other threads, so forking container
//! processes is safe). It runs the container with the built-in OCI runtime
//! ([`runtime::builtin`]) or, when the runtime options name a
//! `BinaryName`, drives runc/crun ([`runtime::external`]). Exit statuses are
//! written durably into the bundle; events go to `$TTRPC_ADDRESS`.

pub mod bootstrap;
pub mod bundle;
pub mod cgroup;
pub mod error;
pub mod events;
pub mod memory;
pub mod runtime;
pub mod service;
pub mod stdio;

pub use error::{Error, Result};

/// Flags containerd passes (Go `flag` syntax: `-name value`).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub namespace: String,
    pub id: String,
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    pub socket: String,
    pub debug: bool,
    pub version: bool,
    pub action: String,
}

/// Parses Go-style flags (`-flag value`, `--flag=value`, bools bare).
pub fn parse_flags(args: &[String]) -> std::result::Result<Flags, String> {
    let mut f = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let Some(name) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            if f.action.is_empty() {
                f.action = a.clone();
            }
            i += 1;
            continue;
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (name, None),
        };
        match name {
            "debug" => f.debug = inline.as_deref() != Some("false"),
            "v" => f.version = true,
            _ => {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or_else(|| format!("flag -{name} needs a value"))?
                    }
                };
                match name {
                    "namespace" => f.namespace = v,
                    "id" => f.id = v,
                    "address" => f.address = v,
                    "publish-binary" => f.publish_binary = v,
                    "bundle" => f.bundle = v,
                    "socket" => f.socket = v,
                    other => return Err(format!("unknown flag -{other}")),
                }
            }
        }
        i += 1;
    }
    Ok(f)
}

/// Entry point of the binary; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags = match parse_flags(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-berth-v2: {e}");
            return 2;
        }
    };
    if flags.version {
        println!(
            "containerd-shim-berth-v2:\n  Version: {}",
            env!("CARGO_PKG_VERSION")
        );
        return 0;
    }
    let r = match flags.action.as_str() {
        "start" => bootstrap::start(&flags),
        "delete" => bootstrap::delete(&flags),
        "" => Err(Error::invalid("no action: expected start or delete")),
        other => Err(Error::invalid(format!(
            "unknown action {other:?}: expected start or delete"
        ))),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-berth-v2: {}", e.chain());
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_flags;

    #[test]
    fn go_style_flags() {
        let a: Vec<String> = [
            "-namespace",
            "default",
            "-address",
            "/run/x.sock",
            "-publish-binary",
            "/bin/c",
            "-id",
            "c1",
            "-debug",
            "start",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let f = parse_flags(&a).unwrap();
        assert_eq!(
            (
                f.namespace.as_str(),
                f.id.as_str(),
                f.action.as_str(),
                f.debug
            ),
            ("default", "c1", "start", true)
        );
        let f = parse_flags(&["--bundle=/b".to_string(), "delete".to_string()]).unwrap();
        assert_eq!((f.bundle.as_str(), f.action.as_str()), ("/b", "delete"));
        assert!(parse_flags(&["-id".to_string()]).is_err());
        assert!(parse_flags(&["-bogus".to_string(), "x".to_string()]).is_err());
    }
}
