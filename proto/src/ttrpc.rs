//! A small ttrpc implementation: the framing containerd's shims speak over a
//! unix socket, a multiplexing client and a server dispatching to generated
//! service adapters.
//!
//! Frame: a 10-byte header (u32 BE payload length, u32 BE stream id, u8 type
//! 1=request 2=response 3=data, u8 flags) followed by the payload, at most
//! 4 MiB. Request and response payloads are the `ttrpc.Request` /
//! `ttrpc.Response` protobuf messages. Clients use odd stream ids.
//!
//! `frame` is the wire format, `call` what a call carries ([`Context`],
//! [`Status`]), `server` and `client` the two ends; everything is
//! re-exported here, where the generated service adapters find it.

mod call;
mod client;
mod frame;
mod server;

pub use call::{Context, Status, decode};
pub use client::{Client, socket_path};
pub use frame::{
    Frame, HEADER_LEN, Header, MAX_MESSAGE, TYPE_DATA, TYPE_REQUEST, TYPE_RESPONSE, read_frame,
    write_frame,
};
pub use server::{BoxFuture, Server, Service, bind};

/// Status codes, re-exported for users without a direct tonic dependency.
pub use tonic::Code;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::containerd::services::events::ttrpc::v1::{ForwardRequest, events_ttrpc};
    use crate::pb::containerd::types::Envelope;
    use std::sync::Arc;
    use tokio::sync::oneshot;

    struct Sink(tokio::sync::mpsc::UnboundedSender<(String, Option<String>)>);

    impl events_ttrpc::Events for Sink {
        async fn forward(&self, ctx: Context, req: ForwardRequest) -> Result<(), Status> {
            let topic = req.envelope.map(|e| e.topic).unwrap_or_default();
            if topic == "/bad" {
                return Err(Status::new(Code::InvalidArgument, "bad topic"));
            }
            let _ = self.0.send((topic, ctx.get("k").map(str::to_string)));
            Ok(())
        }
    }

    #[tokio::test]
    async fn client_server_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = bind(&path).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let server = Server::new().register(events_ttrpc::EventsServer(Arc::new(Sink(tx))));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let srv = tokio::spawn(server.serve(listener, async {
            let _ = stop_rx.await;
        }));
        let client = events_ttrpc::EventsClient::new(
            Client::connect(&format!("unix://{}", path.display()))
                .await
                .unwrap(),
        );
        let mut ctx = Context::default();
        ctx.metadata.push(("k".into(), "v".into()));
        let req = ForwardRequest {
            envelope: Some(Envelope {
                topic: "/tasks/exit".into(),
                ..Default::default()
            }),
        };
        client.forward(ctx.clone(), &req).await.unwrap();
        assert_eq!(
            rx.recv().await.unwrap(),
            ("/tasks/exit".to_string(), Some("v".to_string()))
        );
        let bad = ForwardRequest {
            envelope: Some(Envelope {
                topic: "/bad".into(),
                ..Default::default()
            }),
        };
        let err = client.forward(ctx.clone(), &bad).await.unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        // An unknown method of a known service answers Unimplemented.
        let err = client
            .inner()
            .call::<_, ()>(ctx.clone(), events_ttrpc::SERVICE, "Nope", &())
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Unimplemented);
        let err = client
            .inner()
            .call::<_, ()>(ctx, "no.such.Service", "X", &())
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Unimplemented);
        let _ = stop_tx.send(());
        srv.await.unwrap().unwrap();
    }
}
