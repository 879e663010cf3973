//! `berthctl events`: follows the daemon's event stream, rendering each
//! payload it knows.

use crate::cli::{EventsArgs, Format};
use crate::ctx::Ctx;
use crate::output::rfc3339;
use anyhow::Result;
use berth_proto::services::events::v1 as events;
use berth_proto::services::events::v1::events_client::EventsClient;
use serde_json::json;
use tokio_stream::StreamExt;

pub(crate) async fn run(ctx: &Ctx, a: EventsArgs) -> Result<()> {
    let mut cl = EventsClient::new(ctx.ch.clone());
    let mut s = cl
        .subscribe(events::SubscribeRequest { filters: a.filters })
        .await?
        .into_inner();
    while let Some(env) = s.next().await {
        let env = env?;
        let ev = env.event.as_ref().map(describe_event).unwrap_or_default();
        if ctx.format == Format::Json {
            println!(
                "{}",
                json!({"timestamp": rfc3339(env.timestamp.as_ref()), "namespace": env.namespace,
                       "topic": env.topic, "event": ev})
            );
        } else {
            println!(
                "{} {} {} {}",
                rfc3339(env.timestamp.as_ref()),
                env.namespace,
                env.topic,
                ev
            );
        }
    }
    Ok(())
}

/// A readable rendering of an event payload.
fn describe_event(any: &prost_types::Any) -> String {
    use berth_proto::pb::containerd::events as ev;
    use berth_proto::pb::containerd::services::images::v1 as im;
    use berth_proto::typeurl::unpack;
    macro_rules! try_types {
        ($($t:ty),*) => {$(
            if let Some(m) = unpack::<$t>(any) {
                return format!("{m:?}");
            }
        )*};
    }
    try_types!(
        ev::NamespaceCreate,
        ev::NamespaceUpdate,
        ev::NamespaceDelete,
        ev::ContentCreate,
        ev::ContentDelete,
        im::ImageCreate,
        im::ImageUpdate,
        im::ImageDelete,
        ev::ContainerCreate,
        ev::ContainerUpdate,
        ev::ContainerDelete,
        ev::SnapshotPrepare,
        ev::SnapshotCommit,
        ev::SnapshotRemove,
        ev::TaskCreate,
        ev::TaskStart,
        ev::TaskExit,
        ev::TaskDelete,
        ev::TaskOom,
        ev::TaskExecAdded,
        ev::TaskExecStarted,
        ev::TaskPaused,
        ev::TaskResumed
    );
    format!("{} ({} bytes)", any.type_url, any.value.len())
}
