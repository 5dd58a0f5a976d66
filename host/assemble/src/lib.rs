//! Contract 0.2's output side: turns what a guest emitted into the messages a
//! client receives, trusting none of it.
//!
//! An emission whose columns are all `emitted` is validated message by message
//! against the declared output schema and forwarded untouched, as in 0.1. One
//! that names input columns (`input(k)`) carries only its other columns: they are
//! decoded (validated) against the schema of those fields, the named columns are
//! taken from the input batch the host decoded (validated) itself, every
//! reference's index, type, nullability and length is checked against the
//! declared schema, and the batch is encoded once, by the host, in pieces
//! ([`pieces`]): the input columns leave as the buffers they arrived in.

//!
//! It is a crate of its own, with neither DuckDB nor wasmtime, so that its
//! fuzz target (`fuzz/`) builds in minutes.

pub mod fuzzing;
pub mod pieces;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::{Schema, SchemaRef};
use bytes::Bytes;
use mallard_core::{Error, Result};
use mallard_exchanger::ipc::{Message, MessageDecoder};
use mallard_protocol::outgoing::Outgoing;
use pieces::PieceEncoder;
use std::collections::HashMap;
use std::sync::Arc;

/// Where one output column of an emission comes from (the WIT `column-source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnSource {
    /// Carried by the emission's own messages.
    Emitted,
    /// Column `k` of the current input batch, unchanged.
    Input(u32),
}

/// One emitted output batch, as the guest described it.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// Where each output column comes from.
    pub columns: Vec<ColumnSource>,
    /// Dictionary batches, then the record batch of the emitted columns.
    pub messages: Vec<Message>,
}

/// The current input batch, as the host decoded (validated) it.
#[derive(Debug, Clone)]
pub struct InputBatch {
    /// The batch; its columns are slices of the message body it came in.
    pub batch: RecordBatch,
    /// That body's length: what an output that references the batch keeps alive.
    pub body_bytes: usize,
}

/// Column layouts (which columns a guest emits, which it takes from input) one
/// session may use: real exchangers use one or two; each holds a decoder.
pub const MAX_LAYOUTS: usize = 16;

/// Assembles one session's emissions into output messages.
pub struct Assembler {
    name: String,
    output: SchemaRef,
    /// Whole-batch emissions, validated against the full output schema.
    full: MessageDecoder,
    /// One decoder per layout of emitted columns.
    layouts: HashMap<Vec<bool>, MessageDecoder>,
    /// Encodes assembled batches; none when the output schema has
    /// dictionaries (then input columns cannot be referenced).
    encoder: Option<PieceEncoder>,
}

impl Assembler {
    /// For exchanger `name`'s session declaring `output`.
    pub fn new(name: &str, output: SchemaRef) -> Self {
        Self {
            name: name.to_owned(),
            full: MessageDecoder::new(output.clone()),
            layouts: HashMap::new(),
            encoder: PieceEncoder::new(&output).ok(),
            output,
        }
    }

    fn refuse(&self, what: &str, why: impl std::fmt::Display) -> Error {
        Error::invalid_argument(format!(
            "exchanger {:?} emitted invalid output at {what}: {why}",
            self.name
        ))
    }

