//! The credentials of a CRI pull (`AuthConfig`) for berthd's registry
//! client.

use crate::error::{Error, Result};
use crate::transfer::registry::Credentials;
use base64::Engine;
use berth_proto::cri::AuthConfig;
use futures::future::BoxFuture;

/// The credentials of a CRI `AuthConfig`, for the hosts it applies to.
#[derive(Clone)]
pub(crate) struct AuthCredentials {
    user: String,
    secret: String,
    /// `server_address` as a host, if given: other hosts get none.
    server: Option<String>,
}

impl AuthCredentials {
    /// None when the config carries no credentials.
    pub(crate) fn from_cri(a: &AuthConfig) -> Result<Option<AuthCredentials>> {
        let (user, secret) = if !a.username.is_empty() {
            (a.username.clone(), a.password.clone())
        } else if !a.identity_token.is_empty() {
            return Err(Error::unimplemented(
                "auth.identity_token (an OAuth2 refresh token) is not supported: give username and password, auth, or registry_token",
            ));
        } else if !a.auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.auth.trim())
                .map_err(|e| Error::invalid(format!("auth.auth is not base64: {e}")))?;
            let text = String::from_utf8(raw)
                .map_err(|_| Error::invalid("auth.auth does not decode to text"))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| Error::invalid("auth.auth must encode user:password"))?;
            (u.to_string(), p.trim_matches('\0').to_string())
        } else if !a.registry_token.is_empty() {
            // An empty user makes the secret a bearer token.
            (String::new(), a.registry_token.clone())
        } else {
            return Ok(None);
        };
        let server = Some(a.server_address.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = s.split_once("://").map_or(s, |(_, r)| r);
                s.split('/').next().unwrap_or(s).to_string()
            });
        Ok(Some(AuthCredentials {
            user,
            secret,
            server,
        }))
    }

    fn applies_to(&self, host: &str) -> bool {
        let docker =
            |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
        match &self.server {
            None => true,
            Some(s) => s == host || (docker(s) && docker(host)),
        }
    }
}

impl Credentials for AuthCredentials {
    fn get<'a>(
        &'a self,
        host: &'a str,
        _reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<(String, String)>>> {
        let found = self
            .applies_to(host)
            .then(|| (self.user.clone(), self.secret.clone()));
        Box::pin(async move { Ok(found) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn auth_configs_become_credentials() {
        let get = |a: AuthConfig, host: &'static str| async move {
            AuthCredentials::from_cri(&a)
                .unwrap()
                .unwrap()
                .get(host, "r")
                .await
                .unwrap()
        };
        let basic = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        assert_eq!(
            get(basic.clone(), "r.io").await,
            Some(("u".into(), "p".into()))
        );
        let encoded = AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("u2:p:2"),
            server_address: "https://r.io/v1/".into(),
            ..Default::default()
        };
        assert_eq!(
            get(encoded.clone(), "r.io").await,
            Some(("u2".into(), "p:2".into()))
        );
        assert_eq!(
            get(encoded, "mirror.io").await,
            None,
            "other hosts get none"
        );
        let token = AuthConfig {
            registry_token: "tok".into(),
            ..Default::default()
        };
        assert_eq!(
            get(token, "r.io").await,
            Some((String::new(), "tok".into()))
        );
        let hub = AuthConfig {
            server_address: "https://index.docker.io/v1/".into(),
            ..basic
        };
        assert!(get(hub, "docker.io").await.is_some());
        assert!(
            AuthCredentials::from_cri(&AuthConfig::default())
                .unwrap()
                .is_none()
        );
        let refused = AuthConfig {
            identity_token: "x".into(),
            ..Default::default()
        };
        let e = AuthCredentials::from_cri(&refused).err().unwrap();
        assert!(e.message().contains("identity_token"), "{e}");
        let bad = AuthConfig {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(AuthCredentials::from_cri(&bad).is_err());
    }
}
