//! A recording [`TaskRuntime`] for unit tests: processes are state in
//! memory that behaves as the shim does (delete of a running process is
//! refused, exec ids are unique, a dead shim answers `Unavailable`), and
//! every call is recorded so tests can check what the runtime saw.

use super::{CreateTask, Created, Exit, Found, TaskRuntime};
use crate::error::{Error, Result};
use crate::types::timestamp;
use berth_proto::pb::containerd::task::v2 as shimapi;
use berth_proto::pb::containerd::v1::types::{ProcessInfo, Status};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, Semaphore};

/// Exit time every fake process reports.
pub const EXITED_AT: i64 = 1_700_000_000_000_000_000;

/// One fake process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proc {
    pub pid: u32,
    pub status: Status,
    pub exit_status: u32,
}

/// A fake shim's handle.
pub struct FakeTask {
    pub id: String,
    gone: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    /// Processes per task id; the init under "".
    procs: HashMap<String, HashMap<String, Proc>>,
    /// Death flags of the shims, per task id.
    shims: HashMap<String, Arc<AtomicBool>>,
    /// What a dead shim's cleanup reports, per task id.
    saved: HashMap<String, Exit>,
    /// What `restore` finds: (ns, id, alive).
    previous: Vec<(String, String, bool)>,
    next_pid: u32,
    fail_create: Option<Error>,
    creates: Vec<CreateTask>,
}

/// The fake runtime.
pub struct FakeRuntime {
    state: Mutex<State>,
    calls: Mutex<Vec<String>>,
    changed: Notify,
    /// When set, Create waits for a permit (to observe "being created").
    gate: Mutex<Option<Arc<Semaphore>>>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                next_pid: 100,
                ..State::default()
            }),
            calls: Mutex::default(),
            changed: Notify::new(),
            gate: Mutex::default(),
        }
    }
}

