//! One authenticated connection to a repository, and how registry failures
//! become errors that say which registry, what it answered, and what to do.

use super::hosts::RegistryHost;
use super::request::Credentials;
use crate::config::RegistryConfig;
use crate::error::{Error, Result};
use berth_proto::errdefs::Kind;
use oci_client::RegistryOperation;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use std::time::Duration;

/// reqwest is built without a default TLS crypto provider; use ring.
fn install_crypto() {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A connection to one repository of one registry, authenticated.
pub(crate) struct Remote {
    pub client: oci_client::Client,
    /// The repository and tag or digest asked for.
    pub reference: oci_client::Reference,
    /// The registry as the reference names it (`127.0.0.1:5000`, `docker.io`).
    pub host: String,
    /// The host talked to when it is a mirror (`hosts.toml`), else None.
    pub mirror: Option<String>,
    auth: RegistryAuth,
    anonymous: bool,
    plain_http: bool,
    retries: u32,
    read_timeout: Duration,
    pub max_concurrent: usize,
}

impl Remote {
    /// Connects to `endpoint` (one of [`super::hosts::usable`]) for the
    /// registry of `name` (a normalized reference) for `op`, asking
    /// `creds` for credentials for the host talked to.
    pub async fn new(
        cfg: &RegistryConfig,
        name: &str,
        endpoint: &RegistryHost,
        creds: Option<&dyn Credentials>,
        op: RegistryOperation,
    ) -> Result<Remote> {
        install_crypto();
        let mut reference = super::hosts::parse_reference(name)?;
        let host = reference.registry().to_string();
        let mirror = (!endpoint.upstream).then(|| endpoint.host.clone());
        if let Some(m) = &mirror {
            // Requests go to the mirror, with `ns=<registry>` as containerd sends.
            reference.set_mirror_registry(m.clone());
        }
        let dir = endpoint
            .ca
            .first()
            .and_then(|p| p.parent())
            .unwrap_or(&cfg.config_path);
        let certs = super::hosts::certificates(&endpoint.ca)?;
        let plain_http = endpoint.plain_http;
        let read_timeout = Duration::from_secs(cfg.read_timeout_secs.max(1));
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: certs,
            accept_invalid_certificates: endpoint.skip_verify,
            connect_timeout: Some(Duration::from_secs(cfg.connect_timeout_secs.max(1))),
            read_timeout: Some(read_timeout),
            use_monolithic_push: true,
            max_concurrent_download: cfg.max_concurrent_downloads.max(1),
            max_concurrent_upload: cfg.max_concurrent_downloads.max(1),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| {
            Error::invalid(format!(
                "cannot set up a client for registry {host}: {e}: check the certificates under {}",
                dir.display()
            ))
        })?;
        let found = match creds {
            Some(c) => c.get(&endpoint.host, name).await?,
            None => None,
        };
        let anonymous = found.is_none();
        let auth = match found {
            Some((user, secret)) if user.is_empty() => RegistryAuth::Bearer(secret),
            Some((user, secret)) => RegistryAuth::Basic(user, secret),
            None => RegistryAuth::Anonymous,
        };
        let remote = Remote {
            client,
            reference,
            host,
            mirror,
            auth,
            anonymous,
            plain_http,
            retries: cfg.retries,
            read_timeout,
            max_concurrent: cfg.max_concurrent_downloads.max(1),
        };
        remote
            .client
            .store_auth_if_needed(remote.reference.resolve_registry(), &remote.auth)
            .await;
        // Authenticate now, so a refusal is reported as such.
        remote
            .retry("authenticate for", || {
                remote.client.auth(&remote.reference, &remote.auth, op)
            })
            .await?;
        Ok(remote)
    }

    /// The auth this remote uses (for calls that take it explicitly).
    pub fn auth(&self) -> &RegistryAuth {
        &self.auth
    }

    /// The same repository at `digest`.
    pub fn at_digest(&self, digest: &str) -> oci_client::Reference {
        let mut r = oci_client::Reference::with_digest(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            digest.to_string(),
        );
        if let Some(m) = &self.mirror {
            r.set_mirror_registry(m.clone());
        }
        r
    }

    /// The registry, and the mirror talked to if any, for messages.
    fn shown(&self) -> String {
        match &self.mirror {
            Some(m) => format!("{m} (mirror of {})", self.host),
            None => self.host.clone(),
        }
    }

    /// `repository:tag` or `repository@digest` as the user would write it.
    pub fn describe(&self) -> String {
        self.reference.whole()
    }

    /// Runs `f`, retrying transient failures with exponential backoff.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.retries && transient(&e) => {
                    attempt += 1;
                    let wait = backoff(attempt);
                    tracing::debug!(
                        registry = %self.host,
                        "{what}: {e}; retry {attempt}/{} in {wait:?}",
                        self.retries
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(self.error(what, &e)),
            }
        }
    }

    /// Whether another attempt is due after `attempt` failures with `e`.
    pub fn should_retry(&self, attempt: u32, e: &OciDistributionError) -> bool {
        attempt < self.retries && transient(e)
    }

    /// The error a registry failure becomes: which registry, what it
    /// answered, and what to do about it.
    pub fn error(&self, what: &str, e: &OciDistributionError) -> Error {
        let host = &self.shown();
        let subject = self.describe();
        let creds_hint = self.creds_hint();
        use OciDistributionError as E;
        let (kind, msg) = match e {
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => (
                Kind::Unauthenticated,
                format!("registry {host} refused access (401 Unauthorized): {creds_hint}"),
            ),
            E::ImageManifestNotFoundError(m) => (
                Kind::NotFound,
                format!("{subject}: not found on registry {host}: {m}"),
            ),
            E::RegistryError { envelope, url } => {
                let code = envelope.errors.first().map(|e| &e.code);
                let detail = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let kind = match code {
                    Some(OciErrorCode::Unauthorized) => Kind::Unauthenticated,
                    Some(OciErrorCode::Denied) => Kind::PermissionDenied,
                    Some(
                        OciErrorCode::BlobUnknown
                        | OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound,
                    ) => Kind::NotFound,
                    Some(OciErrorCode::Toomanyrequests) => Kind::ResourceExhausted,
                    Some(OciErrorCode::Unsupported) => Kind::Unimplemented,
                    _ => Kind::InvalidArgument,
                };
                let hint = match kind {
                    Kind::Unauthenticated => format!(": {creds_hint}"),
                    Kind::PermissionDenied => {
                        ": the credentials lack access to this repository".to_string()
                    }
                    Kind::ResourceExhausted => {
                        ": the registry rate-limits this client; wait and retry".to_string()
                    }
                    _ => String::new(),
                };
                (
                    kind,
                    format!("registry {host} answered {detail} for {url}{hint}"),
                )
            }
            E::ServerError { code, url, message } => self.status_error(*code, url, message),
            E::RequestError(r) if r.status().is_some() => {
                let code = r.status().map_or(0, |s| s.as_u16());
                let url = r.url().map(ToString::to_string).unwrap_or_default();
                self.status_error(code, &url, "")
            }
            E::RequestError(r) => {
                let chain = error_chain(r);
                if r.is_timeout() {
                    (
                        Kind::DeadlineExceeded,
                        format!(
                            "registry {host} stopped answering (no data for {}s, {} retries): {chain}",
                            self.read_timeout.as_secs(),
                            self.retries
                        ),
                    )
                } else if r.is_connect() {
                    let hint = if self.plain_http {
                        "is the registry running and reachable?"
                    } else {
                        "is the registry running and reachable? For a registry without TLS use --plain-http; for a private CA use --ca-file; for a mirror, a hosts.toml under [registry] config_path"
                    };
                    (
                        Kind::Unavailable,
                        format!("cannot connect to registry {host}: {chain}: {hint}"),
                    )
                } else {
                    (
                        Kind::Unavailable,
                        format!("talking to registry {host} failed: {chain}"),
                    )
                }
            }
            E::UnsupportedSchemaVersionError(1) => (Kind::FailedPrecondition, schema1(&subject)),
            E::IoError(io) => (
                Kind::Unavailable,
                format!("reading from registry {host} failed: {io}"),
            ),
            other => (Kind::Unknown, format!("registry {host}: {other}")),
        };
        Error::new(kind, format!("{what} {subject}: {msg}"))
    }

    /// An HTTP status the registry answered with, as an error kind and message.
    fn status_error(&self, code: u16, url: &str, body: &str) -> (Kind, String) {
        let host = &self.shown();
        let kind = match code {
            401 => Kind::Unauthenticated,
            403 => Kind::PermissionDenied,
            404 => Kind::NotFound,
            429 => Kind::ResourceExhausted,
            c if c >= 500 => Kind::Unavailable,
            _ => Kind::Unknown,
        };
        let hint = match kind {
            Kind::Unauthenticated => format!(": {}", self.creds_hint()),
            Kind::PermissionDenied => ": the credentials lack access to this repository".into(),
            Kind::ResourceExhausted => {
                ": the registry rate-limits this client; wait and retry".into()
            }
            Kind::Unavailable => format!(
                ": the registry failed after {} retries; try again later",
                self.retries
            ),
            _ if code == 400 && self.plain_http => {
                ": if it serves HTTPS, name its CA with --ca-file (plain HTTP is the default for localhost)".into()
            }
            _ => String::new(),
        };
        let body = match envelope_summary(body) {
            Some(s) => format!(" ({s})"),
            None if body.trim().is_empty() => String::new(),
            None => format!(" ({})", body.trim().chars().take(200).collect::<String>()),
        };
        (
            kind,
            format!("registry {host} answered HTTP {code}{body} for {url}{hint}"),
        )
    }

    fn creds_hint(&self) -> &'static str {
        if self.anonymous {
            "the registry wants credentials: pass --user USER:PASSWORD or log in (docker config.json)"
        } else {
            "check the user name and password (--user or docker config.json)"
        }
    }
}

