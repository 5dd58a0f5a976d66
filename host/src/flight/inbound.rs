//! Reading what clients stream in (`do_put`, `do_exchange`, Flight SQL's puts):
//! every wait bounded by the stall timeout, every collected input bounded.

use crate::flight::incoming::Incoming;
use arrow::array::RecordBatch;
use arrow_flight::{FlightData, FlightDescriptor};
use bytes::Bytes;
use futures::StreamExt;
use mallard_core::{Error, Result};
use std::time::Duration;
use tonic::Status;

/// The next client message, or DeadlineExceeded when none comes within `idle`.
pub async fn next_within(
    incoming: &mut Incoming,
    idle: Duration,
    what: &str,
) -> Result<Option<FlightData>, Status> {
    tokio::time::timeout(idle, incoming.next())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "{what} received nothing from the client for {idle:?}; the stream was stopped"
            ))
        })?
        .transpose()
}

/// The first message of `what`'s client stream and the stream's descriptor,
/// which that message must carry: InvalidArgument for an empty stream or a
/// first message without one.
pub async fn first_with_descriptor(
    incoming: &mut Incoming,
    idle: Duration,
    what: &str,
) -> Result<(FlightData, FlightDescriptor), Status> {
    let first = next_within(incoming, idle, what)
        .await?
        .ok_or_else(|| Status::invalid_argument(format!("{what} stream is empty")))?;
    let descriptor = first.flight_descriptor.clone().ok_or_else(|| {
        Status::invalid_argument(format!("the first {what} message must carry a descriptor"))
    })?;
    Ok((first, descriptor))
}

/// The stream's schema message header: `first`'s if it carries one (pyarrow
/// sends it with the descriptor), else the next message that does.
pub async fn schema_message(
    first: FlightData,
    incoming: &mut Incoming,
    idle: Duration,
    what: &str,
) -> Result<Bytes> {
    let mut message = first;
    while message.data_header.is_empty() {
        message = next_within(incoming, idle, what)
            .await?
            .ok_or_else(|| Error::invalid_argument(format!("{what} stream carried no schema")))?;
    }
    Ok(message.data_header)
}

/// All batches of a small input stream (prepared statement parameters), at
/// most `max_rows` rows in at most `max_bytes` bytes of messages:
/// ResourceExhausted beyond either. A stream without messages holds none.
pub async fn bounded_batches(
    first: FlightData,
    incoming: &mut Incoming,
    idle: Duration,
    max_rows: usize,
    max_bytes: usize,
    what: &str,
) -> Result<Vec<RecordBatch>> {
    let mut messages = Vec::new();
    let mut bytes = 0usize;
    let mut next = Some(first);
    while let Some(message) = next {
        if !message.data_header.is_empty() {
            bytes += message.data_header.len() + message.data_body.len();
            if bytes > max_bytes {
                return Err(Error::resource_exhausted(format!(
                    "{what} exceed {max_bytes} bytes"
                )));
            }
            messages.push(FlightData {
                flight_descriptor: None,
                ..message
            });
        }
        next = next_within(incoming, idle, what).await?;
    }
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let what = what.to_string();
    // Decoding validates every string: off the async runtime, so a costly input
    // (bounded by the decoder's footprint rule) slows its sender only.
    tokio::task::spawn_blocking(move || {
        let messages = messages.into_iter().map(|m| (m.data_header, m.data_body));
        mallard_protocol::flight_sql::decode_parameters(messages, max_rows, &what)
            .map_err(Error::from)
    })
    .await
    .map_err(|e| Error::internal(format!("decoding a small input stream: {e}")))?
}
