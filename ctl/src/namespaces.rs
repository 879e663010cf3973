//! `berthctl namespaces …`.

use crate::cli::Namespaces;
use crate::ctx::{Ctx, label_mask, parse_labels};
use crate::error::CtlError;
use crate::output::{Table, labels as fmt_labels};
use anyhow::Result;
use berth_proto::services::namespaces::v1 as namespaces;
use berth_proto::services::namespaces::v1::namespaces_client::NamespacesClient;
use serde_json::json;

pub(crate) async fn run(ctx: &Ctx, c: Namespaces) -> Result<()> {
    let mut cl = NamespacesClient::new(ctx.ch.clone());
    match c {
        Namespaces::Ls { quiet } => {
            let list = cl
                .list(ctx.req(namespaces::ListNamespacesRequest::default()))
                .await?
                .into_inner()
                .namespaces;
            if quiet {
                list.iter().for_each(|n| println!("{}", n.name));
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "LABELS"]);
            for n in list {
                t.row(
                    vec![n.name.clone(), fmt_labels(&n.labels)],
                    json!({"name": n.name, "labels": n.labels}),
                );
            }
            t.print(ctx.format)?;
        }
        Namespaces::Create { name, labels } => {
            // The header too: containerd needs a namespace to publish the
            // event, whichever namespace is being created.
            cl.create(ctx.req(namespaces::CreateNamespaceRequest {
                namespace: Some(namespaces::Namespace {
                    name,
                    labels: parse_labels(&labels),
                }),
            }))
            .await?;
        }
        Namespaces::Rm { names } => {
            for name in names {
                cl.delete(ctx.req(namespaces::DeleteNamespaceRequest { name: name.clone() }))
                    .await
                    .map_err(|s| {
                        CtlError(format!("remove {name}: {}", crate::error::status_error(&s)))
                    })?;
                println!("{name}");
            }
        }
        Namespaces::Label { name, labels } => {
            let l = parse_labels(&labels);
            let mask = label_mask(&l);
            let ns = cl
                .update(ctx.req(namespaces::UpdateNamespaceRequest {
                    namespace: Some(namespaces::Namespace { name, labels: l }),
                    update_mask: Some(mask),
                }))
                .await?
                .into_inner()
                .namespace
                .unwrap_or_default();
            println!("{}", fmt_labels(&ns.labels));
        }
    }
    Ok(())
}
