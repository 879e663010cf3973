//! Runtime-wide CRI RPCs: Version, Status, RuntimeConfig,
//! UpdateRuntimeConfig.

use super::CriService;
use crate::error::Result;
use berth_proto::cri;

/// The CRI API version served.
pub const API_VERSION: &str = "v1";
/// The runtime name reported to the kubelet.
pub const RUNTIME_NAME: &str = "berth";

impl CriService {
    pub fn version(&self, _r: cri::VersionRequest) -> cri::VersionResponse {
        cri::VersionResponse {
            // The kubelet's version of the remote runtime API ("0.1.0" in
            // every CRI runtime).
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: API_VERSION.into(),
        }
    }

    /// Why pods cannot be networked yet: no conflist in the conf dir (as
    /// containerd's "cni plugin not initialized"), or an unreadable one.
    pub fn network_problem(&self) -> Option<String> {
        match self.networks.list() {
            Ok(l) if l.is_empty() => Some(format!(
                "Network plugin returns error: cni plugin not initialized: \
                 no network config found in {}",
                self.network.cni_conf_dir.display()
            )),
            Ok(_) => None,
            Err(e) => Some(format!(
                "Network plugin returns error: cni config load failed: {}",
                e.chain()
            )),
        }
    }

    pub fn status(&self, r: cri::StatusRequest) -> cri::StatusResponse {
        let net = self.network_problem();
        let conditions = vec![
            cri::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: net.is_none(),
                reason: if net.is_some() {
                    "NetworkPluginNotReady".into()
                } else {
                    String::new()
                },
                message: net.unwrap_or_default(),
            },
        ];
        let mut info = std::collections::HashMap::new();
        if r.verbose {
            let cfg = serde_json::json!({
                "sandboxImage": self.config.sandbox_image,
                "streamServerAddress": self.config.stream_server_address,
                "streamServerPort": self.config.stream_server_port,
                "maxContainerLogLineSize": self.config.max_container_log_line_size,
                "runtimeBinary": self.config.runtime_binary,
                "runtimes": self.config.runtimes,
                "cniConfDir": self.network.cni_conf_dir,
                "cniBinDirs": self.network.cni_bin_dirs,
            });
            info.insert("config".to_string(), cfg.to_string());
        }
        cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            runtime_handlers: self
                .config
                .handlers()
                .map(|(name, _)| cri::RuntimeHandler {
                    name: name.to_string(),
                    features: Some(cri::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: self
                            .features
                            .get(name)
                            .is_some_and(|f| f.recursive_read_only_mounts),
                        user_namespaces: false,
                    }),
                })
                .collect(),
            features: Some(cri::RuntimeFeatures {
                // Strict leaves out the image's /etc/group memberships.
                supplemental_groups_policy: true,
                user_namespaces_host_network: false,
            }),
        }
    }

    /// berthd places pod cgroups with the cgroupfs driver only.
    pub fn runtime_config(&self, _r: cri::RuntimeConfigRequest) -> cri::RuntimeConfigResponse {
        cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }
    }

    /// The kubelet sends the node's pod CIDR here. containerd only uses it
    /// to render a CNI config template, which berthd does not have, so it
    /// is accepted and not used (as containerd does without a template).
    pub fn update_runtime_config(
        &self,
        r: cri::UpdateRuntimeConfigRequest,
    ) -> Result<cri::UpdateRuntimeConfigResponse> {
        let cidr = r
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            tracing::info!(pod_cidr = %cidr, "CRI UpdateRuntimeConfig: no CNI config template, pod CIDR not used");
        }
        Ok(cri::UpdateRuntimeConfigResponse {})
    }
}
