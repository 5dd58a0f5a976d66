//! The message-level exchanger interface, and the adapter that puts a typed
//! [`Exchanger`] on top of it.
//!
//! Most exchangers implement [`Exchanger`] and never see IPC. [`RawExchanger`] is
//! for the few that want the messages themselves (pass-through without decoding, or
//! the hostile test guests that emit deliberately broken output).

use crate::ipc::{Message, MessageDecoder, MessageEncoder, schema_from_header};
use crate::unread::Unread;
use crate::{ExchangeError, Exchanger, Info, Params};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Schema, SchemaRef};
use std::collections::HashMap;
use std::sync::Arc;

/// Where one column of an emitted batch comes from (contract 0.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnSource {
    /// Column `k` of the record batch being pushed, unchanged: its bytes stay in
    /// the host.
    Input(u32),
    /// The next column of the emission's messages.
    Emitted,
}

/// One output batch as contract 0.2 emits it: per output field its source, and
/// the messages (dictionaries, then one record batch) of the emitted columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emission {
    /// One entry per output field.
    pub columns: Vec<ColumnSource>,
    /// The emitted columns' messages; empty when every column is from input.
    pub messages: Vec<Message>,
}

impl Emission {
    /// `messages` (a 0.1-style output list) as emissions with every column
    /// emitted: one per record batch, its dictionaries before it.
    pub fn all_emitted(messages: Vec<Message>, fields: usize) -> Vec<Self> {
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for message in messages {
            let is_batch = arrow_ipc::root_as_message(&message.header)
                .is_ok_and(|m| m.header_type() == arrow_ipc::MessageHeader::RecordBatch);
            pending.push(message);
            if is_batch {
                out.push(Self {
                    columns: vec![ColumnSource::Emitted; fields],
                    messages: std::mem::take(&mut pending),
                });
            }
        }
        if !pending.is_empty() {
            // Dictionaries without a batch: the host says what is wrong with them.
            out.push(Self {
                columns: vec![ColumnSource::Emitted; fields],
                messages: pending,
            });
        }
        out
    }
}

/// An exchanger that works on IPC messages rather than record batches.
pub trait RawExchanger: Sized + 'static {
    /// The self-description shown by `list_exchangers`.
    const INFO: Info;
    /// Start a stream; `input_schema` is the header of an IPC schema message.
    fn open(input_schema: &[u8], params: &Params) -> Result<Self, ExchangeError>;
    /// The header of the IPC schema message every emitted message follows.
    fn output_schema(&self) -> Vec<u8>;
    /// Take one input message, emit zero or more.
    fn push(&mut self, message: Message) -> Result<Vec<Message>, ExchangeError>;
    /// End of input.
    fn finish(&mut self) -> Result<Vec<Message>, ExchangeError>;

    /// See [`Exchanger::stateless`].
    fn stateless(&self) -> bool {
        false
    }

    /// Contract 0.2: one input message's output as emissions. The default emits
    /// every column of what [`RawExchanger::push`] returns.
    fn push_emissions(&mut self, message: Message) -> Result<Vec<Emission>, ExchangeError> {
        let fields = output_fields(&self.output_schema());
        Ok(Emission::all_emitted(self.push(message)?, fields))
    }

    /// Contract 0.2: the end of input's output as emissions (see
    /// [`RawExchanger::push_emissions`]).
    fn finish_emissions(&mut self) -> Result<Vec<Emission>, ExchangeError> {
        let fields = output_fields(&self.output_schema());
        Ok(Emission::all_emitted(self.finish()?, fields))
    }

    /// Contract 0.2: the input columns `push` reads, in schema order, when it
    /// reads only some (see [`Exchanger::reads`]). Then the session asks the host
    /// for its input on demand and, if granted, gets each record batch through
    /// [`RawExchanger::push_reading`].
    fn reads(&self) -> Option<Vec<u32>> {
        None
    }

    /// Contract 0.2, input on demand: one record batch of which only `header`
    /// came; `read` fetches input columns (indices into the input schema) as one
    /// record batch message encoded against those fields, in that order.
    fn push_reading(
        &mut self,
        header: &[u8],
        read: &mut dyn FnMut(&[u32]) -> Result<Message, ExchangeError>,
    ) -> Result<Vec<Emission>, ExchangeError> {
        let _ = (header, read);
        Err(ExchangeError::Failed(
            "this exchanger does not read its input on demand".into(),
        ))
    }
}

/// Fields of the schema in a schema message header (0 if it is not one: the
/// host refuses such a schema when the session opens).
fn output_fields(header: &[u8]) -> usize {
    schema_from_header(header).map_or(0, |s| s.fields().len())
}

