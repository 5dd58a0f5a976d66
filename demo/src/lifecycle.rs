//! The exchanger lifecycle from the command line, as `rpk transform` users
//! expect: upload (with the server's report and dry run), list, remove,
//! exchange a Parquet file into another, and run SQL.

use crate::data;
use crate::ops;
use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use mallard::transport::MAX_FLIGHT_DATA_BYTES;
use mallard_protocol::{ExchangerRef, PublishRequest, UploadOptions, UploadRequest};
use serde_json::Value;
use std::path::Path;
use std::time::Instant;

/// `k=v` into a pair.
pub fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

/// Where an upload goes besides the caller's own namespace on the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadTo {
    /// The shared namespace (admin).
    pub shared: bool,
    /// Every peer of the server's cluster too.
    pub to_peers: bool,
}

/// Uploads a component and prints the server's report.
pub async fn upload(
    client: &mut FlightClient,
    path: &Path,
    to: UploadTo,
    dry_run_schema: Option<&Path>,
    params: Vec<(String, String)>,
) -> Result<Value> {
    let component = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let dry_run_schema = match dry_run_schema {
        Some(parquet) => {
            let (schema, _, _) = data::read_parquet(parquet)?;
            Some(
                mallard_exchanger::ipc::MessageEncoder::new(schema)
                    .schema_header()
                    .into(),
            )
        }
        None => None,
    };
    let options = UploadOptions {
        shared: to.shared,
        to_peers: to.to_peers,
        dry_run_schema,
        params,
    };
    let body = UploadRequest::encode(&component, &options);
    let report = ops::action(client, "upload_exchanger", body).await?;
    println!(
        "uploaded {} {} (sha256:{}), {} bytes, compiled in {:.0} ms",
        report["exchanger"].as_str().unwrap_or_default(),
        report["version"].as_str().unwrap_or_default(),
        &report["sha256"].as_str().unwrap_or_default(),
        report["size"],
        report["compile_ms"].as_f64().unwrap_or_default(),
    );
    println!(
        "  implements {}",
        report["wit"].as_str().unwrap_or_default()
    );
    print_peers(&report);
    for key in ["imports", "exports"] {
        let items: Vec<&str> = report[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!("  {key}: {}", items.join(", "));
    }
    let dry = &report["dry_run"];
    match (&dry["output_schema"], &dry["refused"]) {
        (Value::Array(fields), _) => {
            let columns: Vec<String> = fields
                .iter()
                .map(|f| {
                    format!(
                        "{} {}",
                        f["name"].as_str().unwrap_or("?"),
                        f["type"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            println!(
                "  dry run on the {} schema: output {}",
                dry["input"].as_str().unwrap_or_default(),
                columns.join(", ")
            );
        }
        (_, refused) => println!(
            "  dry run on the {} schema: refused ({}) {}",
            dry["input"].as_str().unwrap_or_default(),
            refused["code"].as_str().unwrap_or_default(),
            refused["message"].as_str().unwrap_or_default()
        ),
    }
    println!(
        "  run it as {}",
        report["exchanger"].as_str().unwrap_or_default()
    );
    Ok(report)
}

/// Prints the exchangers the caller can see as a table.
pub async fn list(client: &mut FlightClient) -> Result<Value> {
    let listing = ops::action(client, "list_exchangers", "").await?;
    let mut table = comfy_table::Table::new();
    table.set_header([
        "exchanger",
        "owner",
        "latest",
        "versions",
        "calls",
        "errors",
        "cpu ms",
    ]);
    for entry in listing.as_array().into_iter().flatten() {
        let versions = entry["versions"].as_array().map_or(0, Vec::len);
        table.add_row([
            entry["exchanger"].as_str().unwrap_or_default().to_owned(),
            entry["owner"].as_str().unwrap_or_default().to_owned(),
            entry["latest"].as_str().unwrap_or_default().to_owned(),
            versions.to_string(),
            entry["calls"].to_string(),
            entry["errors"].to_string(),
            format!("{:.1}", entry["cpu_ms"].as_f64().unwrap_or_default()),
        ]);
    }
    println!("{table}");
    Ok(listing)
}

/// Removes versions of an exchanger.
/// Publishes a user's version into the shared namespace (and the peers') and
/// prints where it now is.
pub async fn publish(client: &mut FlightClient, reference: &str, to_peers: bool) -> Result<()> {
    let reference = ExchangerRef::parse(reference)?;
    let body = PublishRequest::encode(&reference, to_peers);
    let report = ops::action(client, "publish_exchanger", body).await?;
    println!(
        "published {} as {}",
        reference,
        report["pinned"].as_str().unwrap_or_default()
    );
    print_peers(&report);
    Ok(())
}

/// The peers a report says the same version is on, one line each.
fn print_peers(report: &Value) {
    for peer in report["peers"].as_array().into_iter().flatten() {
        println!(
            "  also on {}: {}",
            peer["node"].as_str().unwrap_or_default(),
            peer["pinned"].as_str().unwrap_or_default()
        );
    }
}

pub async fn remove(client: &mut FlightClient, reference: &str) -> Result<()> {
    let removed = ops::action(client, "remove_exchanger", reference.to_owned()).await?;
    for version in removed["removed"].as_array().into_iter().flatten() {
        println!("removed {}", version.as_str().unwrap_or_default());
    }
    Ok(())
}

/// One exchange stage as the command line gives it.
pub struct Stage<'a> {
    /// `[OWNER/]NAME[@PIN]`.
    pub reference: &'a str,
    /// Parameters.
    pub params: Vec<(String, String)>,
    /// Most instances (`None`: the server's cap).
    pub instances: Option<u32>,
    /// Whether output may leave in any order.
    pub any_order: bool,
}

impl Stage<'_> {
    /// The `do_exchange` descriptor.
    pub fn descriptor(&self) -> String {
        let mut stage = serde_json::json!({
            "exchanger": self.reference,
            "params": self
                .params
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>(),
        });
        if let Some(n) = self.instances {
            stage["instances"] = n.into();
        }
        if self.any_order {
            stage["order"] = "any".into();
        }
        stage.to_string()
    }
}

/// Streams a Parquet file through an exchanger into another Parquet file,
/// with a progress bar and a receipt at the end.
pub async fn exchange(
    client: &mut FlightClient,
    stage: &Stage<'_>,
    input: &Path,
    output: &Path,
) -> Result<u64> {
    let (schema, rows, batches) = data::read_parquet(input)?;
    let command = stage.descriptor();
    let bar = indicatif::ProgressBar::new(rows);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows {per_sec}")
            .expect("template"),
    );
    let started = Instant::now();
    let sent = bar.clone();
    let input = futures::stream::iter(batches)
        .inspect(move |b| {
            if let Ok(b) = b {
                sent.inc(b.num_rows() as u64);
            }
        })
        .map_err(|e| FlightError::ExternalError(e.into()));
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(MAX_FLIGHT_DATA_BYTES)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command)))
        .build(input);
    let mut stream = client.do_exchange(data).await?;
    let tmp = output.with_extension("parquet.tmp");
    let mut writer: Option<parquet::arrow::ArrowWriter<std::fs::File>> = None;
    let mut out_rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch: RecordBatch = batch?;
        out_rows += batch.num_rows() as u64;
        let writer = match &mut writer {
            Some(w) => w,
            None => writer.insert(parquet::arrow::ArrowWriter::try_new(
                std::fs::File::create(&tmp)
                    .with_context(|| format!("creating {}", tmp.display()))?,
                batch.schema(),
                None,
            )?),
        };
        writer.write(&batch)?;
    }
    let Some(writer) = writer else {
        bail!(
            "the exchanger sent no batch; {} not written",
            output.display()
        );
    };
    writer.close()?;
    std::fs::rename(&tmp, output)?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let reference = stage.reference;
    println!(
        "exchanged {rows} rows into {out_rows} through {reference} in {seconds:.2} s \
         ({:.0} rows/s); wrote {}",
        rows as f64 / seconds.max(1e-9),
        output.display()
    );
    Ok(out_rows)
}

