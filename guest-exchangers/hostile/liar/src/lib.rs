//! Hostile test guest: lies in what it hands the host, as the `lie` parameter says.
//!
//! - `shared-views`: a `Utf8View` batch whose 65,536 views all point at one 64 KiB
//!   string: 1 MiB of views referencing 4 GiB.
//! - `offset-past-body`: a record batch whose buffer lies at 2^40 of an 80-byte body.
//! - `negative-length`: a record batch whose column declares length -5.
//! - `huge-error`: refuses the batch with a 100 MiB error message.

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
            other => {
                return Err(ExchangeError::InvalidParams(format!(
                    "unknown lie {other:?}"
                )));
            }
        };
        let data_type = match lie {
            Lie::SharedViews => DataType::Utf8View,
            _ => DataType::Int64,
        };
        let schema = Arc::new(Schema::new(vec![Field::new("v", data_type, true)]));
        Ok(Self { lie, schema })
    }
    fn output_schema(&self) -> Vec<u8> {
        mallard_exchanger::ipc::schema_to_header(&self.schema)
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
        }
    }
    fn finish(&mut self) -> Result<Vec<Message>, ExchangeError> {
        Ok(Vec::new())
    }
}

export_raw_exchanger!(Liar);
