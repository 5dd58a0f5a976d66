//! Flight SQL requests as Mallard reads them before any work: the command a
//! descriptor, ticket or action body holds, and the parameter rows a client binds
//! to a prepared statement (decoded by the same bounded decoder as every other
//! Arrow input: rows in proportion to bytes, footprints in proportion to bytes,
//! buffers inside their body).

use crate::{ProtocolError, Result, invalid};
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_flight::sql::{Any, Command};
use bytes::Bytes;
use mallard_exchanger::ipc::{MessageDecoder, schema_from_header};
use prost::Message;
use std::sync::Arc;

/// The type URL prefix of every Flight SQL command.
pub const TYPE_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// The Flight SQL command in `bytes`; `None` when they hold none (the seeds'
/// protocol then reads them), an error when they claim one but break it.
pub fn decode_command(bytes: &[u8]) -> Option<Result<Command>> {
    let any = Any::decode(bytes).ok()?;
    if !any.type_url.starts_with(TYPE_PREFIX) {
        return None;
    }
    Some(Command::try_from(any).map_err(|e| invalid(format!("malformed Flight SQL command: {e}"))))
}

/// The batches of a parameter stream: a schema message, then record-batch and
/// dictionary messages (header, body); at most `max_rows` rows in all
/// ([`ProtocolError::TooLarge`] beyond).
pub fn decode_parameters(
    messages: impl IntoIterator<Item = (Bytes, Bytes)>,
    max_rows: usize,
    what: &str,
) -> Result<Vec<RecordBatch>> {
    let mut messages = messages.into_iter();
    let Some((schema_header, _)) = messages.next() else {
        return Ok(Vec::new());
    };
    let schema = schema_from_header(&schema_header).map_err(|e| invalid(format!("{what}: {e}")))?;
    let mut decoder = MessageDecoder::new(Arc::new(schema));
    let mut batches = Vec::new();
    let mut rows = 0usize;
    for (index, (header, body)) in messages.enumerate() {
        let decoded = decoder
            .decode(&header, Buffer::from(body))
            .map_err(|e| invalid(format!("{what} at message {}: {e}", index + 2)))?;
        if let Some(batch) = decoded {
            rows = rows.saturating_add(batch.num_rows());
            if rows > max_rows {
                return Err(ProtocolError::TooLarge(format!(
                    "{what}: more than {max_rows} rows; at most {max_rows} are accepted"
                )));
            }
            batches.push(batch);
        }
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
    use mallard_exchanger::ipc::MessageEncoder;

    #[test]
    fn commands_are_told_from_other_bytes() {
        let query = CommandStatementQuery {
            query: "SELECT 1".into(),
            transaction_id: None,
        };
        let bytes = query.as_any().encode_to_vec();
        assert!(matches!(
            decode_command(&bytes),
            Some(Ok(Command::CommandStatementQuery(_)))
        ));
        assert!(decode_command(b"SELECT 1").is_none());
        let forged = Any {
            type_url: format!("{TYPE_PREFIX}CommandStatementQuery"),
            value: vec![0xff, 0xff, 0xff].into(),
        };
        assert!(matches!(
            decode_command(&forged.encode_to_vec()),
            Some(Err(_))
        ));
    }

    fn parameter_stream(rows: usize, batches: usize) -> Vec<(Bytes, Bytes)> {
        let batch = RecordBatch::try_from_iter([(
            "$1",
            Arc::new(Int64Array::from_iter_values(0..rows as i64)) as arrow_array::ArrayRef,
        )])
        .unwrap();
        let mut encoder = MessageEncoder::new(batch.schema());
        let mut out = vec![(Bytes::from(encoder.schema_header()), Bytes::new())];
        for _ in 0..batches {
            let mut messages = Vec::new();
            encoder.encode(&batch, &mut messages).unwrap();
            out.extend(
                messages
                    .into_iter()
                    .map(|m| (Bytes::from(m.header), Bytes::from(m.body))),
            );
        }
        out
    }

    #[test]
    fn parameter_rows_are_capped_at_the_limit() {
        let at_limit = decode_parameters(parameter_stream(10, 3), 30, "parameters").unwrap();
        assert_eq!(
            at_limit.iter().map(RecordBatch::num_rows).sum::<usize>(),
            30
        );
        let over = decode_parameters(parameter_stream(10, 3), 29, "parameters").unwrap_err();
        assert!(matches!(over, ProtocolError::TooLarge(_)), "{over}");
        let mut broken = parameter_stream(10, 1);
        broken[1].1 = Bytes::from_static(&[1, 2, 3]);
        assert!(matches!(
            decode_parameters(broken, 100, "parameters"),
            Err(ProtocolError::Invalid(_))
        ));
    }
}
