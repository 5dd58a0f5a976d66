//! Hostile test guest: every batch grows its output dictionary by 1 MiB and sends
//! the growth as an IPC dictionary delta, so a host that kept concatenating
//! deltas would copy an ever larger dictionary per batch.

use arrow_array::types::Int32Type;
use arrow_array::{DictionaryArray, Int32Array, StringArray};
use arrow_ipc::writer::{
    DictionaryHandling, DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
};
use mallard_exchanger::prelude::*;

/// New dictionary values per batch: 1,024 distinct strings of 1 KiB.
const VALUES_PER_BATCH: usize = 1024;
const VALUE_BYTES: usize = 1024;

/// Emits a one-row batch per input message, its dictionary grown by 1 MiB.
pub struct DeltaFlood {
    schema: SchemaRef,
    values: Vec<String>,
    generator: IpcDataGenerator,
    tracker: DictionaryTracker,
    context: IpcWriteContext,
    options: IpcWriteOptions,
    schema_header: Vec<u8>,
}

fn failed(e: impl std::fmt::Display) -> ExchangeError {
    ExchangeError::Failed(e.to_string())
}

impl RawExchanger for DeltaFlood {
    const INFO: Info = Info {
        name: "hostile_delta_flood",
        version: "0.1.0",
        description: "grows its output dictionary by 1 MiB of deltas per batch",
    };
    fn open(_input_schema: &[u8], _: &Params) -> Result<Self, ExchangeError> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "tag",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        )]));
        let generator = IpcDataGenerator::default();
        let options =
            IpcWriteOptions::default().with_dictionary_handling(DictionaryHandling::Delta);
        let mut tracker = DictionaryTracker::new(false);
        let schema_header = generator
            .schema_to_bytes_with_dictionary_tracker(&schema, &mut tracker, &options)
            .ipc_message;
        Ok(Self {
            schema,
            values: Vec::new(),
            generator,
            tracker,
            context: IpcWriteContext::default(),
            options,
            schema_header,
        })
    }
    fn output_schema(&self) -> Vec<u8> {
        self.schema_header.clone()
    }
    fn push(&mut self, message: Message) -> Result<Vec<Message>, ExchangeError> {
        if message.body.is_empty() && message.header.is_empty() {
            return Ok(Vec::new());
        }
        let start = self.values.len();
        self.values.extend(
            (start..start + VALUES_PER_BATCH).map(|i| format!("{i:0>width$}", width = VALUE_BYTES)),
        );
        let values = StringArray::from_iter_values(self.values.iter());
        let keys = Int32Array::from(vec![start as i32]);
        let column =
            DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).map_err(failed)?;
        let batch =
            RecordBatch::try_new(self.schema.clone(), vec![Arc::new(column)]).map_err(failed)?;
        let (dictionaries, data) = self
            .generator
            .encode(&batch, &mut self.tracker, &self.options, &mut self.context)
            .map_err(failed)?;
        Ok(dictionaries
            .into_iter()
            .chain(std::iter::once(data))
            .map(|d| Message {
                header: d.ipc_message,
                body: d.arrow_data,
            })
            .collect())
    }
    fn finish(&mut self) -> Result<Vec<Message>, ExchangeError> {
        Ok(Vec::new())
    }
}

export_raw_exchanger!(DeltaFlood);
