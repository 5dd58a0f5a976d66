//! Record batches as Flight messages whose bodies are the batches' own Arrow
//! buffers, not a copy of them.
//!
//! arrow-ipc's [`StreamEncoder`] lays a batch out as IPC stream segments, its
//! uncompressed buffers passed through as they are (sliced arrays are trimmed
//! or rebased exactly as for any IPC writer). [`PieceEncoder`] cuts that stream
//! into messages: each message's flatbuffer header becomes the Flight header,
//! the segments of its body the [`Outgoing`] body pieces. Query results and an
//! exchange's output that passes input columns through both leave this way.

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::Schema;
use arrow::ipc::writer::StreamEncoder;
use bytes::Bytes;
use mallard_core::{Error, Result};
use mallard_exchanger::ipc::has_dictionary;
use mallard_protocol::outgoing::Outgoing;
use std::collections::VecDeque;

/// Whether a [`PieceEncoder`] can carry batches of `schema` (no dictionaries at
/// any depth: dictionary messages are left to encoders that track them).
pub fn supports(schema: &Schema) -> bool {
    !schema
        .fields()
        .iter()
        .any(|f| has_dictionary(f.data_type()))
}

/// Encodes the record batches of one stream (one schema, sent separately).
pub struct PieceEncoder {
    encoder: StreamEncoder,
}

impl PieceEncoder {
    /// An encoder for batches of `schema`; refused for a schema it does not [`supports`].
    pub fn new(schema: &Schema) -> Result<Self> {
        if !supports(schema) {
            return Err(Error::internal(
                "a schema with dictionaries cannot be encoded in pieces",
            ));
        }
        let encoder = StreamEncoder::try_new(schema)
            .map_err(|e| Error::internal(format!("cannot encode batches: {e}")))?;
        Ok(Self { encoder })
    }

    /// Appends `batch` to `out` as messages of at most about `max_body_bytes`
    /// of body each (a larger batch goes as row slices), each record batch
    /// message carrying the slice it encodes when that lies in its pieces.
    pub fn encode(
        &mut self,
        batch: &RecordBatch,
        max_body_bytes: usize,
        out: &mut Vec<Outgoing>,
    ) -> Result<()> {
        for part in row_slices(batch, max_body_bytes) {
            let segments = self
                .encoder
                .encode(&part)
                .map_err(|e| Error::internal(format!("cannot encode a batch: {e}")))?;
            let first = out.len();
            cut_messages(segments, out)?;
            if let Some(message) = out[first..].last_mut() {
                *message = std::mem::take(message).with_batch(part);
            }
        }
        Ok(())
    }
}

/// Bytes of Arrow buffers `batch` spans (its slices' share, not whole allocations).
pub fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_buffer_memory_size())
        })
        .sum()
}

/// `batch` as row slices of about `max_bytes` each (the whole batch when it fits).
fn row_slices(batch: &RecordBatch, max_bytes: usize) -> Vec<RecordBatch> {
    let parts = batch_bytes(batch).div_ceil(max_bytes.max(1)).max(1);
    let rows = batch.num_rows();
    if parts == 1 || rows <= 1 {
        return vec![batch.clone()];
    }
    let per_part = rows.div_ceil(parts);
    (0..rows)
        .step_by(per_part)
        .map(|offset| batch.slice(offset, per_part.min(rows - offset)))
        .collect()
}

/// The messages of an IPC stream given as segments: each message's header as a
/// Flight header (schema messages dropped: the stream's schema is sent on its
/// own), its body as the segments that hold it.
fn cut_messages(segments: Vec<Buffer>, out: &mut Vec<Outgoing>) -> Result<()> {
    let mut stream = Segments::new(segments);
    while !stream.is_empty() {
        let prefix = stream.take_joined(8)?;
        if prefix[..4] != [0xff; 4] {
            return Err(broken("a message without its continuation marker"));
        }
        let header_len = i32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        let header_len = usize::try_from(header_len).map_err(|_| broken("a negative length"))?;
        if header_len == 0 {
            continue; // end of stream
        }
        let header = stream.take_joined(header_len)?;
        let message = arrow::ipc::root_as_message(&header)
            .map_err(|e| broken(&format!("a header that does not parse: {e}")))?;
        let body_len =
            usize::try_from(message.bodyLength()).map_err(|_| broken("a negative body length"))?;
        let is_schema = message.header_type() == arrow::ipc::MessageHeader::Schema;
        let body = stream.take(body_len)?;
        if !is_schema {
            out.push(Outgoing::data(header, body));
        }
    }
    Ok(())
}

fn broken(what: &str) -> Error {
    Error::internal(format!("the IPC encoder wrote {what}"))
}

/// IPC stream bytes held as the segments the encoder wrote.
struct Segments {
    queue: VecDeque<Bytes>,
}

