//! `containerd.services.images.v1.Images`.

use super::boundary::{ctx, namespace, paths};
use crate::core::Core;
use crate::images::{Image as Stored, ImageRecord};
use crate::types::{from_timestamp, timestamp};
use berth_proto::services::images::v1::images_server::Images;
use berth_proto::services::images::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ImagesService(pub Arc<Core>);

pub(crate) fn to_proto(i: Stored) -> Image {
    Image {
        name: i.name,
        labels: i.record.labels,
        target: Some(i.record.target.into()),
        created_at: Some(timestamp(i.record.created_at)),
        updated_at: Some(timestamp(i.record.updated_at)),
    }
}

fn from_proto(i: Option<Image>) -> Result<Stored, Status> {
    let i = i.ok_or_else(|| Status::invalid_argument("image must be set"))?;
    Ok(Stored {
        name: i.name,
        record: ImageRecord {
            target: i.target.map(Into::into).unwrap_or_default(),
            labels: i.labels,
            created_at: i.created_at.as_ref().map_or(0, from_timestamp),
            updated_at: i.updated_at.as_ref().map_or(0, from_timestamp),
        },
    })
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn get(
        &self,
        req: Request<GetImageRequest>,
    ) -> Result<Response<GetImageResponse>, Status> {
        let ns = namespace(&req)?;
        let img = self.0.images.get(&ns, &req.into_inner().name)?;
        Ok(Response::new(GetImageResponse {
            image: Some(to_proto(img)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let ns = namespace(&req)?;
        let images = self
            .0
            .images
            .list(&ns, &req.into_inner().filters)?
            .into_iter()
            .map(to_proto)
            .collect();
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn create(
        &self,
        req: Request<CreateImageRequest>,
    ) -> Result<Response<CreateImageResponse>, Status> {
        let ctx = ctx(&req)?;
        let img = from_proto(req.into_inner().image)?;
        let created = self.0.images.create(&ctx, img)?;
        Ok(Response::new(CreateImageResponse {
            image: Some(to_proto(created)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateImageRequest>,
    ) -> Result<Response<UpdateImageResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let img = from_proto(req.image)?;
        let updated = self.0.images.update(&ns, img, &paths(req.update_mask))?;
        Ok(Response::new(UpdateImageResponse {
            image: Some(to_proto(updated)),
        }))
    }

    async fn delete(&self, req: Request<DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let target = req.target.as_ref().map(|t| t.digest.as_str());
        self.0
            .images
            .delete(&ns, &req.name, target, req.sync)
            .await?;
        Ok(Response::new(()))
    }
}
