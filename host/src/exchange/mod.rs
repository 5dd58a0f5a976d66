//! `do_exchange`: the request format, the session abstraction shared by the sandboxed
//! and native paths, and the worker that streams batches through a session.
//!
//! A session runs on a blocking thread. Client messages arrive through a bounded
//! channel and are handed to the session one by one; output goes back through an
//! [`output`] queue as soon as it is produced. A client that reads while it writes
//! keeps both sides at a few batches; one that writes everything first is served
//! from the queue's byte budget.

pub mod catalog;
pub mod dry_run;
pub mod layout;
pub mod metrics;
pub mod native;
pub mod output;
pub mod quotas;

use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow_flight::FlightData;
use bytes::Bytes;
use mallard_exchanger::ipc::{MessageDecoder, schema_from_header};
use metrics::ExchangerMetrics;
use output::{OutputSender, SendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

pub use mallard_protocol::{ExchangeRequest, Sandbox};

/// Input messages buffered between the network and a session.
pub const CHANNEL_MESSAGES: usize = 4;

/// One exchange stream's transform, sandboxed or native.
pub trait ExchangeSession: Send {
    /// The output schema message, sent to the client first.
    fn schema_message(&self) -> FlightData;
    /// Transforms one input message (record batch or dictionary batch).
    fn push(&mut self, header: &Bytes, body: &Bytes) -> Result<Vec<FlightData>>;
    /// End of input.
    fn finish(&mut self) -> Result<Vec<FlightData>>;
    /// What the guest printed, if anything (for logs).
    fn guest_output(&self) -> String {
        String::new()
    }
    /// Guest memory the session holds (its peak: wasm memories never shrink).
    fn guest_memory_bytes(&self) -> usize {
        0
    }
}

/// Rows of a record batch message, from its header (0 for other messages).
pub fn message_rows(header: &[u8]) -> u64 {
    arrow::ipc::root_as_message(header)
        .ok()
        .and_then(|m| m.header_as_record_batch())
        .map_or(0, |b| b.length().max(0) as u64)
}

/// Decodes a schema message header, returning the schema and the message to forward.
pub fn validated_schema_message(header: Bytes) -> Result<(SchemaRef, FlightData)> {
    let schema =
        schema_from_header(&header).map_err(|e| Error::InvalidArgument(format!("schema: {e}")))?;
    let message = FlightData {
        data_header: header,
        ..Default::default()
    };
    Ok((Arc::new(schema), message))
}

/// Decodes one client message with Arrow's full validation; a failure is the
/// client's (InvalidArgument). `what` says where (`batch 3`).
pub fn decode_input(
    decoder: &mut MessageDecoder,
    header: &Bytes,
    body: &Bytes,
    what: &str,
) -> Result<Option<RecordBatch>> {
    decoder
        .decode(header, Buffer::from(body.clone()))
        .map_err(|e| Error::InvalidArgument(format!("exchange input at {what}: {e}")))
}

/// The status for an exchanger's own refusal, wasm or native: bad parameters or
/// input are the client's fault (InvalidArgument), anything else ends the stream
/// (Aborted). `what` says where (`open`, `batch 3`, `finish`).
pub fn exchanger_error(name: &str, what: &str, e: mallard_exchanger::ExchangeError) -> Error {
    use mallard_exchanger::ExchangeError as E;
    let message = format!("exchanger {name:?} at {what}: {e}");
    match e {
        E::InvalidParams(_) | E::InvalidInput(_) => Error::InvalidArgument(message),
        E::Failed(_) => Error::Aborted(message),
    }
}

/// Sets a flag when dropped: tells a running guest its client is gone.
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Streams `input` through `session` into `output` until input ends, the client
/// leaves, or something fails (sent as the stream's final status), counting
/// rows, bytes, batch times, memory and the outcome in `metrics`.
pub fn run(
    mut session: Box<dyn ExchangeSession>,
    mut input: mpsc::Receiver<Result<FlightData>>,
    output: OutputSender,
    label: &str,
    metrics: &ExchangerMetrics,
) {
    let outcome = (|| -> Result<bool> {
        let send = |data: FlightData| {
            metrics.sent(&data);
            match output.send(data) {
                Ok(()) => Ok(true),
                Err(SendError::Gone) => Ok(false),
                Err(SendError::Stalled(e)) => Err(e),
            }
        };
        if !send(session.schema_message())? {
            return Ok(false);
        }
        while let Some(message) = input.blocking_recv() {
            let message = message?;
            if message.data_header.is_empty() {
                continue; // metadata-only message
            }
            metrics.received(&message);
            let started = std::time::Instant::now();
            let out = session.push(&message.data_header, &message.data_body);
            metrics.batch_wall.observe(started.elapsed());
            for data in out? {
                if !send(data)? {
                    return Ok(false);
                }
            }
        }
        for data in session.finish()? {
            if !send(data)? {
                return Ok(false);
            }
        }
        Ok(true)
    })();
    metrics.memory_seen(session.guest_memory_bytes());
    let guest_output = session.guest_output();
    if !guest_output.is_empty() {
        // Debug-formatted: the guest's text is escaped, so it cannot forge log lines.
        tracing::info!(exchange = ?label, output = ?guest_output.trim_end(), "guest output");
    }
    match outcome {
        Ok(true) => {
            tracing::debug!(exchange = ?label, "exchange complete");
            output.finish();
        }
        Ok(false) => {
            tracing::info!(exchange = ?label, "client left during exchange");
            metrics.error(tonic::Code::Cancelled);
        }
        Err(e) => {
            tracing::warn!(exchange = ?label, error = ?e.to_string(), "exchange failed");
            metrics.error(e.code());
            output.fail(e.into());
        }
    }
}
