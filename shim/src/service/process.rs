//! A process the shim serves, init or exec alike: its state, I/O, exit
//! and waiters, and the table of them keyed by exec id (the init's is
//! empty), so every request finds its process one way.

use crate::bundle::SavedExit;
use crate::stdio::{ChildIo, ShimIo};
use crate::{Error, Result};
use berth_proto::pb::containerd::task::v2 as api;
use berth_proto::pb::containerd::v1::types::Status;
use berth_proto::time::timestamp;
use std::collections::HashMap;
use tokio::sync::watch;

/// The client's view of a process's stdio.
#[derive(Debug, Clone, Default)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// One process of the container.
pub struct Proc {
    pub pid: u32,
    pub status: Status,
    pub stdio: Stdio,
    pub exit: Option<SavedExit>,
    pub io: ShimIo,
    exited: watch::Sender<bool>,
    /// For an exec not yet started: what to start.
    pub pending: Option<(oci_spec::runtime::Process, ChildIo)>,
}

impl Proc {
    pub fn new(stdio: Stdio, io: ShimIo) -> Proc {
        Proc {
            pid: 0,
            status: Status::Created,
            stdio,
            exit: None,
            io,
            exited: watch::channel(false).0,
            pending: None,
        }
    }

    /// Running or paused: it must be killed before it can be deleted.
    pub fn is_live(&self) -> bool {
        self.status == Status::Running || self.status == Status::Paused
    }

    pub fn state(&self, id: &str, bundle: &str, exec_id: &str) -> api::StateResponse {
        api::StateResponse {
            id: id.to_string(),
            bundle: bundle.to_string(),
            pid: self.pid,
            status: self.status as i32,
            stdin: self.stdio.stdin.clone(),
            stdout: self.stdio.stdout.clone(),
            stderr: self.stdio.stderr.clone(),
            terminal: self.stdio.terminal,
            exit_status: self.exit.map_or(0, |e| e.status),
            exited_at: self.exit.map(|e| timestamp(e.exited_at)),
            exec_id: exec_id.to_string(),
        }
    }

    /// The pid to signal; refused when there is none to signal.
    pub fn kill_target(&self, all: bool) -> Result<u32> {
        if self.exit.is_some() && !all {
            return Err(Error::not_found("process already finished"));
        }
        if self.pid == 0 {
            return Err(Error::precondition("process has not been started"));
        }
        Ok(self.pid)
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let c = self
            .io
            .console
            .as_ref()
            .ok_or_else(|| Error::precondition("the process has no terminal"))?;
        crate::stdio::resize(c, width, height)
    }

    /// CloseIO of stdin: the input copy passes on what is buffered, then
    /// closes the process's stdin.
    pub fn close_stdin(&mut self) {
        if let Some(close) = self.io.close_input.take() {
            // notify_one keeps the wake-up if the copy is busy writing.
            close.notify_one();
        }
    }

    /// Records the exit; returns the output copies to drain before it is
    /// reported. The input copy stops: nobody reads it any more.
    pub fn exited(&mut self, exit: SavedExit) -> Vec<tokio::task::JoinHandle<()>> {
        self.exit = Some(exit);
        if let Some(i) = self.io.input.take() {
            i.abort();
        }
        std::mem::take(&mut self.io.outputs)
    }

    /// Stopped, with waiters told.
    pub fn stopped(&mut self) {
        self.status = Status::Stopped;
        // send_replace: a waiter may subscribe only after the exit.
        self.exited.send_replace(true);
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.exited.subscribe()
    }

    /// Exited but its exit not reported yet (output still draining).
    pub fn reporting(&self) -> bool {
        self.exit.is_some() && self.status != Status::Stopped
    }

    pub fn exit_or_default(&self) -> SavedExit {
        self.exit.unwrap_or_default()
    }
}

/// The container's processes by exec id; the init's id is empty.
#[derive(Default)]
pub struct Procs(HashMap<String, Proc>);

impl Procs {
    fn missing(exec_id: &str) -> Error {
        if exec_id.is_empty() {
            Error::not_found("the container has no task")
        } else {
            Error::not_found(format!("exec {exec_id:?} not found"))
        }
    }

    pub fn get(&self, exec_id: &str) -> Result<&Proc> {
        self.0.get(exec_id).ok_or_else(|| Self::missing(exec_id))
    }

    pub fn get_mut(&mut self, exec_id: &str) -> Result<&mut Proc> {
        self.0
            .get_mut(exec_id)
            .ok_or_else(|| Self::missing(exec_id))
    }

    pub fn init(&self) -> Option<&Proc> {
        self.0.get("")
    }

    pub fn contains(&self, exec_id: &str) -> bool {
        self.0.contains_key(exec_id)
    }

    pub fn insert(&mut self, exec_id: &str, p: Proc) {
        self.0.insert(exec_id.to_string(), p);
    }

    pub fn remove(&mut self, exec_id: &str) -> Result<Proc> {
        self.0.remove(exec_id).ok_or_else(|| Self::missing(exec_id))
    }

    /// The exec id of the running process with `pid`.
    pub fn running_with_pid(&self, pid: u32) -> Option<String> {
        self.0
            .iter()
            .find(|(_, p)| p.pid == pid && p.exit.is_none())
            .map(|(k, _)| k.clone())
    }

    /// The exec id of an exec (never the init) with `pid`.
    pub fn exec_with_pid(&self, pid: u32) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, p)| !k.is_empty() && p.pid == pid)
            .map(|(k, _)| k.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32) -> Proc {
        let mut p = Proc::new(Stdio::default(), ShimIo::default());
        p.pid = pid;
        p
    }

    #[test]
    fn init_and_execs_are_found_one_way() {
        let mut t = Procs::default();
        t.insert("", proc(10));
        t.insert("e1", proc(11));
        assert_eq!(t.get("").unwrap().pid, 10);
        assert_eq!(t.running_with_pid(11).as_deref(), Some("e1"));
        assert_eq!(t.exec_with_pid(10), None, "the init is no exec");
        assert_eq!(t.exec_with_pid(11), Some("e1"));
        let e = t.get("nope").err().unwrap();
        assert_eq!(e.kind(), berth_proto::errdefs::Kind::NotFound);
        assert!(e.message().contains("\"nope\""));
        t.get_mut("e1").unwrap().exit = Some(SavedExit::default());
        assert_eq!(
            t.running_with_pid(11),
            None,
            "exited processes are not matched"
        );
    }

    #[test]
    fn exit_reporting_and_kill_rules() {
        let mut p = proc(0);
        assert_eq!(
            p.kill_target(false).unwrap_err().kind(),
            berth_proto::errdefs::Kind::FailedPrecondition
        );
        p.pid = 5;
        p.status = Status::Running;
        assert!(p.is_live());
        assert_eq!(p.kill_target(false).unwrap(), 5);
        let rx = p.subscribe();
        p.exited(SavedExit {
            pid: 5,
            status: 1,
            exited_at: 9,
        });
        assert!(p.reporting());
        assert_eq!(
            p.kill_target(false).unwrap_err().kind(),
            berth_proto::errdefs::Kind::NotFound
        );
        assert_eq!(
            p.kill_target(true).unwrap(),
            5,
            "kill --all still reaches the rest"
        );
        p.stopped();
        assert!(*rx.borrow());
        let s = p.state("c", "/b", "");
        assert_eq!((s.status, s.exit_status), (Status::Stopped as i32, 1));
        assert!(p.resize(80, 24).is_err(), "no terminal");
    }
}
