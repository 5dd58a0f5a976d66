//! The Flight operations the walkthrough and the benchmark time: put, get,
//! transfer through the client, push, exchange. Each streams; none holds a table.

use anyhow::{Context, Result, anyhow};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{Action, FlightClient, FlightData, FlightDescriptor, Ticket};
use futures::{Stream, StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use mallard::transport::MAX_FLIGHT_DATA_BYTES;

/// Puts a stream of batches into `table`; returns the rows the server acknowledged.
pub async fn put(
    client: &mut FlightClient,
    table: &str,
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
    progress: &ProgressBar,
) -> Result<u64> {
    let progress = progress.clone();
    let input = batches
        .inspect_ok(move |b| progress.inc(b.num_rows() as u64))
        .map_err(|e| FlightError::ExternalError(e.into()));
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(MAX_FLIGHT_DATA_BYTES)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(table.to_owned())))
        .build(input);
    let results: Vec<_> = client.do_put(data).await?.try_collect().await?;
    acknowledged_rows(results.last().map(|r| &r.app_metadata[..]))
}

fn acknowledged_rows(metadata: Option<&[u8]>) -> Result<u64> {
    let metadata = metadata.ok_or_else(|| anyhow!("the server did not acknowledge the put"))?;
    let value: serde_json::Value = serde_json::from_slice(metadata)?;
    value["rows"]
        .as_u64()
        .ok_or_else(|| anyhow!("put acknowledgement without rows: {value}"))
}

/// Runs `sql` and counts the rows received (batches are dropped as they arrive).
pub async fn get_count(
    client: &mut FlightClient,
    sql: &str,
    progress: &ProgressBar,
) -> Result<u64> {
    let mut stream = client.do_get(Ticket::new(sql.to_owned())).await?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let n = batch?.num_rows() as u64;
        rows += n;
        progress.inc(n);
    }
    Ok(rows)
}

/// Runs `sql` and collects the (small) result.
pub async fn query(client: &mut FlightClient, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(client
        .do_get(Ticket::new(sql.to_owned()))
        .await?
        .try_collect()
        .await?)
}

/// TRANSFER as the seeds do it, through the client: `src` do_get streamed into a
/// do_put on `dst`. The FlightData messages are forwarded as they are, undecoded.
pub async fn transfer(
    src: &mut FlightClient,
    sql: &str,
    dst: &mut FlightClient,
    table: &str,
    progress: &ProgressBar,
) -> Result<u64> {
    let mut request = tonic::Request::new(Ticket::new(sql.to_owned()));
    *request.metadata_mut() = src.metadata().clone();
    let incoming = src
        .inner_mut()
        .do_get(request)
        .await?
        .into_inner()
        .map_err(|s| FlightError::Tonic(Box::new(s)));
    let descriptor = FlightDescriptor::new_cmd(table.to_owned());
    let progress = progress.clone();
    let mut first = true;
    let forwarded = incoming.map_ok(move |mut data: FlightData| {
        if first {
            data.flight_descriptor = Some(descriptor.clone());
            first = false;
        }
        progress.inc(mallard::exchange::message_rows(&data.data_header));
        data
    });
    let results: Vec<_> = dst.do_put(forwarded).await?.try_collect().await?;
    acknowledged_rows(results.last().map(|r| &r.app_metadata[..]))
}

/// Runs an action and parses its JSON result.
pub async fn action(
    client: &mut FlightClient,
    kind: &str,
    body: impl Into<bytes::Bytes>,
) -> Result<serde_json::Value> {
    let results: Vec<_> = client
        .do_action(Action::new(kind, body.into()))
        .await?
        .try_collect()
        .await?;
    let first = results
        .first()
        .ok_or_else(|| anyhow!("action {kind} returned nothing"))?;
    serde_json::from_slice(first).with_context(|| format!("action {kind} result"))
}

/// PUSH: the `push_table` action (server to server).
pub async fn push(
    client: &mut FlightClient,
    table: &str,
    to: &str,
    target_table: &str,
) -> Result<u64> {
    push_through(client, table, None, to, target_table).await
}

/// Pushes `table` through the exchange `exchangers` (a descriptor, e.g. a name
/// or a JSON list of stages), if any; returns the rows the target acknowledged.
pub async fn push_through(
    client: &mut FlightClient,
    table: &str,
    exchangers: Option<&str>,
    to: &str,
    target_table: &str,
) -> Result<u64> {
    let mut body = serde_json::json!({ "table": table, "to": to, "target_table": target_table });
    if let Some(exchangers) = exchangers {
        body["exchangers"] = exchangers.into();
    }
    let result = action(client, "push_table", body.to_string()).await?;
    result["rows"]
        .as_u64()
        .ok_or_else(|| anyhow!("push_table result without rows: {result}"))
}

/// Outcome of an exchange: rows received and whether `processed` was all true.
pub struct Exchanged {
    /// Output rows.
    pub rows: u64,
    /// Rows whose `processed` column is true (0 if there is no such column).
    pub processed_true: u64,
    /// The first output batch, for printing.
    pub sample: Option<RecordBatch>,
}

/// Exchanges a stream of batches through `command` and consumes the output as it comes.
pub async fn exchange(
    client: &mut FlightClient,
    command: &str,
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
    progress: &ProgressBar,
) -> Result<Exchanged> {
    let input = batches.map_err(|e| FlightError::ExternalError(e.into()));
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(MAX_FLIGHT_DATA_BYTES)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_owned())))
        .build(input);
    let mut output = client.do_exchange(data).await?;
    let mut out = Exchanged {
        rows: 0,
        processed_true: 0,
        sample: None,
    };
    while let Some(batch) = output.next().await {
        let batch = batch?;
        out.rows += batch.num_rows() as u64;
        progress.inc(batch.num_rows() as u64);
        if let Some(p) = batch.column_by_name("processed") {
            out.processed_true += p.as_boolean().true_count() as u64;
        }
        if out.sample.is_none() {
            out.sample = Some(batch.slice(0, batch.num_rows().min(5)));
        }
    }
    Ok(out)
}
