//! Reopening a task's log file (CRI ReopenContainerLog).

use super::*;

impl<R: TaskRuntime> TaskService<R> {
    /// Has the runtime close the log file the task's init writes to and open
    /// the same path again: after the kubelet renamed the file away, output
    /// goes on in a new file there, the old one left as it is. As
    /// containerd's ReopenContainerLog, only for a running task:
    /// `FailedPrecondition` when it is stopped (or its runtime is gone) or
    /// does not log to a file, `NotFound` when there is no task.
    pub async fn reopen_log(&self, ns: &str, id: &str) -> Result<()> {
        if self.dead_exit(ns, id).is_some() {
            return Err(Error::precondition(format!(
                "task {id} is not running: there is no log to reopen"
            )));
        }
        let h = self.live(ns, id)?;
        self.runtime.reopen_log(&h.task).await
    }
}
