//! `berthctl content …`: listing, reading, labelling and removing blobs, and
//! uploading one through the Write protocol (resuming a previous upload).

use crate::cli::Content;
use crate::ctx::{Ctx, label_mask, parse_labels};
use crate::error::CtlError;
use crate::output::{Table, ago, human_size, labels as fmt_labels, time_json};
use anyhow::{Context as _, Result};
use berth_proto::services::content::v1 as content;
use berth_proto::services::content::v1::content_client::ContentClient;
use serde_json::json;
use std::io::{Read, Write};
use tokio_stream::StreamExt;

pub(crate) async fn run(ctx: &Ctx, c: Content) -> Result<()> {
    let mut cl = ContentClient::new(ctx.ch.clone());
    match c {
        Content::Ls { quiet, filters } => {
            let mut s = cl
                .list(ctx.req(content::ListContentRequest { filters }))
                .await?
                .into_inner();
            let mut t = Table::new(&["DIGEST", "SIZE", "AGE", "LABELS"]);
            while let Some(block) = s.next().await {
                for i in block?.info {
                    if quiet {
                        println!("{}", i.digest);
                        continue;
                    }
                    t.row(
                        vec![
                            i.digest.clone(),
                            human_size(i.size),
                            ago(i.created_at.as_ref()),
                            fmt_labels(&i.labels),
                        ],
                        json!({"digest": i.digest, "size": i.size,
                               "created_at": time_json(i.created_at.as_ref()),
                               "updated_at": time_json(i.updated_at.as_ref()), "labels": i.labels}),
                    );
                }
            }
            if !quiet {
                t.print(ctx.format)?;
            }
        }
        Content::Get { digest } => {
            let mut s = crate::image::read_blob(ctx, &digest).await?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = s.next().await {
                out.write_all(&chunk?.data)?;
            }
            out.flush()?;
        }
        Content::Ingest {
            reference,
            expected_digest,
            expected_size,
            file,
            labels,
        } => {
            let mut data = Vec::new();
            match file {
                Some(f) => {
                    data = std::fs::read(&f).with_context(|| format!("read {}", f.display()))?;
                }
                None => {
                    std::io::stdin().read_to_end(&mut data)?;
                }
            }
            let labels = labels
                .iter()
                .map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| CtlError(format!("--label {l}: expected key=value")))
                })
                .collect::<std::result::Result<_, _>>()?;
            let digest = ingest(
                ctx,
                &reference,
                data,
                expected_digest,
                expected_size,
                labels,
            )
            .await?;
            println!("{digest}");
        }
        Content::Rm { digests } => {
            for d in digests {
                cl.delete(ctx.req(content::DeleteContentRequest { digest: d.clone() }))
                    .await?;
                println!("{d}");
            }
        }
        Content::Label { digest, labels } => {
            let l = parse_labels(&labels);
            let mask = label_mask(&l);
            let info = cl
                .update(ctx.req(content::UpdateRequest {
                    info: Some(content::Info {
                        digest,
                        labels: l,
                        ..Default::default()
                    }),
                    update_mask: Some(mask),
                }))
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            println!("{}", fmt_labels(&info.labels));
        }
    }
    Ok(())
}

/// Uploads `data` through the Write protocol: resumes a previous upload of
/// the same ref from its offset.
async fn ingest(
    ctx: &Ctx,
    reference: &str,
    data: Vec<u8>,
    expected: Option<String>,
    size: Option<i64>,
    labels: std::collections::HashMap<String, String>,
) -> Result<String> {
    const CHUNK: usize = 1 << 20;
    let mut cl = ContentClient::new(ctx.ch.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let total = size.unwrap_or(data.len() as i64);
    let expected = expected.unwrap_or_default();
    tx.send(content::WriteContentRequest {
        action: content::WriteAction::Stat as i32,
        r#ref: reference.to_string(),
        total,
        expected: expected.clone(),
        ..Default::default()
    })
    .await?;
    let mut resp = cl
        .write(ctx.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await?
        .into_inner();
    let stat = resp
        .next()
        .await
        .ok_or_else(|| CtlError("the daemon closed the upload".into()))??;
    // A negative offset restarts; one past the end (or past usize) resumes at the end.
    let mut offset = usize::try_from(stat.offset.max(0)).map_or(data.len(), |o| o.min(data.len()));
    if offset > 0 {
        eprintln!("resuming {reference} at offset {offset}");
    }
    loop {
        let end = (offset + CHUNK).min(data.len());
        let last = end == data.len();
        tx.send(content::WriteContentRequest {
            action: if last {
                content::WriteAction::Commit
            } else {
                content::WriteAction::Write
            } as i32,
            r#ref: reference.to_string(),
            total,
            expected: if last {
                expected.clone()
            } else {
                String::new()
            },
            offset: offset as i64,
            data: data[offset..end].to_vec(),
            labels: if last {
                labels.clone()
            } else {
                Default::default()
            },
        })
        .await?;
        let r = resp
            .next()
            .await
            .ok_or_else(|| CtlError("the daemon closed the upload".into()))??;
        offset = end;
        if last {
            return Ok(r.digest);
        }
    }
}
