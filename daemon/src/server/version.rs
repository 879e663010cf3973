//! `containerd.services.version.v1.Version`.

use berth_proto::services::version::v1::{VersionResponse, version_server::Version};
use tonic::{Request, Response, Status};

/// Version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Source revision of this build (set by the build script).
pub const REVISION: &str = env!("BERTH_REVISION");

pub struct VersionService;

#[tonic::async_trait]
impl Version for VersionService {
    async fn version(&self, _: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: VERSION.to_string(),
            revision: REVISION.to_string(),
        }))
    }
}
