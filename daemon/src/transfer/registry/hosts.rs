//! Which hosts serve a registry: containerd's `hosts.toml` layout under
//! `[registry] config_path` (mirrors tried in order, then `server` or the
//! registry itself), and the older certs.d layout (`*.crt` files only).
//!
//! For `registry` the directory used is the first of `<dir>/<host>_<port>_`
//! (when there is a port), `<dir>/<host[:port]>` and `<dir>/_default` that
//! exists, as containerd's `HostDirFromRoot` picks it.

use super::request::ResolverOptions;
use crate::config::RegistryConfig;
use crate::error::{Error, Result};
use oci_client::RegistryOperation;
use oci_client::client::{Certificate, CertificateEncoding};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// True for hosts containerd talks plain HTTP to by default.
pub fn is_localhost(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // `[::1]:5000` or `host:port`; a bare `::1` has more colons.
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn parse_reference(name: &str) -> Result<oci_client::Reference> {
    name.parse()
        .map_err(|e| Error::invalid(format!("image reference {name:?} is not valid: {e}")))
}

/// What a host may be used for (`capabilities = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One host to talk to for a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// `host[:port]` connected to.
    pub host: String,
    pub plain_http: bool,
    pub capabilities: Capabilities,
    pub skip_verify: bool,
    /// CA certificates (PEM files) trusted for this host.
    pub ca: Vec<PathBuf>,
    /// The registry the reference names (no `ns=` query, no mirror).
    pub upstream: bool,
}

/// Keys of a host entry (and of the file's top level, for `server`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    capabilities: Option<Vec<String>>,
    ca: Option<StringOrList>,
    skip_verify: Option<bool>,
    // Known to containerd but not supported here: refused by name.
    client: Option<toml::Value>,
    header: Option<toml::Value>,
    override_path: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// The file: the upstream's keys (`server` and an [`Entry`]'s) at the top.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    server: Option<String>,
    #[serde(default)]
    host: BTreeMap<String, toml::Spanned<Entry>>,
    capabilities: Option<Vec<String>>,
    ca: Option<StringOrList>,
    skip_verify: Option<bool>,
    client: Option<toml::Value>,
    header: Option<toml::Value>,
    override_path: Option<bool>,
}

/// The directory holding `registry`'s configuration, if any.
fn host_dir(dir: &Path, registry: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some((h, port)) = registry.rsplit_once(':') {
        candidates.push(dir.join(format!("{h}_{port}_")));
    }
    candidates.push(dir.join(registry));
    candidates.push(dir.join("_default"));
    candidates.into_iter().find(|p| p.is_dir())
}

/// The hosts to try for `registry`, in order; the last is the upstream
/// (`server`, or the registry itself). `plain_http` is the client's
/// `--plain-http` (default scheme http for the registry itself).
pub fn hosts(dir: &Path, registry: &str, plain_http: bool) -> Result<Vec<RegistryHost>> {
    let upstream_default = |ca: Vec<PathBuf>| RegistryHost {
        host: registry.to_string(),
        // A private CA makes a localhost registry HTTPS (as with certs.d).
        plain_http: plain_http || (is_localhost(registry) && ca.is_empty()),
        capabilities: Capabilities::ALL,
        skip_verify: false,
        ca,
        upstream: true,
    };
    let Some(hdir) = host_dir(dir, registry) else {
        return Ok(vec![upstream_default(Vec::new())]);
    };
    let file = hdir.join("hosts.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) if !t.trim().is_empty() => t,
        Ok(_) => return Ok(vec![upstream_default(crt_files(&hdir)?)]),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(vec![upstream_default(crt_files(&hdir)?)]);
        }
        Err(e) => return Err(crate::error::io_err(format!("read {}", file.display()), e)),
    };
    parse(&text, &hdir, registry, plain_http)
        .map_err(|e| e.context(format!("registry configuration {}", file.display())))
}

/// `*.crt` files of a certs.d-style directory, sorted.
fn crt_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| crate::error::io_err(format!("read {}", dir.display()), e))?;
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "crt"))
        .collect();
    out.sort();
    Ok(out)
}

