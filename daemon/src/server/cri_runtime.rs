//! The CRI v1 RuntimeService over gRPC: a thin adapter over
//! [`CriService`]; errors become statuses in `boundary`.

use crate::core::Core;
use crate::cri::{CriService, Handles};
use berth_proto::cri;
use berth_proto::cri::runtime_service_server::RuntimeService;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct CriRuntime(pub Arc<CriService>);

type Reply<T> = Result<Response<T>, Status>;
type Stream<T> = BoxStream<'static, Result<T, Status>>;

fn unimplemented<T>(rpc: &str) -> Reply<T> {
    Err(Status::unimplemented(format!(
        "CRI {rpc} is not supported by berthd"
    )))
}

#[tonic::async_trait]
impl RuntimeService for CriRuntime {
    type StreamPodSandboxesStream = Stream<cri::StreamPodSandboxesResponse>;
    type StreamContainersStream = Stream<cri::StreamContainersResponse>;
    type StreamContainerStatsStream = Stream<cri::StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = Stream<cri::StreamPodSandboxStatsResponse>;
    type GetContainerEventsStream = Stream<cri::ContainerEventResponse>;
    type StreamPodSandboxMetricsStream = Stream<cri::StreamPodSandboxMetricsResponse>;

    async fn version(&self, r: Request<cri::VersionRequest>) -> Reply<cri::VersionResponse> {
        Ok(Response::new(self.0.version(r.into_inner())))
    }

    async fn status(&self, r: Request<cri::StatusRequest>) -> Reply<cri::StatusResponse> {
        Ok(Response::new(self.0.status(r.into_inner())))
    }

    async fn runtime_config(
        &self,
        r: Request<cri::RuntimeConfigRequest>,
    ) -> Reply<cri::RuntimeConfigResponse> {
        Ok(Response::new(self.0.runtime_config(r.into_inner())))
    }

