//! `GetContainerEvents`: the CREATED/STARTED/STOPPED/DELETED events of CRI
//! containers, fanned out to every subscriber (the kubelet's evented PLEG),
//! plus the little live state containers need beside their records.

use crate::error::Result;
use berth_proto::cri;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Live state of the CRI containers (what a restart rebuilds).
pub struct ContainerState {
    events: broadcast::Sender<cri::ContainerEventResponse>,
    /// The write ends of the stdin FIFOs berthd holds, by container id:
    /// open while the container runs, so its stdin sees no EOF between
    /// attaches (closed after the first attach with `stdin_once`).
    pub stdin: Mutex<HashMap<String, OwnedFd>>,
}

impl Default for ContainerState {
    fn default() -> Self {
        // A slow subscriber loses old events (and is told so), never
        // blocks the runtime.
        let (events, _) = broadcast::channel(1024);
        ContainerState {
            events,
            stdin: Mutex::new(HashMap::new()),
        }
    }
}

impl ContainerState {
    /// Sends an event to the current subscribers (none is fine).
    pub fn emit(&self, e: cri::ContainerEventResponse) {
        let _ = self.events.send(e);
    }

    /// Forgets (closes) a container's stdin.
    pub fn close_stdin(&self, id: &str) {
        self.stdin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The events from now on, as a stream.
    pub fn subscribe(&self) -> BoxStream<'static, Result<cri::ContainerEventResponse>> {
        let rx = self.events.subscribe();
        tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|r| async move {
                match r {
                    Ok(e) => Some(Ok(e)),
                    Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                        tracing::warn!("CRI events: a subscriber missed {n} events");
                        None
                    }
                }
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_events_sent_after_they_subscribe() {
        let st = ContainerState::default();
        st.emit(cri::ContainerEventResponse::default());
        let mut s = st.subscribe();
        st.emit(cri::ContainerEventResponse {
            container_id: "a".into(),
            container_event_type: cri::ContainerEventType::ContainerStoppedEvent as i32,
            ..Default::default()
        });
        let e = s.next().await.unwrap().unwrap();
        assert_eq!(e.container_id, "a");
    }
}