/// Parses a hosts.toml whose relative paths are under `base`.
pub(crate) fn parse(
    text: &str,
    base: &Path,
    registry: &str,
    plain_http: bool,
) -> Result<Vec<RegistryHost>> {
    let f: File = toml::from_str(text).map_err(|e| Error::invalid(e.to_string()))?;
    let mut hosts: Vec<(usize, String, Entry)> = f
        .host
        .into_iter()
        .map(|(k, v)| (v.span().start, k, v.into_inner()))
        .collect();
    // Hosts are tried in the order the file lists them.
    hosts.sort_by_key(|h| h.0);
    let mut out = Vec::new();
    for (_, url, e) in hosts {
        out.push(host_entry(&url, &e, base).map_err(|err| err.context(format!("[host.{url:?}]")))?);
    }
    let top = Entry {
        capabilities: f.capabilities,
        ca: f.ca,
        skip_verify: f.skip_verify,
        client: f.client,
        header: f.header,
        override_path: f.override_path,
    };
    match f.server.as_deref().filter(|s| !s.is_empty()) {
        Some(server) => {
            let mut h = host_entry(server, &top, base).map_err(|e| e.context("server"))?;
            h.upstream = h.host == registry;
            out.push(h);
        }
        None => {
            let mut h = host_entry(registry, &top, base)?;
            // The registry itself: its scheme follows the usual rule.
            h.plain_http = plain_http || (is_localhost(registry) && h.ca.is_empty());
            h.upstream = true;
            out.push(h);
        }
    }
    Ok(out)
}

fn host_entry(url: &str, e: &Entry, base: &Path) -> Result<RegistryHost> {
    let refuse = |key: &str| {
        Err(Error::invalid(format!(
            "{key} is not supported by berthd (only server, capabilities, ca and skip_verify are)"
        )))
    };
    if e.client.is_some() {
        return refuse("client (TLS client certificates)");
    }
    if e.header.is_some() {
        return refuse("header");
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((s @ ("http" | "https"), r)) => (s, r),
        Some((s, _)) => {
            return Err(Error::invalid(format!(
                "{url:?}: scheme {s:?} is not http or https"
            )));
        }
        None => ("https", url),
    };
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p.trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(Error::invalid(format!("{url:?} names no host")));
    }
    // The registry client builds `/v2/...` URLs on the bare host.
    if !(path.is_empty() || path == "v2") || e.override_path == Some(true) {
        return Err(Error::invalid(format!(
            "{url:?}: a path other than /v2 (or override_path) is not supported: berthd talks to <host>/v2/"
        )));
    }
    let capabilities = match &e.capabilities {
        None => Capabilities::ALL,
        Some(list) => {
            let mut c = Capabilities {
                pull: false,
                resolve: false,
                push: false,
            };
            for cap in list {
                match cap.to_ascii_lowercase().as_str() {
                    "pull" => c.pull = true,
                    "resolve" => c.resolve = true,
                    "push" => c.push = true,
                    other => {
                        return Err(Error::invalid(format!(
                            "unknown capability {other:?}: use pull, resolve or push"
                        )));
                    }
                }
            }
            c
        }
    };
    let abs = |p: &String| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base.join(p) }
    };
    let ca = match &e.ca {
        None => Vec::new(),
        Some(StringOrList::One(s)) => vec![abs(s)],
        Some(StringOrList::Many(v)) => v.iter().map(abs).collect(),
    };
    Ok(RegistryHost {
        host: host.to_string(),
        plain_http: scheme == "http",
        capabilities,
        skip_verify: e.skip_verify.unwrap_or(false),
        ca,
        upstream: false,
    })
}

/// The hosts that serve the registry of `name` (a normalized
/// reference), in the order to try them (`hosts.toml`), with `op`'s
/// capability.
pub(crate) fn usable(
    cfg: &RegistryConfig,
    name: &str,
    opts: &ResolverOptions,
    op: RegistryOperation,
) -> Result<Vec<RegistryHost>> {
    let reference = parse_reference(name)?;
    let registry = reference.registry();
    let dir = opts.host_dir.as_deref().unwrap_or(&cfg.config_path);
    let all = hosts(dir, registry, opts.plain_http)?;
    // A tag is resolved on `resolve` hosts, a digest fetched from `pull` ones.
    let by_digest = reference.digest().is_some();
    let usable: Vec<RegistryHost> = all
        .into_iter()
        .filter(|h| match op {
            RegistryOperation::Push => h.capabilities.push,
            RegistryOperation::Pull => h.capabilities.pull && (by_digest || h.capabilities.resolve),
        })
        .collect();
    if usable.is_empty() {
        return Err(Error::invalid(format!(
            "no host configured for registry {registry} under {} may be used to {}",
            dir.display(),
            match op {
                RegistryOperation::Push => "push",
                RegistryOperation::Pull => "pull",
            }
        )));
    }
    Ok(usable)
}

