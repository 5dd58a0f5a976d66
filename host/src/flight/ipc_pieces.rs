//! Query results as Flight messages whose bodies are the batches' own Arrow
//! buffers (see [`mallard_assemble::pieces`]): the schema message, then each
//! batch cut to the response's message size. Schemas with dictionaries keep
//! arrow-flight's encoder, which hydrates them.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::{FlightData, SchemaAsIpc};
use arrow_ipc::writer::IpcWriteOptions;
use futures::{Stream, StreamExt};
use mallard_assemble::pieces::PieceEncoder;
pub use mallard_assemble::pieces::supports;
use mallard_protocol::outgoing::Outgoing;
use tonic::Status;

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
    let mut encoder = PieceEncoder::new(&schema).map_err(Status::from)?;
    let schema_message = Outgoing::from(FlightData::from(SchemaAsIpc::new(
        &schema,
        &IpcWriteOptions::default(),
    )));
    let messages = batches
        .map(move |batch| {
            let mut out = Vec::new();
            batch.and_then(|batch| {
                encoder
                    .encode(&batch, max_body_bytes, &mut out)
                    .map_err(Status::from)?;
                Ok(out)
            })
        })
        .flat_map(|encoded| {
            let items: Vec<Result<Outgoing, Status>> = match encoded {
                Ok(messages) => messages.into_iter().map(Ok).collect(),
                Err(status) => vec![Err(status)],
            };
            futures::stream::iter(items)
        });
    Ok(futures::stream::once(async move { Ok(schema_message) }).chain(messages))
}

#[cfg(test)]
mod tests {
    //! The stream around the encoder (its cutting is tested beside it).

    use super::*;
    use arrow::array::{ArrayRef, Float64Array, StringArray};
    use arrow::datatypes::Schema;
    use arrow_flight::utils::flight_data_to_arrow_batch;
    use std::collections::HashMap;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_schema_comes_first_then_every_batch_and_an_error_ends_it() {
        let batch = RecordBatch::try_from_iter([
            (
                "v",
                Arc::new(Float64Array::from_iter_values((0..1000).map(f64::from))) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from_iter_values(
                    (0..1000).map(|i| i.to_string()),
                )),
            ),
        ])
        .unwrap();
        let batches = vec![
            Ok(batch.clone()),
            Ok(batch.slice(3, 10)),
            Err(Status::aborted("gone")),
        ];
        let stream =
            encode_stream(batch.schema(), futures::stream::iter(batches), 16 << 20).unwrap();
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items.len(), 4);
        let mut messages = items.into_iter();
        let schema = messages.next().unwrap().unwrap().into_flight_data();
        let schema = Arc::new(Schema::try_from(&schema).unwrap());
        assert_eq!(schema, batch.schema());
        for expected in [batch.clone(), batch.slice(3, 10)] {
            let data = messages.next().unwrap().unwrap().into_flight_data();
            let back = flight_data_to_arrow_batch(&data, schema.clone(), &HashMap::new()).unwrap();
            assert_eq!(back, expected);
        }
        assert_eq!(
            messages.next().unwrap().unwrap_err().code(),
            tonic::Code::Aborted
        );
    }
}
