//! `add_processed`: the seeds' exchanger. Appends a non-null boolean column
//! `processed`, true on every row, and passes everything else through untouched.

use arrow_array::BooleanArray;
use arrow_array::builder::BooleanBufferBuilder;
use mallard_exchanger::prelude::*;

/// Per-stream state: just the output schema.
pub struct AddProcessed {
    output: SchemaRef,
}

impl Exchanger for AddProcessed {
    const INFO: Info = Info {
        name: "add_processed",
        version: "1.0.0",
        description: "appends a boolean column `processed` = true to every batch",
    };

    fn open(input: SchemaRef, _params: &Params) -> Result<Self, ExchangeError> {
        if input.column_with_name("processed").is_some() {
            return Err(ExchangeError::InvalidInput(
                "input already has a `processed` column".into(),
            ));
        }
        let mut fields: Vec<_> = input.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("processed", DataType::Boolean, false)));
        let output = Schema::new(fields).with_metadata(input.metadata().clone());
        Ok(Self {
            output: Arc::new(output),
        })
    }

    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        let mut bits = BooleanBufferBuilder::new(batch.num_rows());
        bits.append_n(batch.num_rows(), true);
        let processed: ArrayRef = Arc::new(BooleanArray::new(bits.finish(), None));
        let mut columns = batch.columns().to_vec();
        columns.push(processed);
        Ok(vec![RecordBatch::try_new(self.output.clone(), columns)?])
    }

    fn stateless(&self) -> bool {
        true
    }

    /// No column's values are read: every input column is passed through whole,
    /// so none of them enters the sandbox.
    fn reads(&self) -> Option<Vec<usize>> {
        Some(Vec::new())
    }
}

export_exchanger!(AddProcessed);
