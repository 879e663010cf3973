//! A recording [`Cgroup`] for tests of the code that drives one.

use super::base::Stats;
use super::base::{Cgroup, OomWatch};
use crate::{Error, Result};
use berth_proto::pb::io::containerd::cgroups::v1::Metrics;
use oci_spec::runtime::LinuxResources;
use std::os::fd::OwnedFd;

/// A recording cgroup for tests of what drives one: each call is kept as
/// a line (`kill_all 9`), and calls starting with a prefix it was told to
/// fail return an error.
#[derive(Default)]
pub struct Fake {
    pub calls: std::sync::Mutex<Vec<String>>,
    pub pids: Vec<u32>,
    pub fail: Option<&'static str>,
}

impl Fake {
    fn record(&self, line: String) -> Result<()> {
        let fail = self.fail.is_some_and(|f| line.starts_with(f));
        self.calls.lock().unwrap().push(line.clone());
        if fail {
            return Err(Error::io(
                format!("fake {line}"),
                std::io::Error::from_raw_os_error(libc::EBUSY),
            ));
        }
        Ok(())
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Cgroup for Fake {
    fn path(&self) -> &str {
        "fake"
    }
    fn apply(&self, r: &LinuxResources) -> Result<()> {
        let pids = r.pids().as_ref().map_or(0, |p| p.limit());
        self.record(format!("apply pids={pids}"))
    }
    fn add(&self, pid: u32) -> Result<()> {
        self.record(format!("add {pid}"))
    }
    fn self_join_files(&self) -> Result<Option<Vec<OwnedFd>>> {
        self.record("self_join_files".into()).map(|()| None)
    }
    fn cgroup2_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    fn shim_move(&self, pid: u32) -> Result<()> {
        self.record(format!("shim_move {pid}"))
    }
    fn procs(&self) -> Result<Vec<u32>> {
        self.record("procs".into()).map(|()| self.pids.clone())
    }
    fn freeze(&self) -> Result<()> {
        self.record("freeze".into())
    }
    fn thaw(&self) -> Result<()> {
        self.record("thaw".into())
    }
    fn kill_all(&self, sig: i32) -> Result<()> {
        self.record(format!("kill_all {sig}"))
    }
    fn stats(&self) -> Stats {
        Stats::V1(Metrics::default())
    }
    fn oom_watch(&self) -> Result<OomWatch> {
        self.record("oom_watch".into())?;
        Err(Error::unimplemented("the fake has no OOM events"))
    }
    fn delete(&self) -> Result<()> {
        self.record("delete".into())
    }
}