/// The PEM CA certificates a host configuration names.
pub(super) fn certificates(files: &[std::path::PathBuf]) -> Result<Vec<Certificate>> {
    files
        .iter()
        .map(|p| {
            let data = std::fs::read(p).map_err(|e| {
                crate::error::io_err(format!("read CA certificate {}", p.display()), e)
            })?;
            Ok(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_detection() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:80",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_localhost(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "registry.local:5000",
            "localhost.example",
        ] {
            assert!(!is_localhost(h), "{h}");
        }
    }

    #[test]
    fn mirrors_in_file_order_then_server() {
        let text = r#"
server = "https://registry.k8s.io"

[host."https://z-mirror.example"]
  capabilities = ["pull"]
  ca = "ca.pem"

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
"#;
        let h = parse(
            text,
            Path::new("/etc/b/registry.k8s.io"),
            "registry.k8s.io",
            false,
        )
        .unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].host, "z-mirror.example");
        assert!(!h[0].plain_http && h[0].capabilities.pull && !h[0].capabilities.resolve);
        assert_eq!(
            h[0].ca,
            vec![PathBuf::from("/etc/b/registry.k8s.io/ca.pem")]
        );
        assert_eq!(h[1].host, "127.0.0.1:5000");
        assert!(h[1].plain_http && h[1].skip_verify && !h[1].upstream);
        assert!(!h[1].capabilities.push);
        assert_eq!(h[2].host, "registry.k8s.io");
        assert!(h[2].upstream && h[2].capabilities == Capabilities::ALL && !h[2].plain_http);
    }

    #[test]
    fn without_server_the_registry_itself_comes_last() {
        let text = "[host.\"http://mirror:5000/v2\"]\ncapabilities = [\"pull\",\"resolve\"]\n";
        let h = parse(text, Path::new("/x"), "127.0.0.1:5001", false).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].host, "mirror:5000");
        assert_eq!(h[1].host, "127.0.0.1:5001");
        assert!(
            h[1].upstream && h[1].plain_http,
            "localhost upstream: plain http"
        );
        // A server elsewhere is not the reference's registry.
        let h = parse(
            "server = \"http://other:80\"",
            Path::new("/x"),
            "docker.io",
            false,
        )
        .unwrap();
        assert_eq!(h.len(), 1);
        assert!(!h[0].upstream && h[0].plain_http && h[0].host == "other:80");
    }

    #[test]
    fn unsupported_and_wrong_keys_are_refused_by_name() {
        for (text, word) in [
            ("[host.\"https://m\"]\nheader = { X = \"y\" }", "header"),
            ("[host.\"https://m\"]\nclient = \"c.pem\"", "client"),
            ("[host.\"https://m/path\"]\n", "path"),
            (
                "[host.\"https://m\"]\noverride_path = true",
                "override_path",
            ),
            ("[host.\"https://m\"]\ncapabilities = [\"fly\"]", "fly"),
            ("[host.\"ftp://m\"]\n", "ftp"),
            ("bogus = 1", "bogus"),
        ] {
            let e = parse(text, Path::new("/x"), "r.io", false).unwrap_err();
            assert!(e.chain().contains(word), "{text}: {}", e.chain());
        }
    }

    #[test]
    fn directories_and_certs_d_fallback() {
        let d = tempfile::tempdir().unwrap();
        // Nothing configured: the registry itself.
        let h = hosts(d.path(), "reg.io", false).unwrap();
        assert_eq!(h.len(), 1);
        assert!(h[0].upstream && !h[0].plain_http && h[0].ca.is_empty());
        // certs.d: *.crt under <host:port>, which makes localhost HTTPS.
        std::fs::create_dir(d.path().join("127.0.0.1:5000")).unwrap();
        std::fs::write(d.path().join("127.0.0.1:5000/ca.crt"), b"pem").unwrap();
        std::fs::write(d.path().join("127.0.0.1:5000/notes.txt"), b"x").unwrap();
        let h = hosts(d.path(), "127.0.0.1:5000", false).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].ca.len(), 1);
        assert!(!h[0].plain_http);
        // containerd's host_port_ directory wins over host:port.
        std::fs::create_dir(d.path().join("127.0.0.1_5000_")).unwrap();
        std::fs::write(
            d.path().join("127.0.0.1_5000_/hosts.toml"),
            "[host.\"http://127.0.0.1:6000\"]\n",
        )
        .unwrap();
        let h = hosts(d.path(), "127.0.0.1:5000", false).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].host, "127.0.0.1:6000");
        // _default serves every registry without its own directory.
        std::fs::create_dir(d.path().join("_default")).unwrap();
        std::fs::write(
            d.path().join("_default/hosts.toml"),
            "[host.\"http://127.0.0.1:7000\"]\ncapabilities = [\"pull\",\"resolve\"]\n",
        )
        .unwrap();
        let h = hosts(d.path(), "quay.io", true).unwrap();
        assert_eq!(h[0].host, "127.0.0.1:7000");
        assert!(
            h[1].upstream && h[1].plain_http,
            "--plain-http for the registry itself"
        );
        // A broken file is an error naming it.
        std::fs::write(d.path().join("_default/hosts.toml"), "server = [").unwrap();
        let e = hosts(d.path(), "quay.io", false).unwrap_err();
        assert!(e.chain().contains("hosts.toml"), "{}", e.chain());
    }
}
