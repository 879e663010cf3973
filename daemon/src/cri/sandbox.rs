//! Pod sandbox RPCs: RunPodSandbox, StopPodSandbox, RemovePodSandbox,
//! PodSandboxStatus, ListPodSandbox.

use super::CriService;
use crate::error::{Error, Result};
use berth_proto::cri;

impl CriService {
    pub async fn run_pod_sandbox(
        &self,
        _r: cri::RunPodSandboxRequest,
    ) -> Result<cri::RunPodSandboxResponse> {
        Err(Error::unimplemented(
            "CRI RunPodSandbox is not implemented yet",
        ))
    }

    pub async fn stop_pod_sandbox(
        &self,
        _r: cri::StopPodSandboxRequest,
    ) -> Result<cri::StopPodSandboxResponse> {
        Err(Error::unimplemented(
            "CRI StopPodSandbox is not implemented yet",
        ))
    }

    pub async fn remove_pod_sandbox(
        &self,
        _r: cri::RemovePodSandboxRequest,
    ) -> Result<cri::RemovePodSandboxResponse> {
        Err(Error::unimplemented(
            "CRI RemovePodSandbox is not implemented yet",
        ))
    }

    pub async fn pod_sandbox_status(
        &self,
        _r: cri::PodSandboxStatusRequest,
    ) -> Result<cri::PodSandboxStatusResponse> {
        Err(Error::unimplemented(
            "CRI PodSandboxStatus is not implemented yet",
        ))
    }

    pub async fn list_pod_sandbox(
        &self,
        _r: cri::ListPodSandboxRequest,
    ) -> Result<cri::ListPodSandboxResponse> {
        Err(Error::unimplemented(
            "CRI ListPodSandbox is not implemented yet",
        ))
    }
}

impl CriService {
    /// At daemon start: brings pod records in line with their tasks
    /// (filled in with the sandbox lifecycle).
    pub async fn reconcile(&self) {
        match self.store.sandboxes() {
            Ok(s) => tracing::info!(pods = s.len(), "CRI: pods loaded"),
            Err(e) => tracing::warn!(error = %e.chain(), "CRI: cannot list pods"),
        }
    }
}
