//! `berth.shim.v1.Logs`: berth's own ttrpc service beside the task service,
//! which reopens the log file the init writes to (CRI ReopenContainerLog:
//! the kubelet renamed the file away and wants output in a new one at the
//! same path). containerd never calls it.

use super::Shim;
use crate::{Error, Result};
use berth_proto::pb::berth::shim::v1::{ReopenLogRequest, logs_ttrpc};
use berth_proto::ttrpc::{Context, Status as TStatus};
use std::sync::Arc;

impl Shim {
    /// Closes and reopens every `berth-log://` file of the init's output.
    pub(super) fn reopen_log(&self, id: &str) -> Result<()> {
        self.check_id(id)?;
        let logs = {
            let g = self.lock();
            let p = g
                .procs
                .init()
                .ok_or_else(|| Error::precondition(format!("container {} has no task", self.id)))?;
            if !p.is_live() {
                return Err(Error::precondition(format!(
                    "task {} is not running: there is no log to reopen",
                    self.id
                )));
            }
            if p.io.logs.is_empty() {
                return Err(Error::precondition(format!(
                    "task {} does not write its output to a log file (its stdout is {:?})",
                    self.id, p.stdio.stdout
                )));
            }
            p.io.logs.clone()
        };
        for log in logs {
            let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
            l.reopen()
                .map_err(|e| Error::io(format!("reopen the log of task {}", self.id), e))?;
        }
        Ok(())
    }
}

/// The ttrpc adapter.
pub struct Service(pub Arc<Shim>);

impl logs_ttrpc::Logs for Service {
    async fn reopen_log(
        &self,
        _c: Context,
        req: ReopenLogRequest,
    ) -> std::result::Result<(), TStatus> {
        self.0.reopen_log(&req.id).map_err(TStatus::from)
    }
}