impl Segments {
    fn new(segments: Vec<Buffer>) -> Self {
        Self {
            queue: segments
                .into_iter()
                .filter(|s| !s.is_empty())
                .map(Bytes::from)
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next `n` bytes as the (sliced, not copied) segments that hold them.
    fn take(&mut self, mut n: usize) -> Result<Vec<Bytes>> {
        let mut pieces = Vec::new();
        while n > 0 {
            let front = self
                .queue
                .front_mut()
                .ok_or_else(|| broken("a message longer than its stream"))?;
            if front.len() <= n {
                n -= front.len();
                pieces.extend(self.queue.pop_front());
            } else {
                pieces.push(front.split_to(n));
                n = 0;
            }
        }
        Ok(pieces)
    }

    /// The next `n` bytes in one piece (copied only when they span segments).
    fn take_joined(&mut self, n: usize) -> Result<Bytes> {
        let pieces = self.take(n)?;
        Ok(match <[Bytes; 1]>::try_from(pieces) {
            Ok([one]) => one,
            Err(pieces) => pieces.concat().into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray, StringArray,
        StructArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Int32Type};
    use mallard_exchanger::ipc::MessageDecoder;
    use std::sync::Arc;

    fn sample(rows: usize) -> RecordBatch {
        let ints: ArrayRef = Arc::new(Int64Array::from_iter(
            (0..rows as i64).map(|i| (i % 7 != 0).then_some(i * 3)),
        ));
        let floats: ArrayRef = Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|i| i as f64 / 3.0),
        ));
        let text: ArrayRef =
            Arc::new(StringArray::from_iter((0..rows).map(|i| {
                (i % 5 != 0).then(|| format!("row {i} {}", "x".repeat(i % 13)))
            })));
        let flags: ArrayRef = Arc::new(BooleanArray::from_iter(
            (0..rows).map(|i| (i % 3 != 0).then_some(i % 2 == 0)),
        ));
        let times: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from_iter_values((0..rows as i64).map(|i| i * 1_000_000))
                .with_timezone("UTC"),
        );
        let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
            (0..rows).map(|i| (i % 4 != 0).then(|| (0..i % 3).map(|v| Some(v as i32)))),
        ));
        let nested: ArrayRef = Arc::new(StructArray::from(vec![
            (
                Arc::new(Field::new("a", DataType::Int32, true)),
                Arc::new(Int32Array::from_iter((0..rows as i32).map(Some))) as ArrayRef,
            ),
            (
                Arc::new(Field::new("b", DataType::Utf8, true)),
                text.clone(),
            ),
        ]));
        RecordBatch::try_from_iter([
            ("ints", ints),
            ("floats", floats),
            ("text", text),
            ("flags", flags),
            ("times", times),
            ("lists", lists),
            ("nested", nested),
        ])
        .unwrap()
    }

    fn encoded(batches: &[RecordBatch], max: usize) -> Vec<Outgoing> {
        let mut encoder = PieceEncoder::new(&batches[0].schema()).unwrap();
        let mut out = Vec::new();
        for batch in batches {
            encoder.encode(batch, max, &mut out).unwrap();
        }
        out
    }

    /// Decodes with Arrow's full validation.
    fn decoded(schema: arrow::datatypes::SchemaRef, messages: Vec<Outgoing>) -> Vec<RecordBatch> {
        let mut decoder = MessageDecoder::new(schema);
        messages
            .into_iter()
            .map(|m| {
                let data = m.into_flight_data();
                decoder
                    .decode(&data.data_header, Buffer::from(data.data_body))
                    .unwrap()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn batches_decode_to_what_was_encoded_whole_sliced_and_empty() {
        let whole = sample(5000);
        let batches = vec![
            whole.clone(),
            whole.slice(1, 1000),
            whole.slice(1237, 3),
            whole.slice(4999, 1),
            whole.slice(10, 0),
        ];
        let messages = encoded(&batches, 16 << 20);
        assert_eq!(messages.len(), batches.len());
        assert_eq!(decoded(whole.schema(), messages), batches);
    }

    #[test]
    fn the_body_is_the_batchs_own_buffers() {
        let values = Float64Array::from_iter_values((0..100_000).map(f64::from));
        let at = values.values().inner().as_ptr();
        let batch = RecordBatch::try_from_iter([("v", Arc::new(values) as ArrayRef)]).unwrap();
        let messages = encoded(&[batch], 16 << 20);
        assert!(messages[0].body.iter().any(|piece| piece.as_ptr() == at));
    }

    #[test]
    fn a_batch_over_the_message_limit_goes_as_row_slices() {
        let batch = sample(20_000);
        let max = 64 << 10;
        let messages = encoded(std::slice::from_ref(&batch), max);
        assert!(messages.len() > 3, "{} messages", messages.len());
        for message in &messages {
            assert!(
                message.body_len() <= 2 * max,
                "{} bytes",
                message.body_len()
            );
        }
        let back = decoded(batch.schema(), messages);
        assert_eq!(
            arrow::compute::concat_batches(&batch.schema(), &back).unwrap(),
            batch
        );
    }

    #[test]
    fn dictionaries_at_any_depth_are_not_supported() {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let plain = Schema::new(vec![Field::new("a", DataType::Utf8, true)]);
        assert!(supports(&plain));
        let flat = Schema::new(vec![Field::new("d", dict.clone(), true)]);
        assert!(!supports(&flat));
        assert!(PieceEncoder::new(&flat).is_err());
        let nested = DataType::Struct(vec![Field::new("d", dict, true)].into());
        assert!(!supports(&Schema::new(vec![Field::new_list(
            "l",
            Field::new("s", nested, true),
            true
        )])));
    }
}