impl FakeRuntime {
    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, call: String) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The creates the runtime saw.
    pub fn creates(&self) -> Vec<CreateTask> {
        self.st().creates.clone()
    }

    /// The next create fails with `e` (the runtime cleans up after itself).
    pub fn fail_next_create(&self, e: Error) {
        self.st().fail_create = Some(e);
    }

    /// Creates wait for `gate` to hand out a permit.
    pub fn gate_creates(&self, gate: Arc<Semaphore>) {
        *self.gate.lock().unwrap_or_else(|e| e.into_inner()) = Some(gate);
    }

    /// The shim of `id` dies, having saved `exit`.
    pub fn kill_shim(&self, id: &str, exit: Exit) {
        let mut st = self.st();
        st.saved.insert(id.into(), exit);
        if let Some(g) = st.shims.get(id) {
            g.store(true, Ordering::SeqCst);
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// A task of a previous run that `restore` will find; a dead one
    /// saved `exit`, a live one runs its init as `pid`.
    pub fn previous(&self, ns: &str, id: &str, alive: bool, pid: u32, exit: Exit) {
        let mut st = self.st();
        st.previous.push((ns.into(), id.into(), alive));
        if alive {
            let init = Proc {
                pid,
                status: Status::Running,
                exit_status: 0,
            };
            st.procs
                .insert(id.into(), HashMap::from([(String::new(), init)]));
        } else {
            st.saved.insert(id.into(), exit);
        }
    }

    /// True once the shim of `id` is dead or shut down.
    pub fn shim_gone(&self, id: &str) -> bool {
        self.st()
            .shims
            .get(id)
            .is_some_and(|g| g.load(Ordering::SeqCst))
    }

    /// A process's state as the fake shim holds it.
    pub fn proc(&self, id: &str, exec_id: &str) -> Option<Proc> {
        self.st().procs.get(id)?.get(exec_id).copied()
    }

    /// Runs `f` on a live process of a live shim.
    fn with_proc<T>(
        &self,
        t: &FakeTask,
        exec_id: &str,
        f: impl FnOnce(&mut Proc) -> Result<T>,
    ) -> Result<T> {
        self.alive(t)?;
        let mut st = self.st();
        let p = st
            .procs
            .get_mut(&t.id)
            .and_then(|m| m.get_mut(exec_id))
            .ok_or_else(|| Error::not_found(format!("process {exec_id:?} of {}", t.id)))?;
        let out = f(p);
        drop(st);
        self.changed.notify_waiters();
        out
    }

    /// A live process of a live shim, as is.
    fn read(&self, t: &FakeTask, exec_id: &str) -> Result<Proc> {
        self.alive(t)?;
        self.st()
            .procs
            .get(&t.id)
            .and_then(|m| m.get(exec_id))
            .copied()
            .ok_or_else(|| Error::not_found(format!("process {exec_id:?} of {}", t.id)))
    }

    fn alive(&self, t: &FakeTask) -> Result<()> {
        if t.gone.load(Ordering::SeqCst) {
            return Err(Error::unavailable("ttrpc: connection closed"));
        }
        Ok(())
    }

    fn handle(&self, id: &str) -> FakeTask {
        let gone = Arc::new(AtomicBool::new(false));
        self.st().shims.insert(id.into(), gone.clone());
        FakeTask {
            id: id.into(),
            gone,
        }
    }
}

impl TaskRuntime for FakeRuntime {
    type Task = FakeTask;

    async fn create(&self, req: CreateTask) -> Result<Created<FakeTask>> {
        self.record(format!("create {}/{} {}", req.ns, req.id, req.runtime));
        let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(g) = gate {
            let _permit = g.acquire().await;
        }
        let pid = {
            let mut st = self.st();
            st.creates.push(req.clone());
            if let Some(e) = st.fail_create.take() {
                return Err(e);
            }
            assert!(!st.procs.contains_key(&req.id), "shim created twice");
            st.next_pid += 1;
            let pid = st.next_pid;
            let init = Proc {
                pid,
                status: Status::Created,
                exit_status: 0,
            };
            st.procs
                .insert(req.id.clone(), HashMap::from([(String::new(), init)]));
            pid
        };
        Ok(Created {
            task: self.handle(&req.id),
            pid,
        })
    }

    async fn start(&self, t: &FakeTask, exec_id: &str) -> Result<u32> {
        self.record(format!("start {} {exec_id}", t.id));
        self.with_proc(t, exec_id, |p| {
            if p.status != Status::Created {
                return Err(Error::precondition("process already started"));
            }
            p.status = Status::Running;
            Ok(p.pid)
        })
    }

    async fn state(&self, t: &FakeTask, exec_id: &str) -> Result<shimapi::StateResponse> {
        self.record(format!("state {} {exec_id}", t.id));
        self.with_proc(t, exec_id, |p| {
            Ok(shimapi::StateResponse {
                id: t.id.clone(),
                pid: p.pid,
                status: p.status as i32,
                exit_status: p.exit_status,
                exec_id: exec_id.into(),
                ..Default::default()
            })
        })
    }

    async fn kill(&self, t: &FakeTask, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        self.record(format!("kill {} {exec_id} {signal} all={all}", t.id));
        self.with_proc(t, exec_id, |p| {
            if p.status == Status::Running {
                p.status = Status::Stopped;
                p.exit_status = 128 + signal;
            }
            Ok(())
        })
    }

    async fn exec(&self, t: &FakeTask, req: shimapi::ExecProcessRequest) -> Result<()> {
        self.record(format!("exec {} {}", t.id, req.exec_id));
        self.alive(t)?;
        let mut st = self.st();
        st.next_pid += 1;
        let pid = st.next_pid;
        let procs = st.procs.entry(t.id.clone()).or_default();
        if procs.contains_key(&req.exec_id) {
            return Err(Error::already_exists(format!(
                "exec {} already exists",
                req.exec_id
            )));
        }
        let p = Proc {
            pid,
            status: Status::Created,
            exit_status: 0,
        };
        procs.insert(req.exec_id, p);
        Ok(())
    }

    async fn resize_pty(&self, t: &FakeTask, exec_id: &str, w: u32, h: u32) -> Result<()> {
        self.record(format!("resize {} {exec_id} {w}x{h}", t.id));
        self.with_proc(t, exec_id, |_| Ok(()))
    }

    async fn close_io(&self, t: &FakeTask, exec_id: &str, stdin: bool) -> Result<()> {
        self.record(format!("close_io {} {exec_id} stdin={stdin}", t.id));
        self.with_proc(t, exec_id, |_| Ok(()))
    }

    async fn pause(&self, t: &FakeTask) -> Result<()> {
        self.record(format!("pause {}", t.id));
        self.with_proc(t, "", |p| {
            p.status = Status::Paused;
            Ok(())
        })
    }

    async fn resume(&self, t: &FakeTask) -> Result<()> {
        self.record(format!("resume {}", t.id));
        self.with_proc(t, "", |p| {
            p.status = Status::Running;
            Ok(())
        })
    }

    async fn pids(&self, t: &FakeTask) -> Result<Vec<ProcessInfo>> {
        self.record(format!("pids {}", t.id));
        self.alive(t)?;
        let st = self.st();
        let mut v: Vec<ProcessInfo> = st
            .procs
            .get(&t.id)
            .into_iter()
            .flatten()
            .map(|(_, p)| ProcessInfo {
                pid: p.pid,
                info: None,
            })
            .collect();
        v.sort_by_key(|p| p.pid);
        Ok(v)
    }

    async fn update(
        &self,
        t: &FakeTask,
        _resources: Option<prost_types::Any>,
        annotations: HashMap<String, String>,
    ) -> Result<()> {
        self.record(format!("update {} {} annotations", t.id, annotations.len()));
        self.alive(t)
    }

    async fn reopen_log(&self, t: &FakeTask) -> Result<()> {
        self.record(format!("reopen_log {}", t.id));
        let p = self.read(t, "")?;
        if !matches!(p.status, Status::Running | Status::Paused) {
            return Err(Error::precondition(format!("task {} is not running", t.id)));
        }
        // As the shim: only output it writes to a berth-log file.
        let st = self.st();
        let create = st.creates.iter().rev().find(|c| c.id == t.id);
        if !create.is_some_and(|c| c.request.stdout.starts_with(berth_proto::jsonlog::SCHEME)) {
            return Err(Error::precondition(format!(
                "task {} does not write its output to a log file",
                t.id
            )));
        }
        Ok(())
    }

    async fn stats(&self, t: &FakeTask) -> Result<Option<prost_types::Any>> {
        self.record(format!("stats {}", t.id));
        self.alive(t)?;
        Ok(Some(prost_types::Any {
            type_url: "fake/stats".into(),
            value: t.id.clone().into_bytes(),
        }))
    }

    async fn wait(&self, t: &FakeTask, exec_id: &str) -> Result<shimapi::WaitResponse> {
        self.record(format!("wait {} {exec_id}", t.id));
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Reading must not wake the waiters (this one included).
            let p = self.read(t, exec_id)?;
            if p.status == Status::Stopped {
                return Ok(shimapi::WaitResponse {
                    exit_status: p.exit_status,
                    exited_at: Some(timestamp(EXITED_AT)),
                });
            }
            changed.await;
        }
    }

    async fn delete(&self, t: &FakeTask, exec_id: &str) -> Result<shimapi::DeleteResponse> {
        self.record(format!("delete {} {exec_id}", t.id));
        let p = self.read(t, exec_id)?;
        if matches!(p.status, Status::Running | Status::Paused) {
            return Err(Error::precondition(format!(
                "task {} is running: kill it before deleting",
                t.id
            )));
        }
        let mut st = self.st();
        if let Some(m) = st.procs.get_mut(&t.id) {
            m.remove(exec_id);
        }
        Ok(shimapi::DeleteResponse {
            pid: p.pid,
            exit_status: p.exit_status,
            exited_at: Some(timestamp(EXITED_AT)),
        })
    }

    async fn shutdown(&self, t: &FakeTask) {
        self.record(format!("shutdown {}", t.id));
        t.gone.store(true, Ordering::SeqCst);
        self.st().procs.remove(&t.id);
    }

    fn is_gone(&self, t: &FakeTask) -> bool {
        t.gone.load(Ordering::SeqCst)
    }

    async fn cleanup(&self, t: &FakeTask) -> Exit {
        self.record(format!("cleanup {}", t.id));
        // Let a concurrent noticer of the same death catch up.
        tokio::task::yield_now().await;
        let mut st = self.st();
        st.procs.remove(&t.id);
        st.saved.get(&t.id).copied().unwrap_or(Exit {
            pid: 0,
            status: 137,
            at: EXITED_AT,
        })
    }

    async fn remove(&self, t: &FakeTask) {
        self.record(format!("remove {}", t.id));
    }

    async fn restore(&self) -> Vec<Found<FakeTask>> {
        self.record("restore".into());
        let previous = self.st().previous.clone();
        previous
            .into_iter()
            .map(|(ns, id, alive)| {
                let task = self.handle(&id);
                task.gone.store(!alive, Ordering::SeqCst);
                Found {
                    ns,
                    id,
                    task,
                    alive,
                }
            })
            .collect()
    }
}
