//! The [`TaskRuntime`] seam and the types that cross it: what the task
//! service needs of whatever runs processes. Uses only `error` and the
//! shim API types; every other module of `runtime` builds on it.

use crate::error::Result;
use berth_proto::pb::containerd::task::v2 as shimapi;
use berth_proto::pb::containerd::v1::types::ProcessInfo;
use std::collections::HashMap;
use std::future::Future;

/// How a task's init process ended, as its runtime saved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: u32,
    /// Exit status (128 + signal for a signalled process).
    pub status: u32,
    /// When it exited, in nanoseconds since the epoch.
    pub at: i64,
}

/// What creating a task takes.
#[derive(Debug, Clone)]
pub struct CreateTask {
    pub ns: String,
    pub id: String,
    /// Runtime name (`io.containerd.runc.v2`) choosing the shim.
    pub runtime: String,
    /// The OCI spec, written to the bundle as `config.json`.
    pub spec: Vec<u8>,
    /// The container's runtime options, handed to the shim's `start` and
    /// used as the Create options when the request has none.
    pub runtime_options: Option<prost_types::Any>,
    /// The shim's Create request (id and bundle are filled in by the runtime).
    pub request: shimapi::CreateTaskRequest,
}

/// A task a runtime has created.
pub struct Created<T> {
    pub task: T,
    /// Pid of the (created, not yet started) init process.
    pub pid: u32,
}

/// A task of a previous daemon run, found by [`TaskRuntime::restore`].
pub struct Found<T> {
    pub ns: String,
    pub id: String,
    pub task: T,
    /// False when its runtime (shim) could not be reached: the task is dead
    /// and must be cleaned up with [`TaskRuntime::cleanup`].
    pub alive: bool,
}

/// What the task service needs of whatever runs tasks.
///
/// A task is one container's init process plus its exec processes, served
/// by one runtime instance (a shim). `Self::Task` is the runtime's handle
/// to it; the service keeps handles in its registry and never holds a lock
/// across a call. Calls on different tasks run concurrently.
///
/// Errors keep the kind the runtime reported (`NotFound` for an unknown exec
/// id, `FailedPrecondition` for a state that does not allow the call, such
/// as deleting a running process). A runtime that cannot be reached any
/// more (its shim died) answers every call on its task with `Unavailable`
/// and [`is_gone`](Self::is_gone) turns true for good: the service then
/// calls [`cleanup`](Self::cleanup) once and keeps the task as stopped.
pub trait TaskRuntime: Send + Sync + 'static {
    /// A handle to one task.
    type Task: Send + Sync + 'static;

    /// Creates a task: prepares its bundle, starts its runtime instance and
    /// creates (without starting) its init process. On error nothing is left
    /// behind (no bundle, no process, no shim): the same id may be created
    /// again. Errors: `NotFound` for an unknown runtime, `InvalidArgument`
    /// for a malformed runtime name, the shim's kind for a failed Create.
    fn create(&self, req: CreateTask) -> impl Future<Output = Result<Created<Self::Task>>> + Send;

    /// Starts the init (empty `exec_id`) or an exec process; returns its pid.
    fn start(&self, task: &Self::Task, exec_id: &str) -> impl Future<Output = Result<u32>> + Send;

    /// The state of a process. Answers within a bounded time (`Unavailable`
    /// or `DeadlineExceeded` otherwise) so that listing never hangs.
    fn state(
        &self,
        task: &Self::Task,
        exec_id: &str,
    ) -> impl Future<Output = Result<shimapi::StateResponse>> + Send;

    /// Signals a process, or with `all` every process of the task.
    fn kill(
        &self,
        task: &Self::Task,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Adds an exec process (started by [`start`](Self::start)).
    /// `AlreadyExists` for an exec id in use.
    fn exec(
        &self,
        task: &Self::Task,
        req: shimapi::ExecProcessRequest,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Resizes a process's terminal.
    fn resize_pty(
        &self,
        task: &Self::Task,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Closes a process's stdin (after what was written reaches it).
    fn close_io(
        &self,
        task: &Self::Task,
        exec_id: &str,
        stdin: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Freezes every process of the task.
    fn pause(&self, task: &Self::Task) -> impl Future<Output = Result<()>> + Send;

    /// Thaws a paused task.
    fn resume(&self, task: &Self::Task) -> impl Future<Output = Result<()>> + Send;

    /// The task's processes, with exec ids where known.
    fn pids(&self, task: &Self::Task) -> impl Future<Output = Result<Vec<ProcessInfo>>> + Send;

    /// Updates the task's resources and annotations.
    fn update(
        &self,
        task: &Self::Task,
        resources: Option<prost_types::Any>,
        annotations: HashMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Closes the log file the init writes its output to and opens the same
    /// path again (a new file there when the old one was renamed away, as
    /// the kubelet does before CRI `ReopenContainerLog`). Only for output
    /// the runtime itself writes to a `berth-log://` file (json-file or CRI
    /// format). `FailedPrecondition` when the init is not running or does
    /// not write to such a file; `Unimplemented` from a runtime that cannot
    /// (the shim side is berth's own ttrpc service `berth.shim.v1.Logs`,
    /// which containerd's shims do not serve).
    fn reopen_log(&self, task: &Self::Task) -> impl Future<Output = Result<()>> + Send;

    /// Resource statistics of the task.
    fn stats(
        &self,
        task: &Self::Task,
    ) -> impl Future<Output = Result<Option<prost_types::Any>>> + Send;

    /// Waits until a process has exited (at once if it has). If the runtime
    /// dies meanwhile the wait ends with `Unavailable`.
    fn wait(
        &self,
        task: &Self::Task,
        exec_id: &str,
    ) -> impl Future<Output = Result<shimapi::WaitResponse>> + Send;

    /// Deletes an exited process (empty `exec_id`: the init) and returns its
    /// exit. `FailedPrecondition` while it runs; the task is then unchanged.
    fn delete(
        &self,
        task: &Self::Task,
        exec_id: &str,
    ) -> impl Future<Output = Result<shimapi::DeleteResponse>> + Send;

    /// After the init was deleted: stops the runtime instance and removes the
    /// bundle. Best effort, never fails; the handle is dead afterwards.
    fn shutdown(&self, task: &Self::Task) -> impl Future<Output = ()> + Send;

    /// True once the runtime instance is unreachable for good (it died or
    /// was shut down). Cheap and non-blocking: it is polled.
    fn is_gone(&self, task: &Self::Task) -> bool;

    /// After the runtime instance died: releases what it held (mounts,
    /// processes) and returns the exit it saved, or, when none can be read,
    /// status 137 (killed) at the current time. Idempotent. Keeps the bundle
    /// until [`remove`](Self::remove).
    fn cleanup(&self, task: &Self::Task) -> impl Future<Output = Exit> + Send;

    /// Forgets a dead task: cleans up once more (in case the first cleanup
    /// failed) and removes its bundle. Best effort, never fails.
    fn remove(&self, task: &Self::Task) -> impl Future<Output = ()> + Send;

    /// Finds the tasks of a previous run and reconnects to their runtime
    /// instances, in parallel, each within a deadline. Dead ones come back
    /// with `alive` false and are not cleaned up yet.
    fn restore(&self) -> impl Future<Output = Vec<Found<Self::Task>>> + Send;
}