/// `CODE: message; …` from a distribution error envelope
/// (`{"errors":[{"code":…,"message":…}]}`), leaving out its `detail`,
/// which repeats the request.
fn envelope_summary(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let errors = v.get("errors")?.as_array()?;
    let parts: Vec<String> = errors
        .iter()
        .filter_map(|e| {
            let code = e.get("code")?.as_str()?;
            match e.get("message").and_then(|m| m.as_str()) {
                Some(m) if !m.is_empty() => Some(format!("{code}: {m}")),
                _ => Some(code.to_string()),
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Docker schema 1 images are refused with a way forward.
pub(crate) fn schema1(subject: &str) -> String {
    format!(
        "{subject} is a Docker schema 1 image, which is not supported: push it again with a current Docker or convert it to an OCI image"
    )
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

/// Failures worth another attempt: the network, rate limits, server errors.
fn transient(e: &OciDistributionError) -> bool {
    use OciDistributionError as E;
    match e {
        E::RequestError(r) => r.is_timeout() || r.is_connect() || r.is_request() || r.is_body(),
        E::ServerError { code, .. } => *code >= 500 || *code == 429,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| e.code == OciErrorCode::Toomanyrequests),
        E::IoError(_) => true,
        _ => false,
    }
}

pub(super) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.min(6))
}

/// The media type of a manifest or index fetched without one: its
/// `mediaType` field, else what its shape says. Schema 1 is refused.
pub(crate) fn manifest_media_type(data: &[u8], subject: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(data).map_err(|e| {
        Error::invalid(format!(
            "{subject}: the registry sent a manifest that is not JSON: {e}"
        ))
    })?;
    if v.get("schemaVersion").and_then(serde_json::Value::as_i64) == Some(1) {
        return Err(Error::precondition(schema1(subject)));
    }
    if let Some(mt) = v.get("mediaType").and_then(serde_json::Value::as_str) {
        return Ok(mt.to_string());
    }
    Ok(if v.get("manifests").is_some() {
        crate::images::oci::media::OCI_INDEX
    } else {
        crate::images::oci::media::OCI_MANIFEST
    }
    .to_string())
}

/// Media types asked for when resolving a reference.
pub(crate) const ACCEPT: &[&str] = &[
    crate::images::oci::media::OCI_INDEX,
    crate::images::oci::media::OCI_MANIFEST,
    crate::images::oci::media::DOCKER_LIST,
    crate::images::oci::media::DOCKER_MANIFEST,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(anonymous: bool) -> Remote {
        install_crypto();
        Remote {
            client: oci_client::Client::default(),
            reference: "127.0.0.1:5000/bb:1".parse().unwrap(),
            host: "127.0.0.1:5000".into(),
            mirror: None,
            auth: RegistryAuth::Anonymous,
            anonymous,
            plain_http: true,
            retries: 3,
            read_timeout: Duration::from_secs(30),
            max_concurrent: 3,
        }
    }

    #[test]
    fn http_answers_become_kinds_with_advice() {
        let r = remote(true);
        for (code, kind, advice, retried) in [
            (401, Kind::Unauthenticated, "--user", false),
            (403, Kind::PermissionDenied, "lack access", false),
            (404, Kind::NotFound, "HTTP 404", false),
            (429, Kind::ResourceExhausted, "rate-limits", true),
            (503, Kind::Unavailable, "after 3 retries", true),
            (400, Kind::Unknown, "--ca-file", false),
        ] {
            let e = OciDistributionError::ServerError {
                code,
                url: "http://127.0.0.1:5000/v2/bb/manifests/1".into(),
                message: String::new(),
            };
            assert_eq!(transient(&e), retried, "{code}");
            let err = r.error("pull", &e);
            assert_eq!(err.kind(), kind, "{code}: {err}");
            assert!(err.message().contains(advice), "{code}: {err}");
            assert!(err.message().contains("127.0.0.1:5000"), "{err}");
        }
        let wrong = remote(false).error(
            "pull",
            &OciDistributionError::UnauthorizedError { url: "u".into() },
        );
        assert_eq!(wrong.kind(), Kind::Unauthenticated);
        assert!(
            wrong.message().contains("check the user name and password"),
            "{wrong}"
        );
        let envelope = |code| OciDistributionError::RegistryError {
            envelope: oci_client::errors::OciEnvelope {
                errors: vec![oci_client::errors::OciError {
                    code,
                    message: "m".into(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "u".into(),
        };
        assert_eq!(
            r.error("pull", &envelope(OciErrorCode::ManifestUnknown))
                .kind(),
            Kind::NotFound
        );
        assert_eq!(
            r.error("pull", &envelope(OciErrorCode::Denied)).kind(),
            Kind::PermissionDenied
        );
        assert!(transient(&envelope(OciErrorCode::Toomanyrequests)));
        assert!(!transient(&envelope(OciErrorCode::BlobUnknown)));
    }

    #[test]
    fn error_envelopes_in_http_bodies_are_summarised() {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Name":"bb","Action":"push"}]}]}"#;
        let e = OciDistributionError::ServerError {
            code: 401,
            url: "u".into(),
            message: body.into(),
        };
        let err = remote(true).error("push", &e);
        assert!(
            err.message()
                .contains("HTTP 401 (UNAUTHORIZED: authentication required)"),
            "{err}"
        );
        assert!(!err.message().contains("detail"), "{err}");
        // Anything else is shown as it came, shortened.
        assert_eq!(envelope_summary("<html>busy</html>"), None);
        assert_eq!(envelope_summary(r#"{"errors":[]}"#), None);
    }

    #[test]
    fn media_types_and_schema1() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            manifest_media_type(idx, "x").unwrap(),
            crate::images::oci::media::OCI_INDEX
        );
        let m = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(
            manifest_media_type(m, "x").unwrap(),
            crate::images::oci::media::OCI_MANIFEST
        );
        let d = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}"}}"#,
            crate::images::oci::media::DOCKER_MANIFEST
        );
        assert_eq!(
            manifest_media_type(d.as_bytes(), "x").unwrap(),
            crate::images::oci::media::DOCKER_MANIFEST
        );
        let e = manifest_media_type(br#"{"schemaVersion":1,"fsLayers":[]}"#, "bb:1").unwrap_err();
        assert_eq!(e.kind(), Kind::FailedPrecondition);
        assert!(e.message().contains("schema 1"), "{e}");
    }
}
