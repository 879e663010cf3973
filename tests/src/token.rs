//! A bearer-token server for the registry's `auth: token` mode (the
//! docker token flow: the registry answers 401 with
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…`, the client asks the
//! realm for a token, optionally with basic credentials, and retries with
//! it). Tokens are RS256 JWTs carrying the signing certificate in `x5c`,
//! which the registry checks against its `rootcertbundle`.
//!
//! Policy, like a registry with public images: anonymous clients get `pull`
//! only; the one known user gets whatever it asks for; a wrong password is
//! refused with 401.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `service` the registry names in its challenge and the token's `aud`.
pub const SERVICE: &str = "berth-test-registry";
/// The token's `iss`, which the registry trusts.
pub const ISSUER: &str = "berth-test-token-issuer";

/// One token request, as the server saw it.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The authenticated user, or empty for an anonymous request.
    pub account: String,
    /// The `scope` parameters asked for.
    pub scopes: Vec<String>,
    /// `type:name:actions` actually granted.
    pub granted: Vec<String>,
    /// Refused (wrong credentials).
    pub refused: bool,
}

struct Signer {
    key: ring::signature::RsaKeyPair,
    /// Base64 (standard) DER of the certificate, for the `x5c` header.
    cert_b64: String,
    user: String,
    password: String,
}

/// A running token server; stops accepting on drop.
pub struct TokenServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    grants: Arc<Mutex<Vec<Grant>>>,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    /// Makes a signing key and certificate with `openssl` and serves
    /// tokens on 127.0.0.1; `user`/`password` is the one known account.
    pub fn start(openssl: &Path, user: &str, password: &str) -> TokenServer {
        let dir = tempfile::Builder::new()
            .prefix("berth-token-")
            .tempdir()
            .expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        let (key_pem, cert, key_der) = (p("key.pem"), p("cert.pem"), p("key.der"));
        crate::openssl::self_signed(openssl, "berth-test-token-issuer", &key_pem, &cert);
        // DER; `pkey` writes the PKCS#1 RSAPrivateKey form for DER.
        crate::openssl::run_openssl(
            openssl,
            &[
                "pkey",
                "-in",
                key_pem.to_str().unwrap(),
                "-outform",
                "DER",
                "-out",
                key_der.to_str().unwrap(),
            ],
        );
        let key = ring::signature::RsaKeyPair::from_der(&std::fs::read(&key_der).unwrap())
            .expect("RSA key");
        // A PEM body is the base64 of the DER, which is what x5c wants.
        let cert_b64: String = std::fs::read_to_string(&cert)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let signer = Arc::new(Signer {
            key,
            cert_b64,
            user: user.into(),
            password: password.into(),
        });

        let l = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let port = l.local_addr().expect("addr").port();
        l.set_nonblocking(true).expect("nonblocking");
        let grants = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (grants.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (signer, g) = (signer.clone(), g.clone());
                        std::thread::spawn(move || serve(c, &signer, &g));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TokenServer {
            dir,
            port,
            grants,
            stop,
        }
    }

    /// The URL the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The certificate the registry trusts tokens from.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// Every token request so far.
    pub fn grants(&self) -> Vec<Grant> {
        self.grants.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(c: TcpStream, signer: &Signer, grants: &Mutex<Vec<Grant>>) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(c.try_clone().expect("clone"));
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut authorization = None;
    loop {
        let mut h = String::new();
        match r.read_line(&mut h) {
            Ok(0) | Err(_) => return,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("authorization")
                {
                    authorization = Some(v.trim().to_string());
                }
            }
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let (status, body) = if path != "/token" {
        ("404 Not Found", "{}".to_string())
    } else {
        answer(query, authorization.as_deref(), signer, grants)
    };
    let mut c = c;
    let _ = write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn answer(
    query: &str,
    authorization: Option<&str>,
    signer: &Signer,
    grants: &Mutex<Vec<Grant>>,
) -> (&'static str, String) {
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(String::from).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();

    let account = match authorization.and_then(|a| a.strip_prefix("Basic ")) {
        None => String::new(),
        Some(b64) => {
            let pair = STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            if pair != format!("{}:{}", signer.user, signer.password) {
                grants.lock().unwrap().push(Grant {
                    account: pair.split(':').next().unwrap_or("").into(),
                    scopes,
                    granted: vec![],
                    refused: true,
                });
                return (
                    "401 Unauthorized",
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid credentials"}]}"#
                        .into(),
                );
            }
            signer.user.clone()
        }
    };

    let mut access = Vec::new();
    let mut granted = Vec::new();
    for scope in &scopes {
        // type:name:actions, where the name may hold a port's colon.
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let actions: Vec<&str> = actions
            .split(',')
            .filter(|a| !account.is_empty() || *a == "pull")
            .collect();
        granted.push(format!("{kind}:{name}:{}", actions.join(",")));
        access.push(serde_json::json!({"type": kind, "name": name, "actions": actions}));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [signer.cert_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": account,
        "aud": service,
        "exp": now + 600,
        "nbf": now - 60,
        "iat": now,
        "jti": format!("{now}-{}", grants.lock().unwrap().len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; signer.key.public().modulus_len()];
    signer
        .key
        .sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .expect("sign");
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
    grants.lock().unwrap().push(Grant {
        account,
        scopes,
        granted,
        refused: false,
    });
    (
        "200 OK",
        serde_json::json!({"token": token, "access_token": token, "expires_in": 600}).to_string(),
    )
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_query_components() {
        assert_eq!(
            super::decode("repository%3Atok%2Fbb%3Apull%2Cpush"),
            "repository:tok/bb:pull,push"
        );
        assert_eq!(super::decode("a+b%2"), "a b%2");
    }
}
