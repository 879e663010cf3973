//! Publishing task events to the daemon (`$TTRPC_ADDRESS`, the ttrpc
//! `Events.Forward` endpoint). Events are queued in order and retried while
//! the daemon is away, never dropped: engines learn of exits only here.

use berth_proto::pb::containerd::services::events::ttrpc::v1::{ForwardRequest, events_ttrpc};
use berth_proto::ttrpc::{Client, Context};
use berth_proto::types::Envelope;
use std::time::Duration;
use tokio::sync::mpsc;

/// A handle for publishing; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Envelope>,
    ns: String,
}

impl Publisher {
    /// Starts the forwarding task (on the current runtime).
    pub fn start(address: String, ns: String) -> Publisher {
        let (tx, mut rx) = mpsc::unbounded_channel::<Envelope>();
        tokio::spawn(async move {
            let mut client: Option<events_ttrpc::EventsClient> = None;
            while let Some(env) = rx.recv().await {
                if address.is_empty() {
                    continue; // nobody to tell (e.g. a test without a daemon)
                }
                let mut delay = Duration::from_millis(50);
                loop {
                    if client.as_ref().is_none_or(|c| c.inner().is_closed()) {
                        client = Client::connect(&address)
                            .await
                            .ok()
                            .map(events_ttrpc::EventsClient::new);
                    }
                    if let Some(c) = &client {
                        let req = ForwardRequest {
                            envelope: Some(env.clone()),
                        };
                        match c
                            .forward(Context::default().timeout(Duration::from_secs(5)), &req)
                            .await
                        {
                            Ok(()) => break,
                            // The daemon refused it: retrying will not help.
                            Err(s) if s.code == berth_proto::ttrpc::Code::InvalidArgument => break,
                            Err(_) => client = None,
                        }
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        });
        Publisher { tx, ns }
    }

    /// Queues an event.
    pub fn publish<M: prost::Name>(&self, topic: &str, event: &M) {
        let env = Envelope {
            timestamp: Some(berth_proto::time::timestamp(berth_proto::time::now())),
            namespace: self.ns.clone(),
            topic: topic.to_string(),
            event: Some(berth_proto::typeurl::pack(event)),
        };
        // Fails only once the forwarding task is gone, when the runtime
        // shuts down: nobody is left to deliver to.
        if self.tx.send(env).is_err() {
            eprintln!("event {topic} not sent: the shim is shutting down");
        }
    }
}
