//! The collection trigger: how a store says "something may have become
//! garbage" without knowing the collector. Stores hold a [`GcTrigger`]; the
//! collector (`gc`) owns the matching [`GcRequests`] and serves them, so
//! `gc` depends on the stores and never the reverse.

use crate::error::{Error, Result};
use tokio::sync::{mpsc, oneshot};

/// One request to the collector.
pub enum GcRequest {
    /// Collect soon; deletions close together share one run.
    Schedule,
    /// Collect now and report when done.
    Collect(oneshot::Sender<Result<()>>),
}

/// A store's handle on the collector; cheap to clone.
#[derive(Clone)]
pub struct GcTrigger {
    tx: mpsc::UnboundedSender<GcRequest>,
}

/// The collector's end of every [`GcTrigger`] clone.
pub struct GcRequests {
    rx: mpsc::UnboundedReceiver<GcRequest>,
}

impl GcTrigger {
    /// A trigger and the receiving end the collector listens on.
    pub fn new() -> (GcTrigger, GcRequests) {
        let (tx, rx) = mpsc::unbounded_channel();
        (GcTrigger { tx }, GcRequests { rx })
    }

    /// Asks for a collection soon; returns at once. Does nothing once the
    /// collector is gone (the daemon is stopping).
    pub fn schedule(&self) {
        let _ = self.tx.send(GcRequest::Schedule);
    }

    /// Runs a collection now and waits for it (`sync` deletes).
    pub async fn collect(&self) -> Result<()> {
        let stopped = || Error::unavailable("garbage collector stopped");
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(GcRequest::Collect(tx))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl GcRequests {
    /// The next request; `None` once every trigger is dropped.
    pub async fn recv(&mut self) -> Option<GcRequest> {
        self.rx.recv().await
    }

    /// A request already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<GcRequest> {
        self.rx.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::{GcRequest, GcTrigger};

    #[tokio::test]
    async fn collect_waits_for_the_answer_and_fails_once_the_collector_is_gone() {
        let (trigger, mut requests) = GcTrigger::new();
        trigger.schedule();
        let waiter = tokio::spawn({
            let t = trigger.clone();
            async move { t.collect().await }
        });
        assert!(matches!(requests.recv().await, Some(GcRequest::Schedule)));
        match requests.recv().await {
            Some(GcRequest::Collect(done)) => done.send(Ok(())).unwrap(),
            _ => panic!("expected a collect request"),
        }
        waiter.await.unwrap().unwrap();
        assert!(requests.try_recv().is_none(), "nothing else was queued");
        drop(requests);
        let e = trigger.collect().await.unwrap_err();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::Unavailable, "{e}");
        trigger.schedule(); // must not panic with no collector
    }
}
