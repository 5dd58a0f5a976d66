//! Hostile test guest: lies in what it hands the host, as the `lie` parameter says.
//!
//! - `shared-views`: a `Utf8View` batch whose 65,536 views all point at one 64 KiB
//!   string: 1 MiB of views referencing 4 GiB.
//! - `offset-past-body`: a record batch whose buffer lies at 2^40 of an 80-byte body.
//! - `negative-length`: a record batch whose column declares length -5.
//! - `huge-error`: refuses the batch with a 100 MiB error message.
//! - `one-row`: claims to be stateless and answers every batch with one row
//!   (what a scalar call must refuse: one value per row).
//!
//! Lies of contract 0.2 (about input columns it passes through, and `emit`):
//! - `input-index`: names input column 99.
//! - `input-type`: names input column 0 for a field of another type.
//! - `input-rows`: names input column 0 beside an emitted column of one row.
//! - `input-in-finish`: names an input column in `finish`, where there is none.
//! - `emit-flood`: emits 5,000 empty batches from one call.
//! - `emit-in-open`: calls `emit` from `open`.
//!
//! Lies of contract 0.2 about the input it reads on demand (each ignores the
//! host's refusal and returns as if all were well):
//! - `read-index`: reads input column 99.
//! - `read-twice`: reads input column 0 twice in one call.
//! - `read-in-finish`: reads an input column in `finish`, where there is none.
//! - `read-flood`: reads input column 0 again and again, forever.

use arrow_array::builder::StringViewBuilder;
use arrow_buffer::Buffer;
use mallard_exchanger::ipc::{MessageEncoder, forged_int64_batch_header};
use mallard_exchanger::prelude::*;

/// The lie this session tells.
#[derive(Clone, Copy)]
enum Lie {
    SharedViews,
    OffsetPastBody,
    NegativeLength,
    HugeError,
    InputIndex,
    InputType,
    InputRows,
    InputInFinish,
    EmitFlood,
    EmitInOpen,
    OneRow,
    ReadIndex,
    ReadTwice,
    ReadInFinish,
    ReadFlood,
}

/// Tells one lie per input batch.
pub struct Liar {
    lie: Lie,
    schema: SchemaRef,
}

fn failed(e: impl std::fmt::Display) -> ExchangeError {
    ExchangeError::Failed(e.to_string())
}