    /// The messages for `emitted`; `input` is the record batch of the current
    /// `push` (decoded and validated by the host), if there is one.
    ///
    /// Input columns leave as the input's own buffers, unless they are less
    /// than half of the input message: then the output is copied, so that an
    /// output message never keeps alive more than twice its own size (a queue
    /// that budgets output bytes would otherwise hold whole inputs for a few
    /// bytes of output each).
    pub fn assemble(
        &mut self,
        emitted: Emitted,
        input: &mut dyn FnMut() -> Result<Option<InputBatch>>,
        what: &str,
        out: &mut Vec<Outgoing>,
    ) -> Result<()> {
        let fields = self.output.fields().len();
        if emitted.columns.len() != fields {
            return Err(self.refuse(
                what,
                format!(
                    "{} column sources for an output schema of {fields} fields",
                    emitted.columns.len()
                ),
            ));
        }
        let layout: Vec<bool> = emitted
            .columns
            .iter()
            .map(|c| matches!(c, ColumnSource::Emitted))
            .collect();
        if layout.iter().all(|e| *e) {
            return self.forward(emitted.messages, what, out);
        }
        if self.encoder.is_none() {
            return Err(self.refuse(
                what,
                "input columns cannot be referenced when the output schema has dictionary \
                 columns; emit every column",
            ));
        }
        let InputBatch {
            batch: input,
            body_bytes,
        } = input()?.ok_or_else(|| {
            self.refuse(
                what,
                "input columns referenced outside push of a record batch",
            )
        })?;
        let computed = self.decode_layout(&layout, emitted.messages, what)?;
        let rows = input.num_rows();
        if let Some(batch) = &computed
            && batch.num_rows() != rows
        {
            return Err(self.refuse(
                what,
                format!(
                    "its emitted columns have {} rows but the input columns it references have {rows}",
                    batch.num_rows()
                ),
            ));
        }
        let mut emitted_columns = computed.iter().flat_map(|b| b.columns().iter().cloned());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields);
        let mut passed_bytes = 0;
        for (source, field) in emitted.columns.iter().zip(self.output.fields()) {
            let column = match source {
                ColumnSource::Emitted => emitted_columns
                    .next()
                    .ok_or_else(|| self.refuse(what, "fewer emitted columns than it declared"))?,
                ColumnSource::Input(k) => {
                    let column = input.columns().get(*k as usize).ok_or_else(|| {
                        self.refuse(
                            what,
                            format!(
                                "input column {k} does not exist (the batch has {})",
                                input.num_columns()
                            ),
                        )
                    })?;
                    if column.data_type() != field.data_type() {
                        return Err(self.refuse(
                            what,
                            format!(
                                "input column {k} is {} but output field {:?} is {}",
                                column.data_type(),
                                field.name(),
                                field.data_type()
                            ),
                        ));
                    }
                    if !field.is_nullable() && column.null_count() > 0 {
                        return Err(self.refuse(
                            what,
                            format!(
                                "input column {k} has nulls but output field {:?} is not nullable",
                                field.name()
                            ),
                        ));
                    }
                    passed_bytes += column.to_data().get_slice_memory_size().unwrap_or(0);
                    column.clone()
                }
            };
            columns.push(column);
        }
        let batch =
            RecordBatch::try_new(self.output.clone(), columns).map_err(|e| self.refuse(what, e))?;
        let encoder = self.encoder.as_mut().expect("checked above");
        let first = out.len();
        // One message per emission, whatever its size: as the guest emitted it.
        encoder.encode(&batch, usize::MAX, out)?;
        if passed_bytes.saturating_mul(2) < body_bytes {
            for message in &mut out[first..] {
                message.body = vec![Bytes::from(message.body.concat())];
                // The batch would keep the whole input alive too.
                message.batch = None;
            }
        }
        Ok(())
    }

    /// Validates whole-batch messages and forwards them as they came.
    fn forward(
        &mut self,
        messages: Vec<Message>,
        what: &str,
        out: &mut Vec<Outgoing>,
    ) -> Result<()> {
        for message in messages {
            let header = Bytes::from(message.header);
            let body = Bytes::from(message.body);
            let batch = self
                .full
                .decode(&header, Buffer::from(body.clone()))
                .map_err(|e| self.refuse(what, e))?;
            let message = Outgoing::data(header, vec![body]);
            out.push(match batch {
                Some(batch) => message.with_batch(batch),
                None => message,
            });
        }
        Ok(())
    }

    /// Decodes the emitted columns of `layout`: dictionaries, then exactly one
    /// record batch; none at all when no column is emitted.
    fn decode_layout(
        &mut self,
        layout: &[bool],
        messages: Vec<Message>,
        what: &str,
    ) -> Result<Option<RecordBatch>> {
        if !layout.contains(&true) {
            if !messages.is_empty() {
                return Err(self.refuse(what, "messages sent with no emitted column"));
            }
            return Ok(None);
        }
        if !self.layouts.contains_key(layout) {
            if self.layouts.len() >= MAX_LAYOUTS {
                return Err(self.refuse(
                    what,
                    format!("more than {MAX_LAYOUTS} different column layouts in one stream"),
                ));
            }
            let fields: Vec<_> = self
                .output
                .fields()
                .iter()
                .zip(layout)
                .filter(|(_, emitted)| **emitted)
                .map(|(f, _)| f.clone())
                .collect();
            let schema = Arc::new(Schema::new(fields));
            self.layouts
                .insert(layout.to_vec(), MessageDecoder::new(schema));
        }
        let name = self.name.clone();
        let refuse = |why: String| {
            Error::invalid_argument(format!(
                "exchanger {name:?} emitted invalid output at {what}: {why}"
            ))
        };
        let decoder = self.layouts.get_mut(layout).expect("inserted above");
        let count = messages.len();
        let mut batch = None;
        for (i, message) in messages.into_iter().enumerate() {
            let decoded = decoder
                .decode(&message.header, Buffer::from_vec(message.body))
                .map_err(|e| refuse(e.to_string()))?;
            match (decoded, i + 1 == count) {
                (Some(b), true) => batch = Some(b),
                (Some(_), false) => {
                    return Err(refuse("more than one record batch in one emit".into()));
                }
                (None, _) => {}
            }
        }
        batch
            .map(Some)
            .ok_or_else(|| refuse("no record batch for the emitted columns".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};
    use mallard_core::ErrorKind;
    use mallard_exchanger::ipc::{MessageDecoder, MessageEncoder};

    /// `batch` as the current input, as if it came in a message of its own size.
    fn held(batch: RecordBatch) -> InputBatch {
        InputBatch {
            body_bytes: pieces::batch_bytes(&batch),
            batch,
        }
    }

    fn input() -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            (
                "name",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    fn output() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("processed", DataType::Boolean, false),
        ]))
    }

    /// The messages of a batch of the emitted fields of `output()` (the last one).
    fn processed(rows: usize) -> Vec<Message> {
        let schema = Arc::new(Schema::new(vec![output().field(2).clone()]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(BooleanArray::from(vec![true; rows])) as ArrayRef],
        )
        .unwrap();
        let mut messages = Vec::new();
        MessageEncoder::new(schema)
            .encode(&batch, &mut messages)
            .unwrap();
        messages
    }

    fn run(
        columns: Vec<ColumnSource>,
        messages: Vec<Message>,
        input_batch: Option<RecordBatch>,
    ) -> Result<Vec<Outgoing>> {
        let mut assembler = Assembler::new("t", output());
        let mut out = Vec::new();
        let mut input = move || Ok(input_batch.clone().map(held));
        assembler.assemble(
            Emitted { columns, messages },
            &mut input,
            "batch 0",
            &mut out,
        )?;
        Ok(out)
    }

    fn decoded(out: Vec<Outgoing>) -> RecordBatch {
        decoded_as(output(), out)
    }

    fn decoded_as(schema: SchemaRef, out: Vec<Outgoing>) -> RecordBatch {
        let mut decoder = MessageDecoder::new(schema);
        let mut batch = None;
        for m in out {
            let data = m.into_flight_data();
            batch = decoder
                .decode(&data.data_header, Buffer::from(data.data_body))
                .unwrap()
                .or(batch);
        }
        batch.unwrap()
    }

    use ColumnSource::{Emitted as E, Input as I};

    #[test]
    fn input_columns_and_emitted_ones_make_one_checked_batch() {
        let out = run(vec![I(0), I(1), E], processed(3), Some(input())).unwrap();
        let batch = decoded(out);
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.column(1).as_ref(), input().column(1).as_ref());
        // Reordering and repeating input columns is fine when the types agree.
        let swapped = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let mut assembler = Assembler::new("t", swapped);
        let mut out = Vec::new();
        let mut source = || Ok(Some(held(input())));
        let emitted = Emitted {
            columns: vec![I(1), I(1)],
            messages: vec![],
        };
        assembler
            .assemble(emitted, &mut source, "b", &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
    }

    /// An input of a 100,000-row id column and a name column of `name_bytes` per row.
    fn wide_input(name_bytes: usize) -> RecordBatch {
        let rows = 100_000;
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..rows as i64)) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|_| "n".repeat(name_bytes)),
                )),
            ),
        ])
        .unwrap()
    }

    /// Assembles `columns` of `input` plus an emitted `processed` column.
    fn pass_through(input: &RecordBatch, columns: Vec<ColumnSource>) -> Vec<Outgoing> {
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| match c {
                I(k) => input.schema().field(*k as usize).clone(),
                E => output().field(2).clone(),
            })
            .collect();
        let mut assembler = Assembler::new("t", Arc::new(Schema::new(fields)));
        let mut out = Vec::new();
        let rows = input.num_rows();
        let mut source = || Ok(Some(held(input.clone())));
        assembler
            .assemble(
                Emitted {
                    columns,
                    messages: processed(rows),
                },
                &mut source,
                "b",
                &mut out,
            )
            .unwrap();
        out
    }

    /// Whether any body piece of `out` lies inside `column`'s value buffer.
    fn points_into(out: &[Outgoing], column: &ArrayRef) -> bool {
        let data = column.to_data();
        let values = data.buffers().last().unwrap();
        let range = values.as_ptr() as usize..values.as_ptr() as usize + values.len();
        out.iter()
            .flat_map(|m| &m.body)
            .any(|piece| range.contains(&(piece.as_ptr() as usize)))
    }

    #[test]
    fn input_columns_leave_as_the_inputs_own_buffers() {
        let input = wide_input(8);
        let out = pass_through(&input, vec![I(0), I(1), E]);
        assert!(points_into(&out, input.column(0)));
        assert!(points_into(&out, input.column(1)));
        let carried = out[0]
            .batch
            .clone()
            .expect("an assembled message carries its batch");
        let batch = decoded_as(out_schema(&input), out);
        assert_eq!(batch.column(1).as_ref(), input.column(1).as_ref());
        // What a consumer inside the server takes instead of decoding: the same
        // batch, its input columns the input's own arrays.
        assert_eq!(carried, batch);
        assert!(Arc::ptr_eq(carried.column(1), input.column(1)));
    }

    fn out_schema(input: &RecordBatch) -> SchemaRef {
        Arc::new(Schema::new(vec![
            input.schema().field(0).clone(),
            input.schema().field(1).clone(),
            output().field(2).clone(),
        ]))
    }

    #[test]
    fn a_small_share_of_a_large_input_is_copied_not_held() {
        // The ids are 800 kB of an input of about 10 MB: an output holding the
        // input for them would keep 12 times its own size alive.
        let input = wide_input(100);
        let out = pass_through(&input, vec![I(0), E]);
        assert!(!points_into(&out, input.column(0)));
        assert!(!points_into(&out, input.column(1)));
        assert!(out.iter().all(|m| m.body.len() == 1));
        assert!(
            out.iter().all(|m| m.batch.is_none()),
            "a carried batch would hold the input alive"
        );
        let body: usize = out.iter().map(Outgoing::body_len).sum();
        assert!(body < 1 << 20, "{body} bytes");
        let schema = Arc::new(Schema::new(vec![
            input.schema().field(0).clone(),
            output().field(2).clone(),
        ]));
        let batch = decoded_as(schema, out);
        assert_eq!(batch.column(0).as_ref(), input.column(0).as_ref());
    }

    #[test]
    fn every_lie_about_input_columns_is_refused() {
        let refused = |columns, messages, input| {
            let e = run(columns, messages, input).expect_err("refused");
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
            e.to_string()
        };
        assert!(
            refused(vec![I(0), I(7), E], processed(3), Some(input())).contains("does not exist")
        );
        assert!(refused(vec![I(1), I(0), E], processed(3), Some(input())).contains("is Utf8"));
        assert!(refused(vec![I(0), I(1), E], processed(2), Some(input())).contains("rows"));
        assert!(refused(vec![I(0), I(1), E], processed(3), None).contains("outside push"));
        assert!(refused(vec![I(0), E], processed(3), Some(input())).contains("column sources"));
        assert!(refused(vec![I(0), I(1), E], vec![], Some(input())).contains("no record batch"));
        let mut twice = processed(3);
        twice.extend(processed(3));
        assert!(refused(vec![I(0), I(1), E], twice, Some(input())).contains("more than one"));
        assert!(
            refused(vec![I(0), I(1), I(0)], vec![], Some(input())).contains("is Int64"),
            "a non-nullable field taken from a column of another type"
        );
    }

    #[test]
    fn whole_emissions_are_validated_and_forwarded_untouched() {
        let full = RecordBatch::try_new(
            output(),
            vec![
                input().column(0).clone(),
                input().column(1).clone(),
                Arc::new(BooleanArray::from(vec![true; 3])) as ArrayRef,
            ],
        )
        .unwrap();
        let mut messages = Vec::new();
        MessageEncoder::new(output())
            .encode(&full, &mut messages)
            .unwrap();
        let body = messages[0].body.clone();
        let out = run(vec![E, E, E], messages, None).unwrap();
        assert_eq!(out[0].body.concat(), body);
        assert_eq!(
            out[0].batch.as_ref(),
            Some(&full),
            "the batch its validation decoded"
        );
        let garbage = vec![Message {
            header: vec![1, 2, 3],
            body: vec![],
        }];
        assert!(run(vec![E, E, E], garbage, None).is_err());
    }

    #[test]
    fn layouts_are_bounded_per_stream() {
        let wide = Arc::new(Schema::new(
            (0..6)
                .map(|i| Field::new(format!("c{i}"), DataType::Int64, true))
                .collect::<Vec<_>>(),
        ));
        let mut assembler = Assembler::new("t", wide.clone());
        let one = RecordBatch::try_from_iter([(
            "id",
            Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
        )])
        .unwrap();
        let mut used = 0;
        for mask in 0u32..64 {
            let columns: Vec<_> = (0..6)
                .map(|i| if mask & (1 << i) != 0 { E } else { I(0) })
                .collect();
            let emitted_fields: Vec<_> = (0..6)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| wide.field(i).clone())
                .collect();
            if emitted_fields.is_empty() || emitted_fields.len() == 6 {
                continue;
            }
            let schema = Arc::new(Schema::new(emitted_fields));
            let cols = schema
                .fields()
                .iter()
                .map(|_| one.column(0).clone())
                .collect();
            let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
            let mut messages = Vec::new();
            MessageEncoder::new(schema)
                .encode(&batch, &mut messages)
                .unwrap();
            let mut source = || Ok(Some(held(one.clone())));
            let result = assembler.assemble(
                Emitted { columns, messages },
                &mut source,
                "b",
                &mut Vec::new(),
            );
            if used < MAX_LAYOUTS {
                result.unwrap();
                used += 1;
            } else {
                assert!(result.unwrap_err().to_string().contains("layouts"));
                return;
            }
        }
        panic!("the layout limit was never reached");
    }
}