/// Runs SQL and prints the result (at most `max_rows` rows; the count always).
pub async fn sql(client: &mut FlightClient, sql: &str, max_rows: usize) -> Result<u64> {
    let mut stream = client.do_get(Ticket::new(sql.to_owned())).await?;
    let mut shown = Vec::new();
    let mut shown_rows = 0;
    let mut total = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        total += batch.num_rows() as u64;
        if shown_rows < max_rows {
            let take = batch.num_rows().min(max_rows - shown_rows);
            shown.push(batch.slice(0, take));
            shown_rows += take;
        }
    }
    if !shown.is_empty() {
        println!("{}", arrow::util::pretty::pretty_format_batches(&shown)?);
    }
    println!("({total} rows)");
    Ok(total)
}

/// `error: CODE: message`, for a failure of a lifecycle command: the server's
/// status when there is one, else the error chain.
pub fn describe_error(e: &anyhow::Error) -> String {
    for cause in e.chain() {
        if let Some(FlightError::Tonic(status)) = cause.downcast_ref::<FlightError>() {
            return format!("{:?}: {}", status.code(), status.message());
        }
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            return format!("{:?}: {}", status.code(), status.message());
        }
    }
    format!("{e:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_carries_instances_and_order_only_when_given() {
        let mut stage = Stage {
            reference: "alice/pseudonymize",
            params: vec![("key".into(), "k".repeat(16))],
            instances: None,
            any_order: false,
        };
        let plain: Value = serde_json::from_str(&stage.descriptor()).unwrap();
        assert_eq!(plain["exchanger"], "alice/pseudonymize");
        assert_eq!(plain["params"]["key"], "k".repeat(16));
        assert!(plain.get("instances").is_none() && plain.get("order").is_none());
        stage.instances = Some(2);
        stage.any_order = true;
        let parallel: Value = serde_json::from_str(&stage.descriptor()).unwrap();
        assert_eq!(
            (parallel["instances"].as_u64(), parallel["order"].as_str()),
            (Some(2), Some("any"))
        );
        let parsed =
            mallard_protocol::ExchangeRequest::parse(stage.descriptor().as_bytes()).unwrap();
        assert_eq!(parsed.stages[0].instances, Some(2));
    }

    #[test]
    fn params_are_key_equals_value() {
        assert_eq!(
            parse_param("mode=route"),
            Ok(("mode".into(), "route".into()))
        );
        assert_eq!(parse_param("expr=a=b"), Ok(("expr".into(), "a=b".into())));
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("=x").is_err());
    }
}
