//! Hostile test guest: declares one output schema and emits well-formed IPC batches
//! of another (a single utf8 column).

use arrow_array::StringArray;
use mallard_exchanger::ipc::{MessageEncoder, schema_to_header};
use mallard_exchanger::prelude::*;

/// Declares `{ n: int64 }`, emits `{ s: utf8 }`.
pub struct SchemaDrift {
    encoder: MessageEncoder,
    drifted: SchemaRef,
}

impl RawExchanger for SchemaDrift {
    const INFO: Info = Info {
        name: "hostile_schema_drift",
        version: "0.1.0",
        description: "breaks its schema",
    };
    fn open(_: &[u8], _: &Params) -> Result<Self, ExchangeError> {
        let drifted = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        Ok(Self {
            encoder: MessageEncoder::new(drifted.clone()),
            drifted,
        })
    }
    fn output_schema(&self) -> Vec<u8> {
        schema_to_header(&Schema::new(vec![Field::new("n", DataType::Int64, false)]))
    }
    fn push(&mut self, _: Message) -> Result<Vec<Message>, ExchangeError> {
        let column: ArrayRef = Arc::new(StringArray::from(vec!["not", "an", "int64"]));
        let batch = RecordBatch::try_new(self.drifted.clone(), vec![column])?;
        let mut out = Vec::new();
        self.encoder.encode(&batch, &mut out)?;
        Ok(out)
    }
    fn finish(&mut self) -> Result<Vec<Message>, ExchangeError> {
        Ok(Vec::new())
    }
}

export_raw_exchanger!(SchemaDrift);