    async fn update_runtime_config(
        &self,
        r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Reply<cri::UpdateRuntimeConfigResponse> {
        Ok(Response::new(self.0.update_runtime_config(r.into_inner())?))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<cri::RunPodSandboxRequest>,
    ) -> Reply<cri::RunPodSandboxResponse> {
        Ok(Response::new(self.0.run_pod_sandbox(r.into_inner()).await?))
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<cri::StopPodSandboxRequest>,
    ) -> Reply<cri::StopPodSandboxResponse> {
        Ok(Response::new(
            self.0.stop_pod_sandbox(r.into_inner()).await?,
        ))
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> Reply<cri::RemovePodSandboxResponse> {
        Ok(Response::new(
            self.0.remove_pod_sandbox(r.into_inner()).await?,
        ))
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<cri::PodSandboxStatusRequest>,
    ) -> Reply<cri::PodSandboxStatusResponse> {
        Ok(Response::new(
            self.0.pod_sandbox_status(r.into_inner()).await?,
        ))
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<cri::ListPodSandboxRequest>,
    ) -> Reply<cri::ListPodSandboxResponse> {
        Ok(Response::new(
            self.0.list_pod_sandbox(r.into_inner()).await?,
        ))
    }

    async fn create_container(
        &self,
        r: Request<cri::CreateContainerRequest>,
    ) -> Reply<cri::CreateContainerResponse> {
        Ok(Response::new(
            self.0.create_container(r.into_inner()).await?,
        ))
    }

    async fn start_container(
        &self,
        r: Request<cri::StartContainerRequest>,
    ) -> Reply<cri::StartContainerResponse> {
        Ok(Response::new(self.0.start_container(r.into_inner()).await?))
    }

    async fn stop_container(
        &self,
        r: Request<cri::StopContainerRequest>,
    ) -> Reply<cri::StopContainerResponse> {
        Ok(Response::new(self.0.stop_container(r.into_inner()).await?))
    }

    async fn remove_container(
        &self,
        r: Request<cri::RemoveContainerRequest>,
    ) -> Reply<cri::RemoveContainerResponse> {
        Ok(Response::new(
            self.0.remove_container(r.into_inner()).await?,
        ))
    }

    async fn list_containers(
        &self,
        r: Request<cri::ListContainersRequest>,
    ) -> Reply<cri::ListContainersResponse> {
        Ok(Response::new(self.0.list_containers(r.into_inner()).await?))
    }

    async fn container_status(
        &self,
        r: Request<cri::ContainerStatusRequest>,
    ) -> Reply<cri::ContainerStatusResponse> {
        Ok(Response::new(
            self.0.container_status(r.into_inner()).await?,
        ))
    }

    async fn update_container_resources(
        &self,
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Reply<cri::UpdateContainerResourcesResponse> {
        Ok(Response::new(
            self.0.update_container_resources(r.into_inner()).await?,
        ))
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> Reply<cri::ReopenContainerLogResponse> {
        Ok(Response::new(
            self.0.reopen_container_log(r.into_inner()).await?,
        ))
    }

    async fn exec_sync(&self, r: Request<cri::ExecSyncRequest>) -> Reply<cri::ExecSyncResponse> {
        Ok(Response::new(self.0.exec_sync(r.into_inner()).await?))
    }

    async fn exec(&self, r: Request<cri::ExecRequest>) -> Reply<cri::ExecResponse> {
        Ok(Response::new(self.0.exec(r.into_inner()).await?))
    }

    async fn attach(&self, r: Request<cri::AttachRequest>) -> Reply<cri::AttachResponse> {
        Ok(Response::new(self.0.attach(r.into_inner()).await?))
    }

    async fn port_forward(
        &self,
        r: Request<cri::PortForwardRequest>,
    ) -> Reply<cri::PortForwardResponse> {
        Ok(Response::new(self.0.port_forward(r.into_inner()).await?))
    }

    async fn container_stats(
        &self,
        r: Request<cri::ContainerStatsRequest>,
    ) -> Reply<cri::ContainerStatsResponse> {
        Ok(Response::new(self.0.container_stats(r.into_inner()).await?))
    }

    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> Reply<cri::ListContainerStatsResponse> {
        Ok(Response::new(
            self.0.list_container_stats(r.into_inner()).await?,
        ))
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<cri::PodSandboxStatsRequest>,
    ) -> Reply<cri::PodSandboxStatsResponse> {
        Ok(Response::new(
            self.0.pod_sandbox_stats(r.into_inner()).await?,
        ))
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Reply<cri::ListPodSandboxStatsResponse> {
        Ok(Response::new(
            self.0.list_pod_sandbox_stats(r.into_inner()).await?,
        ))
    }

    async fn get_container_events(
        &self,
        r: Request<cri::GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        let s = self.0.container_events(r.into_inner()).await?;
        Ok(Response::new(s.map(|i| i.map_err(Status::from)).boxed()))
    }

    async fn stream_pod_sandboxes(
        &self,
        _r: Request<cri::StreamPodSandboxesRequest>,
    ) -> Reply<Self::StreamPodSandboxesStream> {
        unimplemented("StreamPodSandboxes")
    }

    async fn stream_containers(
        &self,
        _r: Request<cri::StreamContainersRequest>,
    ) -> Reply<Self::StreamContainersStream> {
        unimplemented("StreamContainers")
    }

    async fn stream_container_stats(
        &self,
        _r: Request<cri::StreamContainerStatsRequest>,
    ) -> Reply<Self::StreamContainerStatsStream> {
        unimplemented("StreamContainerStats")
    }

    async fn stream_pod_sandbox_stats(
        &self,
        _r: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Reply<Self::StreamPodSandboxStatsStream> {
        unimplemented("StreamPodSandboxStats")
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _r: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Reply<Self::StreamPodSandboxMetricsStream> {
        unimplemented("StreamPodSandboxMetrics")
    }

    async fn checkpoint_container(
        &self,
        _r: Request<cri::CheckpointContainerRequest>,
    ) -> Reply<cri::CheckpointContainerResponse> {
        unimplemented("CheckpointContainer")
    }

    async fn list_metric_descriptors(
        &self,
        _r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Reply<cri::ListMetricDescriptorsResponse> {
        unimplemented("ListMetricDescriptors")
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Reply<cri::ListPodSandboxMetricsResponse> {
        unimplemented("ListPodSandboxMetrics")
    }

    async fn update_pod_sandbox_resources(
        &self,
        _r: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Reply<cri::UpdatePodSandboxResourcesResponse> {
        unimplemented("UpdatePodSandboxResources")
    }
}

/// The CRI service over `core`'s stores.
pub fn cri_service(
    core: &Core,
    config: crate::config::CriConfig,
) -> crate::error::Result<Arc<CriService>> {
    CriService::new(
        Handles {
            containers: core.containers.clone(),
            images: core.image_stores(),
            snapshots: core.snapshots.clone(),
            tasks: core.tasks.clone(),
            networks: core.networks.clone(),
            task_networks: core.task_networks.clone(),
            events: core.events.clone(),
            registry: core.registry.clone(),
            network: core.network_config.clone(),
            root: core.root.clone(),
            state: core.state.clone(),
        },
        config,
    )
}
