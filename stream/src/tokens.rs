//! Single-use tokens for pending stream requests, as the kubelet's request cache: a token is
//! consumed by its first use and expires after [`TOKEN_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_proto::cri;

/// How long an issued URL stays usable (the kubelet's cache TTL).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Most requests pending at once (the kubelet's cache size); more are refused.
pub const MAX_PENDING: usize = 1000;

/// A request waiting for its client to connect.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

#[derive(Debug, Default)]
pub struct Cache {
    entries: Mutex<HashMap<String, (Instant, Pending)>>,
}

impl Cache {
    /// Stores `req` and returns its new token, or `None` when too many are pending.
    pub fn insert(&self, req: Pending) -> Option<String> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, (t, _)| now.duration_since(*t) < TOKEN_TTL);
        if map.len() >= MAX_PENDING {
            return None;
        }
        // 122 random bits, URL-safe without escaping.
        let token = uuid::Uuid::new_v4().simple().to_string();
        map.insert(token.clone(), (now, req));
        Some(token)
    }

    /// Takes the request of `token` if it exists and has not expired.
    pub fn consume(&self, token: &str) -> Option<Pending> {
        self.consume_at(token, Instant::now())
    }

    fn consume_at(&self, token: &str, now: Instant) -> Option<Pending> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (t, req) = map.remove(token)?;
        (now.duration_since(t) < TOKEN_TTL).then_some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> Pending {
        Pending::PortForward(cri::PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![80],
        })
    }

    #[test]
    fn tokens_are_single_use_and_expire() {
        let c = Cache::default();
        let a = c.insert(pf()).unwrap();
        let b = c.insert(pf()).unwrap();
        assert_ne!(a, b);
        assert!(c.consume(&a).is_some());
        assert!(c.consume(&a).is_none(), "second use must fail");
        assert!(c.consume("nope").is_none());
        let late = Instant::now() + TOKEN_TTL + Duration::from_millis(1);
        assert!(c.consume_at(&b, late).is_none(), "expired token must fail");
    }

    #[test]
    fn pending_requests_are_bounded() {
        let c = Cache::default();
        for _ in 0..MAX_PENDING {
            c.insert(pf()).unwrap();
        }
        assert!(c.insert(pf()).is_none());
    }
}