/// A typed [`Exchanger`] seen as a [`RawExchanger`]: decodes input messages, encodes
/// output batches.
pub struct Typed<E> {
    exchanger: E,
    decoder: MessageDecoder,
    encoder: MessageEncoder,
    /// One encoder per layout of emitted columns (contract 0.2), as the host
    /// keeps one decoder per layout.
    layouts: HashMap<Vec<bool>, MessageEncoder>,
    /// Output dictionaries rule out passing columns through (the host's rule).
    has_dictionaries: bool,
    /// The columns `push` reads and the placeholders of the others, when it reads
    /// only some.
    unread: Option<Unread>,
    /// Decodes what [`RawExchanger::push_reading`] reads: the input schema's
    /// fields of `unread.reads()`.
    read_decoder: Option<MessageDecoder>,
}

impl<E: Exchanger> Typed<E> {
    fn emit(
        &mut self,
        batches: Vec<arrow_array::RecordBatch>,
    ) -> Result<Vec<Message>, ExchangeError> {
        let mut messages = Vec::with_capacity(batches.len());
        for batch in &batches {
            self.encoder.encode(batch, &mut messages)?;
        }
        Ok(messages)
    }
}

/// Inside the sandbox, input is decoded without Arrow's content validation: it
/// costs a third of a batch's guest time under Cranelift, and what a malformed batch
/// could do stays in this instance, which holds only the sending client's stream
/// and whose every output the host validates. Elsewhere, validate.
fn input_decoder(input: arrow_schema::SchemaRef) -> MessageDecoder {
    if cfg!(target_arch = "wasm32") {
        // SAFETY: see above; the host runs one instance per stream and validates
        // all output (`mallard::sandbox::session`).
        unsafe { MessageDecoder::new_unvalidated(input) }
    } else {
        MessageDecoder::new(input)
    }
}

impl<E: Exchanger> RawExchanger for Typed<E> {
    const INFO: Info = E::INFO;

    fn open(input_schema: &[u8], params: &Params) -> Result<Self, ExchangeError> {
        let input = schema_from_header(input_schema)
            .map_err(|e| ExchangeError::InvalidInput(e.to_string()))?;
        let input = Arc::new(input);
        let exchanger = E::open(input.clone(), params)?;
        let output = exchanger.output_schema();
        let has_dictionaries = output
            .fields()
            .iter()
            .any(|f| matches!(f.data_type(), DataType::Dictionary(..)));
        let unread = match exchanger.reads() {
            Some(reads) => Some(Unread::new(input.clone(), &reads)?),
            None => None,
        };
        let read_decoder = match &unread {
            Some(unread) => {
                let read = input
                    .project(unread.reads())
                    .map_err(|e| ExchangeError::Failed(e.to_string()))?;
                Some(input_decoder(Arc::new(read)))
            }
            None => None,
        };
        Ok(Self {
            exchanger,
            decoder: input_decoder(input),
            encoder: MessageEncoder::new(output),
            layouts: HashMap::new(),
            has_dictionaries,
            unread,
            read_decoder,
        })
    }

    fn reads(&self) -> Option<Vec<u32>> {
        let unread = self.unread.as_ref()?;
        Some(unread.reads().iter().map(|&k| k as u32).collect())
    }

    fn push_reading(
        &mut self,
        header: &[u8],
        read: &mut dyn FnMut(&[u32]) -> Result<Message, ExchangeError>,
    ) -> Result<Vec<Emission>, ExchangeError> {
        let indices = RawExchanger::reads(self).unwrap_or_default();
        let (Some(unread), Some(decoder)) = (&mut self.unread, &mut self.read_decoder) else {
            return Err(ExchangeError::Failed(
                "input on demand without reads()".into(),
            ));
        };
        let rows = record_batch_rows(header)?;
        let columns = if indices.is_empty() {
            Vec::new()
        } else {
            let message = read(&indices)?;
            let batch = decoder
                .decode(&message.header, Buffer::from_vec(message.body))
                .map_err(|e| ExchangeError::InvalidInput(e.to_string()))?
                .ok_or_else(|| ExchangeError::Failed("read-columns gave no batch".into()))?;
            batch.columns().to_vec()
        };
        let batch = unread.batch(rows, columns)?;
        self.push_batch(batch)
    }

    fn output_schema(&self) -> Vec<u8> {
        self.encoder.schema_header()
    }

    fn stateless(&self) -> bool {
        self.exchanger.stateless()
    }

    fn push(&mut self, message: Message) -> Result<Vec<Message>, ExchangeError> {
        let body = Buffer::from_vec(message.body);
        let decoded = self
            .decoder
            .decode(&message.header, body)
            .map_err(|e| ExchangeError::InvalidInput(e.to_string()))?;
        match decoded {
            None => Ok(Vec::new()),
            Some(batch) => {
                let out = self.exchanger.push(batch)?;
                self.emit(out)
            }
        }
    }

    fn finish(&mut self) -> Result<Vec<Message>, ExchangeError> {
        let out = self.exchanger.finish()?;
        self.emit(out)
    }

    fn push_emissions(&mut self, message: Message) -> Result<Vec<Emission>, ExchangeError> {
        let body = Buffer::from_vec(message.body);
        let decoded = self
            .decoder
            .decode(&message.header, body)
            .map_err(|e| ExchangeError::InvalidInput(e.to_string()))?;
        let Some(batch) = decoded else {
            return Ok(Vec::new());
        };
        let batch = match &mut self.unread {
            Some(unread) => unread.view(&batch)?,
            None => batch,
        };
        self.push_batch(batch)
    }

