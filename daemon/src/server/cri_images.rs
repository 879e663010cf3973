//! `runtime.v1.ImageService` (Kubernetes CRI) over [`crate::cri::images`].
//! CRI requests carry no namespace: everything is in `k8s.io`.

use crate::cri::images::{CriImage, CriImages};
use berth_proto::cri::image_service_server::ImageService;
use berth_proto::cri::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct CriImagesService(pub Arc<CriImages>);

fn to_proto(i: CriImage) -> Image {
    let (repo_tags, repo_digests) = i.repo_tags_and_digests();
    let (uid, username) = i.uid_or_username();
    Image {
        spec: Some(ImageSpec {
            image: i.id.clone(),
            annotations: i.annotations.into_iter().collect(),
            ..Default::default()
        }),
        id: i.id,
        repo_tags,
        repo_digests,
        size: i.size,
        uid: uid.map(|value| Int64Value { value }),
        username,
        pinned: i.pinned,
    }
}

fn image_name(spec: Option<&ImageSpec>) -> Result<&str, Status> {
    spec.map(|s| s.image.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Status::invalid_argument("image.image must be set"))
}

#[tonic::async_trait]
impl ImageService for CriImagesService {
    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let req = req.into_inner();
        let filter = req
            .filter
            .as_ref()
            .and_then(|f| f.image.as_ref())
            .map(|s| s.image.as_str());
        let images = self.0.list(filter)?.into_iter().map(to_proto).collect();
        Ok(Response::new(ListImagesResponse { images }))
    }

    type StreamImagesStream =
        futures::stream::BoxStream<'static, Result<StreamImagesResponse, Status>>;

    async fn stream_images(
        &self,
        _req: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        Err(Status::unimplemented(
            "StreamImages is not implemented: use ListImages",
        ))
    }

    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref())?;
        // A missing image is an empty answer, not an error (as containerd).
        let Some(img) = self.0.resolve(name)? else {
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            let v = serde_json::json!({"chainID": img.chain_id, "imageSpec": img.config});
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(to_proto(img)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref())?;
        let image_ref = self.0.pull(name, req.auth.as_ref()).await?;
        Ok(Response::new(PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let req = req.into_inner();
        self.0.remove(image_name(req.image.as_ref())?).await?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let u = self.0.fs_info()?;
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![FilesystemUsage {
                timestamp: u.timestamp,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: u.mountpoint.display().to_string(),
                }),
                used_bytes: Some(UInt64Value {
                    value: u.used_bytes,
                }),
                inodes_used: Some(UInt64Value {
                    value: u.inodes_used,
                }),
            }],
            container_filesystems: Vec::new(),
        }))
    }
}
