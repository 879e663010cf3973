//! `containerd.services.tasks.v1.Tasks` over the task service
//! ([`crate::runtime::TaskService`]): decode, call, encode.

use super::boundary::namespace;
use crate::core::Core;
use berth_proto::filters::Filter;
use berth_proto::pb::containerd::task::v2 as shimapi;
use berth_proto::services::tasks::v1::tasks_server::Tasks;
use berth_proto::services::tasks::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct TasksService(pub Arc<Core>);

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create(
        &self,
        req: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let container_id = r.container_id.clone();
        let pid = self.0.tasks.create(&ns, r).await?;
        Ok(Response::new(CreateTaskResponse { container_id, pid }))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let pid = self.0.tasks.start(&ns, &r.container_id, &r.exec_id).await?;
        Ok(Response::new(StartResponse { pid }))
    }

    async fn delete(
        &self,
        req: Request<DeleteTaskRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let d = self.0.tasks.delete(&ns, &id).await?;
        Ok(Response::new(DeleteResponse {
            id,
            pid: d.pid,
            exit_status: d.exit_status,
            exited_at: d.exited_at,
        }))
    }

    async fn delete_process(
        &self,
        req: Request<DeleteProcessRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let d = self
            .0
            .tasks
            .delete_process(&ns, &r.container_id, &r.exec_id)
            .await?;
        Ok(Response::new(DeleteResponse {
            id: r.exec_id,
            pid: d.pid,
            exit_status: d.exit_status,
            exited_at: d.exited_at,
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let p = self.0.tasks.get(&ns, &r.container_id, &r.exec_id).await?;
        Ok(Response::new(GetResponse { process: Some(p) }))
    }

    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let ns = namespace(&req)?;
        let f = Filter::parse(&req.into_inner().filter)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let tasks = self.0.tasks.list(&ns, &f).await?;
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.0
            .tasks
            .kill(&ns, &r.container_id, &r.exec_id, r.signal, r.all)
            .await?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let shim_req = shimapi::ExecProcessRequest {
            id: r.container_id.clone(),
            exec_id: r.exec_id,
            terminal: r.terminal,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            spec: r.spec,
        };
        self.0.tasks.exec(&ns, &r.container_id, shim_req).await?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.0
            .tasks
            .resize_pty(&ns, &r.container_id, &r.exec_id, r.width, r.height)
            .await?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.0
            .tasks
            .close_io(&ns, &r.container_id, &r.exec_id, r.stdin)
            .await?;
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        self.0
            .tasks
            .pause(&ns, &req.into_inner().container_id)
            .await?;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        self.0
            .tasks
            .resume(&ns, &req.into_inner().container_id)
            .await?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        req: Request<ListPidsRequest>,
    ) -> Result<Response<ListPidsResponse>, Status> {
        let ns = namespace(&req)?;
        let processes = self
            .0
            .tasks
            .pids(&ns, &req.into_inner().container_id)
            .await?;
        Ok(Response::new(ListPidsResponse { processes }))
    }

    async fn checkpoint(
        &self,
        _req: Request<CheckpointTaskRequest>,
    ) -> Result<Response<CheckpointTaskResponse>, Status> {
        Err(Status::unimplemented(
            "checkpoint needs CRIU support, which is not built yet",
        ))
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.0
            .tasks
            .update(&ns, &r.container_id, r.resources, r.annotations)
            .await?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        req: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        let ns = namespace(&req)?;
        let f = Filter::parse_all(&req.into_inner().filters)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let metrics = self.0.tasks.metrics(&ns, &f).await?;
        Ok(Response::new(MetricsResponse { metrics }))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let w = self.0.tasks.wait(&ns, &r.container_id, &r.exec_id).await?;
        Ok(Response::new(WaitResponse {
            exit_status: w.exit_status,
            exited_at: w.exited_at,
        }))
    }
}
