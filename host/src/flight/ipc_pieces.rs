//! Result batches as Flight messages whose bodies are the batches' own Arrow
//! buffers, not a copy of them.
//!
//! arrow-ipc's [`StreamEncoder`] lays a batch out as IPC stream segments, its
//! uncompressed buffers passed through as they are (sliced arrays are trimmed
//! or rebased exactly as for any IPC writer). This module cuts that stream into
//! Flight messages: each message's flatbuffer header becomes the FlightData
//! header, the segments of its body the [`Outgoing`] body pieces. Schemas with
//! dictionaries keep arrow-flight's encoder, which hydrates them.

use crate::flight::outgoing::Outgoing;
use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::{FlightData, SchemaAsIpc};
use arrow_ipc::writer::{IpcWriteOptions, StreamEncoder};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use mallard_exchanger::ipc::has_dictionary;
use std::collections::VecDeque;
use tonic::Status;

/// Whether [`encode_stream`] can carry batches of `schema` (no dictionaries at
/// any depth).
pub fn supports(schema: &Schema) -> bool {
    !schema
        .fields()
        .iter()
        .any(|f| has_dictionary(f.data_type()))
}

/// The schema message, then each batch as messages of at most about
/// `max_body_bytes` of body (a larger batch goes as row slices).
pub fn encode_stream<S>(
    schema: SchemaRef,
    batches: S,
    max_body_bytes: usize,
) -> Result<impl Stream<Item = Result<Outgoing, Status>> + Send + 'static, Status>
where
    S: Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
{
    let mut encoder = BatchEncoder::new(&schema, max_body_bytes)?;
    let schema_message = Outgoing::from(FlightData::from(SchemaAsIpc::new(
        &schema,
        &IpcWriteOptions::default(),
    )));
    let messages = batches
        .map(move |batch| batch.and_then(|batch| encoder.encode(&batch)))
        .flat_map(|encoded| {
            let items: Vec<Result<Outgoing, Status>> = match encoded {
                Ok(messages) => messages.into_iter().map(Ok).collect(),
                Err(status) => vec![Err(status)],
            };
            futures::stream::iter(items)
        });
    Ok(futures::stream::once(async move { Ok(schema_message) }).chain(messages))
}

/// Encodes the batches of one stream (one schema, sent separately).
struct BatchEncoder {
    encoder: StreamEncoder,
    max_body_bytes: usize,
}

impl BatchEncoder {
    fn new(schema: &Schema, max_body_bytes: usize) -> Result<Self, Status> {
        let encoder = StreamEncoder::try_new(schema)
            .map_err(|e| Status::internal(format!("cannot encode results: {e}")))?;
        Ok(Self {
            encoder,
            max_body_bytes,
        })
    }

    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<Outgoing>, Status> {
        let mut messages = Vec::new();
        for part in row_slices(batch, self.max_body_bytes) {
            let segments = self
                .encoder
                .encode(&part)
                .map_err(|e| Status::internal(format!("cannot encode a result batch: {e}")))?;
            cut_messages(segments, &mut messages)?;
        }
        Ok(messages)
    }
}

/// `batch` as row slices of about `max_bytes` each (the whole batch when it fits).
fn row_slices(batch: &RecordBatch, max_bytes: usize) -> Vec<RecordBatch> {
    let bytes: usize = batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_buffer_memory_size())
        })
        .sum();
    let parts = bytes.div_ceil(max_bytes.max(1)).max(1);
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
/// FlightData header (schema messages dropped: the stream's schema was sent
/// first), its body as the segments that hold it.
fn cut_messages(segments: Vec<Buffer>, out: &mut Vec<Outgoing>) -> Result<(), Status> {
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
        let message = arrow_ipc::root_as_message(&header)
            .map_err(|e| broken(&format!("a header that does not parse: {e}")))?;
        let body_len =
            usize::try_from(message.bodyLength()).map_err(|_| broken("a negative body length"))?;
        let is_schema = message.header_type() == arrow_ipc::MessageHeader::Schema;
        let body = stream.take(body_len)?;
        if !is_schema {
            out.push(Outgoing {
                fields: FlightData {
                    data_header: header,
                    ..Default::default()
                },
                body,
            });
        }
    }
    Ok(())
}

fn broken(what: &str) -> Status {
    Status::internal(format!("the IPC encoder wrote {what}"))
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
    fn take(&mut self, mut n: usize) -> Result<Vec<Bytes>, Status> {
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
    fn take_joined(&mut self, n: usize) -> Result<Bytes, Status> {
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
    use arrow_flight::utils::flight_data_to_arrow_batch;
    use std::collections::HashMap;
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

    async fn encoded(batches: Vec<RecordBatch>, max: usize) -> Vec<Outgoing> {
        let schema = batches[0].schema();
        let stream = encode_stream(
            schema,
            futures::stream::iter(batches.into_iter().map(Ok)),
            max,
        )
        .unwrap();
        stream.map(Result::unwrap).collect().await
    }

    fn decoded(messages: Vec<Outgoing>) -> Vec<RecordBatch> {
        let mut messages = messages.into_iter().map(Outgoing::into_flight_data);
        let schema = Arc::new(Schema::try_from(&messages.next().unwrap()).unwrap());
        messages
            .map(|data| flight_data_to_arrow_batch(&data, schema.clone(), &HashMap::new()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn batches_decode_to_what_was_encoded_whole_sliced_and_empty() {
        let whole = sample(5000);
        let batches = vec![
            whole.clone(),
            whole.slice(1, 1000),
            whole.slice(1237, 3),
            whole.slice(4999, 1),
            whole.slice(10, 0),
        ];
        let messages = encoded(batches.clone(), 16 << 20).await;
        assert_eq!(messages.len(), 1 + batches.len());
        assert_eq!(decoded(messages), batches);
    }

    #[tokio::test]
    async fn the_body_is_the_batchs_own_buffers() {
        let values = Float64Array::from_iter_values((0..100_000).map(f64::from));
        let at = values.values().inner().as_ptr();
        let batch = RecordBatch::try_from_iter([("v", Arc::new(values) as ArrayRef)]).unwrap();
        let messages = encoded(vec![batch], 16 << 20).await;
        assert!(messages[1].body.iter().any(|piece| piece.as_ptr() == at));
    }

    #[tokio::test]
    async fn a_batch_over_the_message_limit_goes_as_row_slices() {
        let batch = sample(20_000);
        let max = 64 << 10;
        let messages = encoded(vec![batch.clone()], max).await;
        assert!(messages.len() > 3, "{} messages", messages.len());
        for message in &messages[1..] {
            let body: usize = message.body.iter().map(Bytes::len).sum();
            assert!(body <= 2 * max, "a body of {body} bytes");
        }
        let back = decoded(messages);
        let schema = back[0].schema();
        assert_eq!(
            arrow::compute::concat_batches(&schema, &back).unwrap(),
            batch
        );
    }

    #[test]
    fn dictionaries_at_any_depth_are_not_supported() {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let plain = Schema::new(vec![Field::new("a", DataType::Utf8, true)]);
        assert!(supports(&plain));
        assert!(!supports(&Schema::new(vec![Field::new(
            "d",
            dict.clone(),
            true
        )])));
        let nested = DataType::Struct(vec![Field::new("d", dict, true)].into());
        assert!(!supports(&Schema::new(vec![Field::new_list(
            "l",
            Field::new("s", nested, true),
            true
        )])));
    }
}
