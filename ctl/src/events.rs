//! `berthctl events`: follows the daemon's event stream. Each payload is
//! decoded by its type URL (see [`crate::output::payload_json`]): a JSON
//! object per line with `--format json`, `key=value` fields in table mode.

use crate::cli::{EventsArgs, Format};
use crate::ctx::Ctx;
use crate::output::{payload_json, payload_text, rfc3339, time_json};
use anyhow::Result;
use berth_proto::services::events::v1 as events;
use berth_proto::services::events::v1::events_client::EventsClient;
use serde_json::json;
use std::io::Write;
use tokio_stream::StreamExt;

pub(crate) async fn run(ctx: &Ctx, a: EventsArgs) -> Result<()> {
    let mut cl = EventsClient::new(ctx.ch.clone());
    let mut s = cl
        .subscribe(events::SubscribeRequest { filters: a.filters })
        .await?
        .into_inner();
    while let Some(env) = s.next().await {
        let env = env?;
        let line = if ctx.format == Format::Json {
            let (ty, ev) = match &env.event {
                Some(any) => (
                    json!(berth_proto::typeurl::type_name(&any.type_url)),
                    payload_json(any),
                ),
                None => (serde_json::Value::Null, serde_json::Value::Null),
            };
            json!({"timestamp": time_json(env.timestamp.as_ref()), "namespace": env.namespace,
                   "topic": env.topic, "type": ty, "event": ev})
            .to_string()
        } else {
            format!(
                "{} {} {} {}",
                rfc3339(env.timestamp.as_ref()),
                env.namespace,
                env.topic,
                env.event.as_ref().map(payload_text).unwrap_or_default()
            )
        };
        // Flushed per event: a pipe reader (jq, grep) sees each as it comes.
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}