impl RawExchanger for Liar {
    const INFO: Info = Info {
        name: "hostile_liar",
        version: "0.1.0",
        description: "lies in its output (shared views, buffers past the body, huge errors)",
    };
    fn open(_input_schema: &[u8], params: &Params) -> Result<Self, ExchangeError> {
        let lie = match params.get("lie") {
            Some("shared-views") => Lie::SharedViews,
            Some("offset-past-body") => Lie::OffsetPastBody,
            Some("negative-length") => Lie::NegativeLength,
            Some("huge-error") => Lie::HugeError,
            Some("input-index") => Lie::InputIndex,
            Some("input-type") => Lie::InputType,
            Some("input-rows") => Lie::InputRows,
            Some("input-in-finish") => Lie::InputInFinish,
            Some("emit-flood") => Lie::EmitFlood,
            Some("emit-in-open") => Lie::EmitInOpen,
            Some("one-row") => Lie::OneRow,
            Some("read-index") => Lie::ReadIndex,
            Some("read-twice") => Lie::ReadTwice,
            Some("read-in-finish") => Lie::ReadInFinish,
            Some("read-flood") => Lie::ReadFlood,
            other => {
                return Err(ExchangeError::InvalidParams(format!(
                    "unknown lie {other:?}"
                )));
            }
        };
        let input = mallard_exchanger::ipc::schema_from_header(_input_schema).map_err(failed)?;
        let first = input
            .fields()
            .first()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Int64);
        let fields = match lie {
            Lie::SharedViews => vec![Field::new("v", DataType::Utf8View, true)],
            // A type input column 0 does not have.
            Lie::InputType => vec![Field::new("v", DataType::Decimal128(38, 7), true)],
            Lie::InputRows | Lie::InputInFinish => vec![
                Field::new("v", first, true),
                Field::new("w", DataType::Int64, true),
            ],
            _ => vec![Field::new("v", DataType::Int64, true)],
        };
        #[cfg(target_arch = "wasm32")]
        if matches!(lie, Lie::EmitInOpen) {
            let _ = mallard_exchanger::guest::bindings::mallard::exchanger::output::emit(&[], &[]);
        }
        let schema = Arc::new(Schema::new(fields));
        Ok(Self { lie, schema })
    }
    fn output_schema(&self) -> Vec<u8> {
        mallard_exchanger::ipc::schema_to_header(&self.schema)
    }
    fn stateless(&self) -> bool {
        matches!(self.lie, Lie::OneRow)
    }
    fn push(&mut self, _message: Message) -> Result<Vec<Message>, ExchangeError> {
        match self.lie {
            Lie::SharedViews => {
                let mut builder = StringViewBuilder::new();
                let block = builder.append_block(Buffer::from(vec![b'x'; 64 << 10]));
                for _ in 0..65_536 {
                    builder
                        .try_append_view(block, 0, 64 << 10)
                        .map_err(failed)?;
                }
                let batch =
                    RecordBatch::try_new(self.schema.clone(), vec![Arc::new(builder.finish())])
                        .map_err(failed)?;
                let mut out = Vec::new();
                MessageEncoder::new(self.schema.clone())
                    .encode(&batch, &mut out)
                    .map_err(failed)?;
                Ok(out)
            }
            Lie::OffsetPastBody => Ok(vec![Message {
                header: forged_int64_batch_header(1, 10, &[(0, 0), (1 << 40, 80)], 80),
                body: vec![0; 80],
            }]),
            Lie::NegativeLength => Ok(vec![Message {
                header: forged_int64_batch_header(1, -5, &[(0, 0), (0, 80)], 80),
                body: vec![0; 80],
            }]),
            Lie::HugeError => Err(ExchangeError::Failed("x".repeat(100 << 20))),
            Lie::OneRow => {
                let one = RecordBatch::try_new(
                    self.schema.clone(),
                    vec![Arc::new(arrow_array::Int64Array::from(vec![1]))],
                )
                .map_err(failed)?;
                let mut out = Vec::new();
                MessageEncoder::new(self.schema.clone())
                    .encode(&one, &mut out)
                    .map_err(failed)?;
                Ok(out)
            }
            _ => Ok(Vec::new()),
        }
    }
    fn finish(&mut self) -> Result<Vec<Message>, ExchangeError> {
        Ok(Vec::new())
    }
    fn push_emissions(&mut self, message: Message) -> Result<Vec<Emission>, ExchangeError> {
        use ColumnSource::{Emitted, Input};
        Ok(match self.lie {
            Lie::InputIndex => vec![Emission {
                columns: vec![Input(99)],
                messages: Vec::new(),
            }],
            Lie::InputType => vec![Emission {
                columns: vec![Input(0)],
                messages: Vec::new(),
            }],
            Lie::InputRows => {
                let part = Arc::new(Schema::new(vec![self.schema.field(1).clone()]));
                let one = RecordBatch::try_new(
                    part.clone(),
                    vec![Arc::new(arrow_array::Int64Array::from(vec![1]))],
                )
                .map_err(failed)?;
                let mut messages = Vec::new();
                MessageEncoder::new(part)
                    .encode(&one, &mut messages)
                    .map_err(failed)?;
                vec![Emission {
                    columns: vec![Input(0), Emitted],
                    messages,
                }]
            }
            Lie::EmitFlood => (0..5_000)
                .map(|_| Emission {
                    columns: vec![Emitted],
                    messages: Vec::new(),
                })
                .collect(),
            Lie::InputInFinish | Lie::EmitInOpen => Vec::new(),
            _ => Emission::all_emitted(self.push(message)?, self.schema.fields().len()),
        })
    }
    fn reads(&self) -> Option<Vec<u32>> {
        matches!(
            self.lie,
            Lie::ReadIndex | Lie::ReadTwice | Lie::ReadInFinish | Lie::ReadFlood
        )
        .then(Vec::new)
    }
    fn push_reading(
        &mut self,
        _header: &[u8],
        read: &mut dyn FnMut(&[u32]) -> Result<Message, ExchangeError>,
    ) -> Result<Vec<Emission>, ExchangeError> {
        match self.lie {
            Lie::ReadIndex => {
                let _ = read(&[99]);
            }
            Lie::ReadTwice => {
                let _ = read(&[0, 0]);
            }
            Lie::ReadFlood => loop {
                let _ = read(&[0]);
            },
            _ => {}
        }
        Ok(Vec::new())
    }
    fn finish_emissions(&mut self) -> Result<Vec<Emission>, ExchangeError> {
        #[cfg(target_arch = "wasm32")]
        if matches!(self.lie, Lie::ReadInFinish) {
            let _ =
                mallard_exchanger::guest::bindings::mallard::exchanger::input::read_columns(&[0]);
        }
        Ok(match self.lie {
            Lie::InputInFinish => vec![Emission {
                columns: vec![ColumnSource::Input(0), ColumnSource::Emitted],
                messages: Vec::new(),
            }],
            _ => Vec::new(),
        })
    }
}

export_raw_exchanger!(Liar);