    fn finish_emissions(&mut self) -> Result<Vec<Emission>, ExchangeError> {
        let out = self.exchanger.finish()?;
        self.emissions(out, None)
    }
}

impl<E: Exchanger> Typed<E> {
    /// One decoded input batch (with placeholders, if `push` reads only some
    /// columns) through `push`, as emissions.
    fn push_batch(&mut self, batch: RecordBatch) -> Result<Vec<Emission>, ExchangeError> {
        let input: Vec<ArrayRef> = batch.columns().to_vec();
        let rows = batch.num_rows();
        let out = self.exchanger.push(batch)?;
        self.emissions(out, Some((&input, rows)))
    }

    /// Output batches as emissions: a column that is one of the pushed batch's
    /// own arrays (the same allocation, as `batch.column(k).clone()` gives) is
    /// named instead of sent; the rest is encoded.
    fn emissions(
        &mut self,
        batches: Vec<RecordBatch>,
        input: Option<(&[ArrayRef], usize)>,
    ) -> Result<Vec<Emission>, ExchangeError> {
        let mut out = Vec::with_capacity(batches.len());
        for batch in batches {
            let columns: Vec<ColumnSource> = batch
                .columns()
                .iter()
                .map(|column| match input {
                    Some((inputs, rows)) if !self.has_dictionaries && batch.num_rows() == rows => {
                        inputs
                            .iter()
                            .position(|i| Arc::ptr_eq(i, column))
                            .map_or(ColumnSource::Emitted, |k| ColumnSource::Input(k as u32))
                    }
                    _ => ColumnSource::Emitted,
                })
                .collect();
            if let Some(unread) = &self.unread {
                for ((field, column), source) in batch
                    .schema_ref()
                    .fields()
                    .iter()
                    .zip(batch.columns())
                    .zip(&columns)
                {
                    if *source == ColumnSource::Emitted {
                        unread.check_emitted(field.name(), column)?;
                    }
                }
            }
            let mut messages = Vec::new();
            if columns.iter().all(|c| *c == ColumnSource::Emitted) {
                self.encoder.encode(&batch, &mut messages)?;
            } else {
                let layout: Vec<bool> = columns
                    .iter()
                    .map(|c| *c == ColumnSource::Emitted)
                    .collect();
                if layout.contains(&true) {
                    let (schema, arrays) = emitted_part(&batch, &layout);
                    let encoder = self
                        .layouts
                        .entry(layout)
                        .or_insert_with(|| MessageEncoder::new(schema.clone()));
                    let part = RecordBatch::try_new(schema, arrays)?;
                    encoder.encode(&part, &mut messages)?;
                }
            }
            out.push(Emission { columns, messages });
        }
        Ok(out)
    }
}

/// The row count a record batch message's header declares.
fn record_batch_rows(header: &[u8]) -> Result<usize, ExchangeError> {
    let length = arrow_ipc::root_as_message(header)
        .ok()
        .and_then(|m| m.header_as_record_batch())
        .map(|b| b.length())
        .ok_or_else(|| ExchangeError::InvalidInput("expected a record batch header".into()))?;
    usize::try_from(length)
        .map_err(|_| ExchangeError::InvalidInput(format!("a batch of {length} rows")))
}

/// The schema and arrays of `batch`'s emitted columns.
fn emitted_part(batch: &RecordBatch, layout: &[bool]) -> (SchemaRef, Vec<ArrayRef>) {
    let (fields, arrays): (Vec<_>, Vec<_>) = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .zip(layout)
        .filter(|(_, emitted)| **emitted)
        .map(|((f, a), _)| (f.clone(), a.clone()))
        .unzip();
    (Arc::new(Schema::new(fields)), arrays)
}

/// Runs one header-only record batch through a typed session that reads no
/// column (every input column a placeholder), as input on demand delivers it:
/// for the fuzz target, which must see a value or an error, never a panic.
#[doc(hidden)]
pub fn exercise_reading(schema: SchemaRef, header: &[u8]) {
    struct PassEverything(SchemaRef);
    impl Exchanger for PassEverything {
        const INFO: Info = Info {
            name: "pass_everything",
            version: "0.0.0",
            description: "",
        };
        fn open(input: SchemaRef, _: &Params) -> Result<Self, ExchangeError> {
            Ok(Self(input))
        }
        fn output_schema(&self) -> SchemaRef {
            self.0.clone()
        }
        fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
            Ok(vec![batch])
        }
        fn reads(&self) -> Option<Vec<usize>> {
            Some(Vec::new())
        }
    }
    let schema_header = crate::ipc::schema_to_header(&schema);
    let Ok(mut session) = Typed::<PassEverything>::open(&schema_header, &Params::new(Vec::new()))
    else {
        return;
    };
    let _ = session.push_reading(header, &mut |_| {
        Err(ExchangeError::Failed("nothing is read here".into()))
    });
}
