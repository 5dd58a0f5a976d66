//! Arrow IPC messages split as Flight carries them (flatbuffer header + body).
//!
//! Used on both sides of the sandbox: the guest decodes its input and encodes its
//! output with these types, and the host uses the same decoder to validate every
//! message a guest emits before a byte of it reaches a client.

use arrow_array::{ArrayRef, RecordBatch};
use arrow_buffer::Buffer;
use arrow_data::UnsafeFlag;
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_ipc::{MessageHeader, convert, reader, root_as_message};
use arrow_schema::{ArrowError, Schema, SchemaRef};
use std::collections::HashMap;
use std::sync::Arc;

/// One IPC message: flatbuffer `Message` header and its body buffers.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// The flatbuffer `Message` (Flight's `data_header`).
    pub header: Vec<u8>,
    /// The message body (Flight's `data_body`).
    pub body: Vec<u8>,
}

/// Encodes `schema` as the header of an IPC schema message.
pub fn schema_to_header(schema: &Schema) -> Vec<u8> {
    let mut tracker = DictionaryTracker::new(false);
    IpcDataGenerator::default()
        .schema_to_bytes_with_dictionary_tracker(schema, &mut tracker, &IpcWriteOptions::default())
        .ipc_message
}

/// Decodes the header of an IPC schema message.
pub fn schema_from_header(header: &[u8]) -> Result<Schema, ArrowError> {
    let message = root_as_message(header)
        .map_err(|e| ArrowError::IpcError(format!("schema message is not a flatbuffer: {e}")))?;
    let ipc_schema = message
        .header_as_schema()
        .ok_or_else(|| ArrowError::IpcError("expected a schema message".into()))?;
    convert::try_fb_to_schema(ipc_schema)
}

/// Decodes record-batch and dictionary messages of one stream.
pub struct MessageDecoder {
    schema: SchemaRef,
    dictionaries: HashMap<i64, ArrayRef>,
    skip_validation: UnsafeFlag,
}

impl MessageDecoder {
    /// A decoder for a stream whose schema is `schema`, with Arrow's full validation
    /// of every array (offsets, UTF-8, null counts, lengths).
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            dictionaries: HashMap::new(),
            skip_validation: UnsafeFlag::new(),
        }
    }

    /// A decoder that checks the message structure (headers, buffer bounds, lengths
    /// against the schema) but not the array contents.
    ///
    /// # Safety
    ///
    /// Arrays decoded from invalid data (offsets past their values, invalid UTF-8)
    /// are undefined behaviour when read. Only use this where that cannot reach
    /// anything but the sender of the data: inside a wasm sandbox that holds one
    /// client's stream and whose every output is validated by the host.
    pub unsafe fn new_unvalidated(schema: SchemaRef) -> Self {
        let mut skip_validation = UnsafeFlag::new();
        // SAFETY: forwarded to the caller.
        unsafe { skip_validation.set(true) };
        Self {
            schema,
            dictionaries: HashMap::new(),
            skip_validation,
        }
    }

    /// The stream's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes one message. Dictionary batches are remembered and yield `None`;
    /// record batches yield `Some`. Anything else, a body that does not match its
    /// header, or data that breaks Arrow's invariants is an error.
    pub fn decode(
        &mut self,
        header: &[u8],
        body: Buffer,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        let message = root_as_message(header).map_err(|e| {
            ArrowError::IpcError(format!("message header is not a flatbuffer: {e}"))
        })?;
        let declared = message.bodyLength();
        if declared < 0 || declared as usize > body.len() {
            return Err(ArrowError::IpcError(format!(
                "message declares a {declared}-byte body but carries {} bytes",
                body.len()
            )));
        }
        match message.header_type() {
            MessageHeader::RecordBatch => {
                let batch = message
                    .header_as_record_batch()
                    .ok_or_else(|| ArrowError::IpcError("unreadable record batch header".into()))?;
                reader::RecordBatchDecoder::try_new(
                    &body,
                    batch,
                    self.schema.clone(),
                    &self.dictionaries,
                    &message.version(),
                )?
                .with_skip_validation(self.skip_validation.clone())
                .read_record_batch()
                .map(Some)
            }
            MessageHeader::DictionaryBatch => {
                let batch = message
                    .header_as_dictionary_batch()
                    .ok_or_else(|| ArrowError::IpcError("unreadable dictionary header".into()))?;
                reader::read_dictionary_impl(
                    &body,
                    batch,
                    &self.schema,
                    &mut self.dictionaries,
                    &message.version(),
                    false,
                    self.skip_validation.clone(),
                )?;
                Ok(None)
            }
            other => Err(ArrowError::IpcError(format!(
                "expected a record batch or dictionary message, got {other:?}"
            ))),
        }
    }
}

