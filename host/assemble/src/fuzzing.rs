//! One entry point over the assembler, shared by the fuzz target (`fuzz/`) and
//! the test that replays its corpus: arbitrary bytes become a sequence of
//! emissions (column sources and IPC messages) against a fixed input batch and
//! one of a few output schemas. Besides "never panics", whatever the assembler
//! accepts must decode, with full validation, as a batch of the output schema.
//!
//! Input layout: byte 0 picks the output schema, byte 1 the input's rows; then
//! emissions, each `[n_sources] [source…] [n_messages] ([u16 header len]
//! [header] [u32 body len] [body])…`, lengths little-endian and cut to what is left.
//! The rows byte's high bit makes the input's message four times its size.

use crate::{Assembler, ColumnSource, Emitted, InputBatch, pieces};
use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use mallard_exchanger::ipc::{Message, MessageDecoder, MessageEncoder};
use mallard_protocol::outgoing::Outgoing;
use std::sync::Arc;

/// Emissions one input may make (a guest's call may make up to 4,096; a few
/// suffice to reach every layout and refusal).
const MAX_EMISSIONS: usize = 64;

/// The output schemas the first byte picks from.
fn output_schema(selector: u8) -> SchemaRef {
    let fields = match selector % 4 {
        0 => vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("processed", DataType::Boolean, false),
        ],
        1 => vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, false),
        ],
        2 => vec![Field::new(
            "d",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        )],
        _ => vec![
            Field::new("x", DataType::Int64, false),
            Field::new("flag", DataType::Boolean, true),
            Field::new("id", DataType::Int64, true),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// The input batch every reference resolves against: `rows` rows of an id, a
/// name with nulls and a flag.
fn input_batch(rows: usize) -> RecordBatch {
    let ids: Vec<i64> = (0..rows as i64).collect();
    let names: Vec<Option<String>> = (0..rows)
        .map(|i| (i % 3 != 0).then(|| format!("n{i}")))
        .collect();
    let flags: Vec<bool> = (0..rows).map(|i| i % 2 == 0).collect();
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("name", Arc::new(StringArray::from(names)) as ArrayRef),
        ("flag", Arc::new(BooleanArray::from(flags)) as ArrayRef),
    ])
    .expect("static input")
}

/// Reads arbitrary bytes in the layout the module docs describe.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }

    fn length(&mut self, width: usize) -> usize {
        self.bytes(width)
            .iter()
            .rev()
            .fold(0usize, |n, b| (n << 8) | *b as usize)
    }

    fn emission(&mut self) -> Option<Emitted> {
        let sources = self.byte()? % 8;
        let columns = (0..sources)
            .map(|_| match self.byte().unwrap_or(0) {
                b if b % 4 == 0 => ColumnSource::Emitted,
                b => ColumnSource::Input(u32::from(b / 4)),
            })
            .collect();
        let count = self.byte().unwrap_or(0) % 4;
        let messages = (0..count)
            .map(|_| {
                let header = self.length(2);
                let header = self.bytes(header);
                let body = self.length(4);
                Message {
                    header,
                    body: self.bytes(body),
                }
            })
            .collect();
        Some(Emitted { columns, messages })
    }
}

/// Runs the emissions `data` describes through one assembler; panics only on
/// a bug (an accepted emission that is not a valid batch of the output).
pub fn exercise_emissions(data: &[u8]) {
    let mut reader = Reader(data);
    let (Some(schema), Some(rows)) = (reader.byte(), reader.byte()) else {
        return;
    };
    let output = output_schema(schema);
    let input = input_batch(usize::from(rows % 9));
    // The high bit says the input came in a message four times its size, so
    // that the output copies what it takes rather than holding the input.
    let held = InputBatch {
        body_bytes: pieces::batch_bytes(&input) * if rows & 0x80 != 0 { 4 } else { 1 },
        batch: input.clone(),
    };
    let mut assembler = Assembler::new("fuzz", output.clone());
    let mut checker = MessageDecoder::new(output.clone());
    for i in 0..MAX_EMISSIONS {
        let Some(emitted) = reader.emission() else {
            return;
        };
        let references_input = emitted
            .columns
            .iter()
            .any(|c| matches!(c, ColumnSource::Input(_)));
        let mut source = || Ok(Some(held.clone()));
        let mut out = Vec::new();
        if assembler
            .assemble(emitted, &mut source, &format!("batch {i}"), &mut out)
            .is_err()
        {
            continue;
        }
        check(
            &mut checker,
            &output,
            &out,
            references_input.then(|| input.num_rows()),
        );
    }
}

