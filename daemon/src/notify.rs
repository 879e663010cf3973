//! systemd readiness (`Type=notify`): READY=1 once the API socket answers a
//! request, STOPPING=1 when shutting down. Without `$NOTIFY_SOCKET` (not
//! started by systemd) nothing is sent.

use std::path::PathBuf;
use std::time::Duration;

/// Sends READY=1 as soon as a Version call on `api` succeeds (tried for
/// `limit`); logs and gives up otherwise, so systemd's start timeout
/// reports the failure.
pub async fn ready_when_serving(api: PathBuf, limit: Duration) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let deadline = tokio::time::Instant::now() + limit;
    let address = api.display().to_string();
    loop {
        if answers(&address).await {
            match sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
                Ok(()) => tracing::debug!("told systemd: READY=1"),
                Err(e) => tracing::warn!("sd_notify READY=1: {e}"),
            }
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::error!(%address, "the API socket did not answer: not telling systemd READY");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One round trip on the API, as a client makes it.
async fn answers(address: &str) -> bool {
    use berth_proto::services::version::v1::version_client::VersionClient;
    let Ok(ch) = berth_proto::client::connect(address).await else {
        return false;
    };
    tokio::time::timeout(Duration::from_secs(5), VersionClient::new(ch).version(()))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// STOPPING=1: berthd is shutting down (systemd shows "deactivating").
pub fn stopping() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Stopping]) {
        tracing::warn!("sd_notify STOPPING=1: {e}");
    }
}
