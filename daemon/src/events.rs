//! The event exchange: publishers (services, shims via Forward) hand it
//! envelopes; each subscriber gets its own unbounded queue so that no event
//! is ever dropped for a slow reader (engines learn of exits only here).

use crate::error::{Error, Result};
use crate::types::{now, timestamp};
use berth_proto::filters::{Adaptor, Filter};
use berth_proto::types::Envelope;
use std::sync::Mutex;
use tokio::sync::mpsc;

struct Subscriber {
    filter: Filter,
    tx: mpsc::UnboundedSender<Envelope>,
}

/// Fans events out to subscribers.
#[derive(Default)]
pub struct Exchange {
    subs: Mutex<Vec<Subscriber>>,
}

impl Exchange {
    /// A new exchange with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes an event of the daemon's own, stamped now.
    pub fn publish<M: prost::Name>(&self, ns: &str, topic: &str, event: &M) {
        self.forward(Envelope {
            timestamp: Some(timestamp(now())),
            namespace: ns.to_string(),
            topic: topic.to_string(),
            event: Some(berth_proto::typeurl::pack(event)),
        });
    }

    /// Delivers an envelope as is (after validation by the caller).
    pub fn forward(&self, env: Envelope) {
        tracing::debug!(topic = %env.topic, namespace = %env.namespace, "event");
        let Ok(mut subs) = self.subs.lock() else {
            return;
        };
        subs.retain(|s| {
            if !s.filter.matches(&EnvelopeFields(&env)) {
                return !s.tx.is_closed();
            }
            s.tx.send(env.clone()).is_ok()
        });
    }

    /// Registers a subscriber; it is dropped once its receiver is.
    pub fn subscribe(&self, filter: Filter) -> mpsc::UnboundedReceiver<Envelope> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut subs) = self.subs.lock() {
            subs.push(Subscriber { filter, tx });
        }
        rx
    }
}

struct EnvelopeFields<'a>(&'a Envelope);

impl Adaptor for EnvelopeFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path.first().map(String::as_str), path.len()) {
            (Some("namespace"), 1) => Some(self.0.namespace.clone()),
            (Some("topic"), 1) => Some(self.0.topic.clone()),
            // containerd decodes the event to filter on its fields.
            (Some("event"), n) if n > 1 => {
                berth_proto::fieldpath::any_field(self.0.event.as_ref()?, &path[1..])
            }
            _ => None,
        }
    }
}

/// Checks a topic: `/` followed by one or more identifier components.
pub fn validate_topic(topic: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(Error::invalid("event topic must not be empty"));
    }
    let Some(rest) = topic.strip_prefix('/') else {
        return Err(Error::invalid(format!(
            "event topic {topic:?} must start with '/'"
        )));
    };
    if rest.is_empty() {
        return Err(Error::invalid(format!(
            "event topic {topic:?} must have at least one component"
        )));
    }
    for c in rest.split('/') {
        berth_proto::identifiers::validate(c)
            .map_err(|e| Error::invalid(format!("event topic {topic:?}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::pb::containerd::events::NamespaceCreate;

    #[test]
    fn filtered_delivery_and_cleanup() {
        let ex = Exchange::new();
        let mut all = ex.subscribe(Filter::default());
        let mut only_x = ex.subscribe(Filter::parse("namespace==x").unwrap());
        let dropped = ex.subscribe(Filter::default());
        drop(dropped);
        ex.publish("x", "/namespaces/create", &NamespaceCreate::default());
        ex.publish("y", "/namespaces/create", &NamespaceCreate::default());
        assert_eq!(all.try_recv().unwrap().namespace, "x");
        assert_eq!(all.try_recv().unwrap().namespace, "y");
        assert_eq!(only_x.try_recv().unwrap().namespace, "x");
        assert!(only_x.try_recv().is_err());
        assert_eq!(ex.subs.lock().unwrap().len(), 2);
        let env = all.try_recv();
        assert!(env.is_err());
    }

    #[test]
    fn topics() {
        assert!(validate_topic("/tasks/exit").is_ok());
        for bad in ["", "tasks", "/", "/a//b", "/a b"] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }
}
