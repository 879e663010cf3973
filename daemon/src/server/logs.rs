//! `berth.services.logs.v1.Logs`: the json-file logs berthd keeps
//! ([`crate::logs`]), read back with tail and since, and followed while the
//! container's task runs.

use super::boundary::namespace;
use crate::core::Core;
use crate::logs::{Follower, select};
use crate::types::{from_timestamp, timestamp};
use berth_proto::jsonlog::Entry;
use berth_proto::pb::berth::services::logs::v1::logs_server::Logs;
use berth_proto::pb::berth::services::logs::v1::*;
use berth_proto::pb::containerd::v1::types::Status as TaskStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

pub struct LogsService(pub Arc<Core>);

/// How often a follower looks for new entries.
const POLL: Duration = Duration::from_millis(100);
/// Entries a response carries at most.
const BATCH: usize = 512;

fn to_proto(e: Entry) -> LogEntry {
    LogEntry {
        stream: e.stream,
        time: Some(timestamp(e.time)),
        data: e.log,
    }
}

/// Sends entries in batches; false once the client is gone.
async fn send(tx: &mpsc::Sender<Result<ReadResponse, Status>>, entries: Vec<Entry>) -> bool {
    let mut it = entries.into_iter().map(to_proto).peekable();
    while it.peek().is_some() {
        let batch: Vec<LogEntry> = it.by_ref().take(BATCH).collect();
        if tx.send(Ok(ReadResponse { entries: batch })).await.is_err() {
            return false;
        }
    }
    true
}

/// Whether the container's task may still write: it exists and has not
/// stopped (being created, running, paused).
async fn writing(core: &Core, ns: &str, id: &str) -> bool {
    match core.tasks.get(ns, id, "").await {
        Ok(p) => p.status != TaskStatus::Stopped as i32 && p.status != TaskStatus::Unknown as i32,
        Err(_) => false,
    }
}

#[tonic::async_trait]
impl Logs for LogsService {
    type ReadStream = tokio_stream::wrappers::ReceiverStream<Result<ReadResponse, Status>>;

    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let c = self.0.containers.get(&ns, &r.id)?;
        if !crate::logs::LogStore::wanted(&c.record.labels) {
            return Err(Status::failed_precondition(format!(
                "container {} keeps no log: only containers labelled {}={} (as berthctl run makes them) do",
                r.id,
                berth_proto::labels::LOG_DRIVER,
                berth_proto::labels::JSON_FILE
            )));
        }
        let since = r.since.as_ref().map(from_timestamp);
        let path = self.0.logs.path(&ns, &r.id);
        let (tx, rx) = mpsc::channel(4);
        let core = self.0.clone();
        tokio::spawn(async move {
            let mut f = Follower::new(&path);
            let mut first = f.older();
            first.extend(f.poll());
            if !send(&tx, select(first, since, r.tail)).await || !r.follow {
                return;
            }
            let mut idle = 0u32;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = tx.closed() => return,
                }
                let new = select(f.poll(), since, -1);
                if !new.is_empty() {
                    idle = 0;
                    if !send(&tx, new).await {
                        return;
                    }
                    continue;
                }
                // Asking the shim is dearer than a read: every few polls.
                idle += 1;
                if idle.is_multiple_of(5) && !writing(&core, &ns, &r.id).await {
                    // What the task wrote before it stopped.
                    send(&tx, select(f.poll(), since, -1)).await;
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}