/// What was accepted decodes, fully validated, as batches of `output` (with
/// the input's rows when it referenced the input).
fn check(checker: &mut MessageDecoder, output: &Schema, out: &[Outgoing], rows: Option<usize>) {
    for message in out {
        let data = message.clone().into_flight_data();
        let decoded = checker
            .decode(&data.data_header, Buffer::from(data.data_body))
            .expect("accepted output decodes with full validation");
        if let Some(batch) = decoded {
            assert_eq!(batch.schema().fields(), output.fields());
            if let Some(rows) = rows {
                assert_eq!(batch.num_rows(), rows);
            }
        }
    }
}

/// Well-formed starting points: for each output schema, an emission of every
/// column, one that takes input columns, and one that mixes both.
pub fn seed_inputs() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for selector in 0..4u8 {
        let output = output_schema(selector);
        let rows = 5u8;
        let input = input_batch(usize::from(rows));
        let whole = batch_for(&output, &input);
        // Every column emitted.
        let all = vec![ColumnSource::Emitted; output.fields().len()];
        seeds.push(seed(selector, rows, &all, &whole));
        // Input columns where the types allow, the rest emitted.
        let mixed: Vec<ColumnSource> = output
            .fields()
            .iter()
            .map(|f| {
                (0..input.num_columns())
                    .find(|&k| {
                        let column = input.column(k);
                        column.data_type() == f.data_type()
                            && (f.is_nullable() || column.null_count() == 0)
                    })
                    .map_or(ColumnSource::Emitted, |k| ColumnSource::Input(k as u32))
            })
            .collect();
        seeds.push(seed(selector, rows, &mixed, &whole));
    }
    seeds
}

/// A batch of `output` with `input`'s rows (values derived from the input).
fn batch_for(output: &SchemaRef, input: &RecordBatch) -> RecordBatch {
    let rows = input.num_rows();
    let columns = output
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.data_type() {
                DataType::Int64 => Arc::new(Int64Array::from_iter_values(0..rows as i64)),
                DataType::Boolean => Arc::new(BooleanArray::from(vec![true; rows])),
                DataType::Utf8 => Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("v{i}")),
                )),
                other => arrow::array::new_null_array(other, rows),
            }
        })
        .collect();
    RecordBatch::try_new(output.clone(), columns).expect("seed batch")
}

/// The bytes of one emission of `whole`'s emitted columns under `columns`.
fn seed(selector: u8, rows: u8, columns: &[ColumnSource], whole: &RecordBatch) -> Vec<u8> {
    let emitted: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, ColumnSource::Emitted))
        .map(|(i, _)| i)
        .collect();
    let mut messages = Vec::new();
    if !emitted.is_empty() {
        let part = whole.project(&emitted).expect("seed projection");
        MessageEncoder::new(part.schema())
            .encode(&part, &mut messages)
            .expect("seed encoding");
    }
    let mut bytes = vec![selector, rows, columns.len() as u8];
    for c in columns {
        bytes.push(match c {
            ColumnSource::Emitted => 0,
            ColumnSource::Input(k) => (*k as u8) * 4 + 1,
        });
    }
    bytes.push(messages.len() as u8);
    for m in &messages {
        bytes.extend_from_slice(&(m.header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&m.header);
        bytes.extend_from_slice(&(m.body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&m.body);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_are_accepted_emissions() {
        // Each seed must reach the assembler's success path, or the fuzzer
        // would start from refusals only.
        for (i, seed) in seed_inputs().iter().enumerate() {
            let mut reader = Reader(seed);
            let (schema, rows) = (reader.byte().unwrap(), reader.byte().unwrap());
            let output = output_schema(schema);
            let input = input_batch(usize::from(rows % 9));
            // The high bit says the input came in a message four times its size, so
            // that the output copies what it takes rather than holding the input.
            let held = InputBatch {
                body_bytes: pieces::batch_bytes(&input) * if rows & 0x80 != 0 { 4 } else { 1 },
                batch: input.clone(),
            };
            let mut assembler = Assembler::new("seed", output);
            let mut source = || Ok(Some(held.clone()));
            let emitted = reader.emission().unwrap();
            let mut out = Vec::new();
            assembler
                .assemble(emitted, &mut source, "seed", &mut out)
                .unwrap_or_else(|e| panic!("seed {i}: {e}"));
            assert!(!out.is_empty(), "seed {i}");
            exercise_emissions(seed);
        }
    }
}
