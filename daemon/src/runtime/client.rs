//! A typed ttrpc client of one shim's `containerd.task.v2.Task` service: the
//! one place where a shim's ttrpc status becomes a daemon error.

use crate::error::{Error, Result};
use berth_proto::pb::containerd::task::v2::task_ttrpc::SERVICE;
use berth_proto::ttrpc::{self, Context};
use prost::Message;
use std::time::Duration;

/// A connection to a shim, for one namespace.
#[derive(Clone)]
pub struct ShimClient {
    conn: ttrpc::Client,
    ns: String,
}

/// The shim's status as a daemon error: same kind, same message (clients
/// match on both).
fn from_status(s: ttrpc::Status) -> Error {
    Error::new(s.kind(), s.message)
}

impl ShimClient {
    /// Dials a shim's ttrpc socket (`unix://` prefix allowed).
    pub async fn connect(address: &str, ns: &str) -> Result<Self> {
        let conn = ttrpc::Client::connect(address)
            .await
            .map_err(|e| Error::unavailable(format!("connect to shim at {address}: {e}")))?;
        Ok(Self {
            conn,
            ns: ns.to_string(),
        })
    }

    /// True once the connection is closed: the shim exited (or shut down).
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Calls a method of the shim's task service.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp> {
        self.call_ctx(Context::with_namespace(&self.ns), method, req)
            .await
    }

    /// Calls a method that must answer within `timeout`.
    pub async fn call_within<Req: Message, Resp: Message + Default>(
        &self,
        timeout: Duration,
        method: &str,
        req: &Req,
    ) -> Result<Resp> {
        let ctx = Context::with_namespace(&self.ns).timeout(timeout);
        self.call_ctx(ctx, method, req).await
    }

    /// Calls a method of another service the shim may serve (berth's own,
    /// such as `berth.shim.v1.Logs`).
    pub async fn call_service<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
    ) -> Result<Resp> {
        self.conn
            .call(Context::with_namespace(&self.ns), service, method, req)
            .await
            .map_err(from_status)
    }

    async fn call_ctx<Req: Message, Resp: Message + Default>(
        &self,
        ctx: Context,
        method: &str,
        req: &Req,
    ) -> Result<Resp> {
        self.conn
            .call(ctx, SERVICE, method, req)
            .await
            .map_err(from_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::errdefs::Kind;

    #[test]
    fn status_keeps_kind_and_message() {
        let e = from_status(ttrpc::Status::new(
            ttrpc::Code::FailedPrecondition,
            "task t is running: kill it before deleting",
        ));
        assert_eq!(e.kind(), Kind::FailedPrecondition);
        assert_eq!(e.message(), "task t is running: kill it before deleting");
        let e = from_status(ttrpc::Status::new(ttrpc::Code::Unavailable, "closed"));
        assert_eq!(e.kind(), Kind::Unavailable);
    }
}