/// Encodes record batches of one stream into IPC messages.
pub struct MessageEncoder {
    schema: SchemaRef,
    schema_header: Vec<u8>,
    generator: IpcDataGenerator,
    tracker: DictionaryTracker,
    context: IpcWriteContext,
    options: IpcWriteOptions,
}

impl MessageEncoder {
    /// An encoder for batches following `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        let generator = IpcDataGenerator::default();
        let options = IpcWriteOptions::default();
        // The schema is encoded with the tracker that later encodes the batches, so
        // dictionary ids in batches match the ones the schema announced.
        let mut tracker = DictionaryTracker::new(false);
        let schema_header = generator
            .schema_to_bytes_with_dictionary_tracker(&schema, &mut tracker, &options)
            .ipc_message;
        Self {
            schema,
            schema_header,
            generator,
            tracker,
            context: IpcWriteContext::default(),
            options,
        }
    }

    /// The header of this stream's schema message.
    pub fn schema_header(&self) -> Vec<u8> {
        self.schema_header.clone()
    }

    /// Appends the messages of `batch` (dictionaries first) to `out`.
    pub fn encode(
        &mut self,
        batch: &RecordBatch,
        out: &mut Vec<Message>,
    ) -> Result<(), ArrowError> {
        if batch.schema_ref().fields() != self.schema.fields() {
            return Err(ArrowError::SchemaError(format!(
                "batch schema {} does not match the declared output schema {}",
                batch.schema_ref(),
                self.schema
            )));
        }
        let (dictionaries, data) =
            self.generator
                .encode(batch, &mut self.tracker, &self.options, &mut self.context)?;
        for d in dictionaries.into_iter().chain(std::iter::once(data)) {
            out.push(Message {
                header: d.ipc_message,
                body: d.arrow_data,
            });
        }
        Ok(())
    }
}

/// Shares a schema, for callers holding a plain [`Schema`].
pub fn shared(schema: Schema) -> SchemaRef {
    Arc::new(schema)
}

/// Feeds arbitrary bytes through the schema and message decoders, as the fuzz target
/// and its corpus regression test do. Must never panic.
#[doc(hidden)]
pub fn exercise_decoders(data: &[u8]) {
    let _ = schema_from_header(data);
    if data.len() < 2 {
        return;
    }
    // The first byte picks where the header ends; the rest is the body.
    let split = 1 + (data[0] as usize * data.len() / 256).min(data.len() - 1);
    let (header, body) = data[1..].split_at(split - 1);
    let schema = Arc::new(Schema::new(vec![
        arrow_schema::Field::new("id", arrow_schema::DataType::Int64, true),
        arrow_schema::Field::new("name", arrow_schema::DataType::Utf8, true),
        arrow_schema::Field::new("ok", arrow_schema::DataType::Boolean, false),
        arrow_schema::Field::new(
            "tag",
            arrow_schema::DataType::Dictionary(
                Box::new(arrow_schema::DataType::Int8),
                Box::new(arrow_schema::DataType::Utf8),
            ),
            true,
        ),
    ]));
    let mut decoder = MessageDecoder::new(schema);
    let _ = decoder.decode(header, Buffer::from(body.to_vec()));
}
