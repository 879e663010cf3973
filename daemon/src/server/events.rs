//! `containerd.services.events.v1.Events` over gRPC and the ttrpc
//! `Forward` endpoint shims publish to.

use super::boundary::namespace;
use crate::core::Core;
use crate::error::Error;
use crate::events::validate_topic;
use crate::types::{now, timestamp};
use berth_proto::filters::Filter;
use berth_proto::pb::containerd::services::events::ttrpc::v1 as tt;
use berth_proto::services::events::v1::events_server::Events;
use berth_proto::services::events::v1::*;
use berth_proto::ttrpc;
use berth_proto::types::Envelope;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct EventsService(pub Arc<Core>);

fn check_envelope(env: &Envelope) -> Result<(), Error> {
    crate::metadata::namespaces::validate(&env.namespace)?;
    validate_topic(&env.topic)?;
    // As containerd's exchange: a forwarded event keeps its publisher's time.
    if env.timestamp.is_none() {
        return Err(Error::invalid("envelope timestamp must be set"));
    }
    if env.event.is_none() {
        return Err(Error::invalid("envelope must carry an event"));
    }
    Ok(())
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        validate_topic(&req.topic)?;
        let event = req
            .event
            .ok_or_else(|| Status::invalid_argument("event must be set"))?;
        self.0.events.forward(Envelope {
            timestamp: Some(timestamp(now())),
            namespace: ns,
            topic: req.topic,
            event: Some(event),
        });
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        let env = req
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("envelope must be set"))?;
        check_envelope(&env)?;
        self.0.events.forward(env);
        Ok(Response::new(()))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<Envelope, Status>> + Send>>;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let filter = Filter::parse_all(&req.into_inner().filters)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut rx = self.0.events.subscribe(filter);
        let stream = async_stream(move |tx| async move {
            while let Some(env) = rx.recv().await {
                if tx.send(Ok(env)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A response stream fed by a task; the task ends when the client leaves.
pub(crate) fn async_stream<T, F, Fut>(f: F) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

pub struct TtrpcEvents(pub Arc<Core>);

impl tt::events_ttrpc::Events for TtrpcEvents {
    async fn forward(
        &self,
        _ctx: ttrpc::Context,
        req: tt::ForwardRequest,
    ) -> Result<(), ttrpc::Status> {
        let env = req.envelope.ok_or_else(|| {
            ttrpc::Status::new(tonic::Code::InvalidArgument, "envelope must be set")
        })?;
        check_envelope(&env).map_err(|e| ttrpc::Status::from_kind(e.kind(), e.chain()))?;
        self.0.events.forward(env);
        Ok(())
    }
}
