//! Debug log of every gRPC call with its duration (`--log-level debug`),
//! for operators chasing a slow client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::codegen::http;

/// Wraps the router; costs nothing unless debug logging is on.
#[derive(Clone)]
pub struct RpcLog<S>(pub S);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for RpcLog<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return Box::pin(self.0.call(req));
        }
        let path = req.uri().path().to_string();
        let start = Instant::now();
        let fut = self.0.call(req);
        Box::pin(async move {
            let r = fut.await;
            // The gRPC status travels in headers (or trailers, for streams).
            let status = r.as_ref().ok().and_then(|resp| {
                resp.headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
            tracing::debug!(
                rpc = %path,
                ms = format_args!("{:.2}", start.elapsed().as_secs_f64() * 1e3),
                status = status.as_deref().unwrap_or("in trailers"),
                "rpc"
            );
            r
        })
    }
}
