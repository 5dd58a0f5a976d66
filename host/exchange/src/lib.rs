//! Exchanges, from every entry: which exchangers exist ([`catalog`]), the sessions
//! that run them (sandboxed: [`wasm`]; built-ins' native builds: [`native`]), and
//! the one [`pipeline`] that streams messages through a list of sessions for
//! `do_exchange`, the SQL function ([`sql`]) and `push_table`.
//!
//! A pipeline runs on one blocking thread, and a stateless stage also on [`lanes`]
//! (one thread per further instance). Input messages arrive through a bounded
//! channel and go through the stages one by one; output goes back through an
//! [`output`] queue as soon as it is produced. A client that reads while it writes
//! keeps both sides at a few batches; one that writes everything first is served
//! from the queue's byte budget.

pub mod bare_select;
pub mod catalog;
pub mod compile_queue;
pub mod context;
pub mod dry_run;
pub mod lanes;
pub mod layout;
pub mod metrics;
pub mod native;
pub mod output;
pub mod pipeline;
pub mod quotas;
pub mod scalar;
pub mod sql;
#[cfg(test)]
mod testing;
pub mod wasm;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow_flight::FlightData;
use bytes::Bytes;
use mallard_core::{Error, Result};
use mallard_exchanger::ipc::{Message, MessageDecoder, schema_from_header};
pub use mallard_protocol::outgoing::Outgoing;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use context::Exchanges;
pub use mallard_protocol::{ExchangeRequest, Sandbox};

/// Input messages buffered between the network and a session.
pub const CHANNEL_MESSAGES: usize = 4;

/// One exchange stream's transform, sandboxed or native.
pub trait ExchangeSession: Send {
    /// The output schema message, sent to the client first.
    fn schema_message(&self) -> FlightData;
    /// Transforms one input message (record batch or dictionary batch).
    fn push(&mut self, header: &Bytes, body: &Bytes) -> Result<Vec<Outgoing>>;
    /// End of input.
    fn finish(&mut self) -> Result<Vec<Outgoing>>;
    /// What the guest printed, if anything (for logs).
    fn guest_output(&self) -> String {
        String::new()
    }
    /// Guest memory the session holds (its peak: wasm memories never shrink).
    fn guest_memory_bytes(&self) -> usize {
        0
    }
    /// Whether the session said its output for a batch depends only on that
    /// batch (see [`crate::lanes`]); asked once, after it opened.
    fn stateless(&self) -> bool {
        false
    }
}

/// An IPC message this server encoded, as an outgoing Flight message.
pub(crate) fn outgoing(Message { header, body }: Message) -> Outgoing {
    Outgoing::data(header.into(), vec![body.into()])
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
        schema_from_header(&header).map_err(|e| Error::invalid_argument(format!("schema: {e}")))?;
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
        .map_err(|e| bad_input(what, e))
}

/// The client's malformed input at `what` (`batch 3`): InvalidArgument.
pub fn bad_input(what: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid_argument(format!("exchange input at {what}: {why}"))
}

/// The status for an exchanger's own refusal, wasm or native: bad parameters or
/// input are the client's fault (InvalidArgument), anything else ends the stream
/// (Aborted). `what` says where (`open`, `batch 3`, `finish`).
pub fn exchanger_error(name: &str, what: &str, e: mallard_exchanger::ExchangeError) -> Error {
    use mallard_exchanger::ExchangeError as E;
    let message = format!(
        "exchanger {name:?} at {what}: {}",
        guest_text(&e.to_string())
    );
    match e {
        E::InvalidParams(_) | E::InvalidInput(_) => Error::invalid_argument(message),
        E::Failed(_) => Error::aborted(message),
    }
}

/// Most bytes of a guest's own words (an error it returns) that reach a status or a
/// log line: a gRPC status travels in a header most clients cap at 16 KiB.
pub const MAX_GUEST_TEXT_BYTES: usize = 4_096;

/// A guest's text as a status or log may carry it: escaped (a guest cannot forge log
/// lines or header bytes) and cut at [`MAX_GUEST_TEXT_BYTES`], saying how much was cut.
pub fn guest_text(text: &str) -> String {
    let mut end = text.len().min(MAX_GUEST_TEXT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let kept: String = text[..end].escape_debug().collect();
    let kept = kept.replace("\\'", "'").replace("\\\"", "\"");
    if end < text.len() {
        format!("{kept}… ({} more bytes cut)", text.len() - end)
    } else {
        kept
    }
}

/// Sets a flag when dropped: tells a running guest its client is gone.
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_is_cut_at_its_bound_on_a_character_and_escaped() {
        assert_eq!(guest_text("it's \"bad\""), "it's \"bad\"");
        assert_eq!(guest_text("two\nlines"), "two\\nlines");
        let long = "é".repeat(MAX_GUEST_TEXT_BYTES);
        let cut = guest_text(&long);
        assert!(cut.len() < MAX_GUEST_TEXT_BYTES + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!("({} more bytes cut)", MAX_GUEST_TEXT_BYTES)));
        let error = exchanger_error(
            "x",
            "batch 0",
            mallard_exchanger::ExchangeError::Failed("y".repeat(100 << 20)),
        );
        assert!(error.to_string().len() < 2 * MAX_GUEST_TEXT_BYTES);
    }
}
