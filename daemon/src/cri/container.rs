//! CRI container RPCs (owned by the `cri-containers` work; stubs here
//! answer `Unimplemented` until filled).

use super::CriService;
use crate::error::{Error, Result};
use berth_proto::cri;
use futures::stream::BoxStream;

fn todo(rpc: &str) -> Error {
    Error::unimplemented(format!("CRI {rpc} is not implemented yet"))
}

impl CriService {
    pub async fn create_container(
        &self,
        _r: cri::CreateContainerRequest,
    ) -> Result<cri::CreateContainerResponse> {
        Err(todo("CreateContainer"))
    }

    pub async fn start_container(
        &self,
        _r: cri::StartContainerRequest,
    ) -> Result<cri::StartContainerResponse> {
        Err(todo("StartContainer"))
    }

    pub async fn stop_container(
        &self,
        _r: cri::StopContainerRequest,
    ) -> Result<cri::StopContainerResponse> {
        Err(todo("StopContainer"))
    }

    pub async fn remove_container(
        &self,
        _r: cri::RemoveContainerRequest,
    ) -> Result<cri::RemoveContainerResponse> {
        Err(todo("RemoveContainer"))
    }

    pub async fn list_containers(
        &self,
        _r: cri::ListContainersRequest,
    ) -> Result<cri::ListContainersResponse> {
        Err(todo("ListContainers"))
    }

    pub async fn container_status(
        &self,
        _r: cri::ContainerStatusRequest,
    ) -> Result<cri::ContainerStatusResponse> {
        Err(todo("ContainerStatus"))
    }

    pub async fn update_container_resources(
        &self,
        _r: cri::UpdateContainerResourcesRequest,
    ) -> Result<cri::UpdateContainerResourcesResponse> {
        Err(todo("UpdateContainerResources"))
    }

    pub async fn reopen_container_log(
        &self,
        _r: cri::ReopenContainerLogRequest,
    ) -> Result<cri::ReopenContainerLogResponse> {
        Err(todo("ReopenContainerLog"))
    }

    pub async fn exec_sync(&self, _r: cri::ExecSyncRequest) -> Result<cri::ExecSyncResponse> {
        Err(todo("ExecSync"))
    }

    pub async fn exec(&self, _r: cri::ExecRequest) -> Result<cri::ExecResponse> {
        Err(todo("Exec"))
    }

    pub async fn attach(&self, _r: cri::AttachRequest) -> Result<cri::AttachResponse> {
        Err(todo("Attach"))
    }

    pub async fn port_forward(
        &self,
        _r: cri::PortForwardRequest,
    ) -> Result<cri::PortForwardResponse> {
        Err(todo("PortForward"))
    }

    pub async fn container_stats(
        &self,
        _r: cri::ContainerStatsRequest,
    ) -> Result<cri::ContainerStatsResponse> {
        Err(todo("ContainerStats"))
    }

    pub async fn list_container_stats(
        &self,
        _r: cri::ListContainerStatsRequest,
    ) -> Result<cri::ListContainerStatsResponse> {
        Err(todo("ListContainerStats"))
    }

    pub async fn pod_sandbox_stats(
        &self,
        _r: cri::PodSandboxStatsRequest,
    ) -> Result<cri::PodSandboxStatsResponse> {
        Err(todo("PodSandboxStats"))
    }

    pub async fn list_pod_sandbox_stats(
        &self,
        _r: cri::ListPodSandboxStatsRequest,
    ) -> Result<cri::ListPodSandboxStatsResponse> {
        Err(todo("ListPodSandboxStats"))
    }

    /// The container lifecycle events stream of `GetContainerEvents`.
    pub async fn container_events(
        &self,
        _r: cri::GetEventsRequest,
    ) -> Result<BoxStream<'static, Result<cri::ContainerEventResponse>>> {
        Err(todo("GetContainerEvents"))
    }
}
