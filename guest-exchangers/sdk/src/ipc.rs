//! Arrow IPC messages split as Flight carries them (flatbuffer header + body).
//!
//! Used on both sides of the sandbox: the guest decodes its input and encodes its
//! output with these types, and the host uses the same decoder to validate every
//! message a guest emits before a byte of it reaches a client.

use crate::flat_validation;
use crate::footprint::{DictionarySizes, ValueSizes, Walk, allowed_footprint};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_buffer::Buffer;
use arrow_data::UnsafeFlag;
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_ipc::{MessageHeader, convert, reader, root_as_message};
use arrow_schema::{ArrowError, Field, Schema, SchemaRef};
use std::collections::HashMap;
use std::sync::Arc;

/// One IPC message: flatbuffer `Message` header and its body buffers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The flatbuffer `Message` (Flight's `data_header`).
    pub header: Vec<u8>,
    /// The message body (Flight's `data_body`).
    pub body: Vec<u8>,
}

/// Whether `t` is, or holds anywhere inside it, a dictionary-encoded type.
pub fn has_dictionary(t: &arrow_schema::DataType) -> bool {
    use arrow_schema::DataType;
    match t {
        DataType::Dictionary(..) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_dictionary(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_dictionary(f.data_type())),
        DataType::Union(fields, _) => fields.iter().any(|(_, f)| has_dictionary(f.data_type())),
        DataType::RunEndEncoded(ends, values) => {
            has_dictionary(ends.data_type()) || has_dictionary(values.data_type())
        }
        _ => false,
    }
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

/// Rows any record or dictionary batch may declare whatever its body size:
/// a Null-typed column or a run-end encoded one holds rows in no bytes, so
/// Arrow's validation alone lets ~200 bytes claim billions of rows.
pub const MAX_ROWS_WITHOUT_BODY: i64 = 1 << 17;
/// Further rows per body byte: any other column spends at least one bit a row
/// in an uncompressed body (Mallard reads no compressed IPC).
pub const MAX_ROWS_PER_BODY_BYTE: i64 = 8;
/// Dictionary bytes one stream may hold, all dictionaries together.
pub const MAX_DICTIONARY_BYTES: usize = 64 << 20;
/// Bytes one stream's dictionary deltas may make the decoder copy in total (a
/// delta concatenates onto the stored dictionary): bounds the work of many
/// small deltas onto a large dictionary.
pub const MAX_DELTA_COPY_BYTES: usize = 256 << 20;

/// What one stream's messages may claim: rows in proportion to their bytes, and
/// bounded dictionaries. Checked before a message is decoded.
#[derive(Debug, Default)]
pub struct MessageBounds {
    dictionary_bytes: HashMap<i64, usize>,
    delta_copy_bytes: usize,
}

impl MessageBounds {
    /// Checks a message's flatbuffer header against the body length it came with.
    pub fn check_header(&mut self, header: &[u8], body_len: usize) -> Result<(), ArrowError> {
        let message = root_as_message(header).map_err(|e| {
            ArrowError::IpcError(format!("message header is not a flatbuffer: {e}"))
        })?;
        self.check(&message, body_len)
    }

    /// Checks a decoded header against the body length it came with.
    pub fn check(
        &mut self,
        message: &arrow_ipc::Message<'_>,
        body_len: usize,
    ) -> Result<(), ArrowError> {
        let plausible = |rows: i64| {
            let limit = MAX_ROWS_WITHOUT_BODY
                .saturating_add(MAX_ROWS_PER_BODY_BYTE.saturating_mul(body_len as i64));
            if rows > limit {
                Err(ArrowError::IpcError(format!(
                    "a message of {body_len} body bytes declares {rows} rows; at most \
                     {MAX_ROWS_WITHOUT_BODY} + {MAX_ROWS_PER_BODY_BYTE} per body byte are accepted"
                )))
            } else {
                Ok(())
            }
        };
        match message.header_type() {
            MessageHeader::RecordBatch => {
                if let Some(batch) = message.header_as_record_batch() {
                    plausible(batch.length())?;
                }
            }
            MessageHeader::DictionaryBatch => {
                let Some(dictionary) = message.header_as_dictionary_batch() else {
                    return Ok(());
                };
                if let Some(data) = dictionary.data() {
                    plausible(data.length())?;
                }
                let stored = self.dictionary_bytes.entry(dictionary.id()).or_default();
                if dictionary.isDelta() {
                    self.delta_copy_bytes = self
                        .delta_copy_bytes
                        .saturating_add(*stored)
                        .saturating_add(body_len);
                    *stored = stored.saturating_add(body_len);
                } else {
                    *stored = body_len;
                }
                let total: usize = self.dictionary_bytes.values().sum();
                if total > MAX_DICTIONARY_BYTES {
                    return Err(ArrowError::IpcError(format!(
                        "the stream's dictionaries would hold {total} bytes; at most \
                         {MAX_DICTIONARY_BYTES} are accepted"
                    )));
                }
                if self.delta_copy_bytes > MAX_DELTA_COPY_BYTES {
                    return Err(ArrowError::IpcError(format!(
                        "the stream's dictionary deltas would copy {} bytes; at most \
                         {MAX_DELTA_COPY_BYTES} are accepted (send fewer, larger deltas)",
                        self.delta_copy_bytes
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Decodes record-batch and dictionary messages of one stream.
pub struct MessageDecoder {
    schema: SchemaRef,
    dictionaries: HashMap<i64, ArrayRef>,
    dictionary_sizes: HashMap<i64, DictionarySizes>,
    skip_validation: UnsafeFlag,
    /// Every field is [`flat_validation::is_flat`]: record batches are decoded
    /// unchecked, then [`flat_validation::validate_batch`] runs the same checks.
    flat: bool,
    bounds: MessageBounds,
}

impl MessageDecoder {
    /// A decoder for a stream whose schema is `schema`, with Arrow's full validation
    /// of every array (offsets, UTF-8, null counts, lengths).
    pub fn new(schema: SchemaRef) -> Self {
        let flat = schema
            .fields()
            .iter()
            .all(|f| flat_validation::is_flat(f.data_type()));
        Self {
            flat,
            ..Self::with_arrow_validation(schema)
        }
    }

    /// [`MessageDecoder::new`] with Arrow's validation whatever the schema: what
    /// the fuzz target compares the flat-column validation against.
    #[doc(hidden)]
    pub fn with_arrow_validation(schema: SchemaRef) -> Self {
        Self {
            schema,
            dictionaries: HashMap::new(),
            dictionary_sizes: HashMap::new(),
            skip_validation: UnsafeFlag::new(),
            flat: false,
            bounds: MessageBounds::default(),
        }
    }

    /// A decoder that checks the message structure (headers, buffer bounds, lengths
    /// against the schema) but not the array contents.
    ///
    /// # Safety
    ///
    /// Arrays decoded from invalid data (offsets past their values, invalid UTF-8)
    /// are undefined behaviour when read. Only use this where that cannot reach
    /// anything but the sender of the data (inside a wasm sandbox that holds one
    /// client's stream and whose every output is validated by the host), or on
    /// messages this process encoded from arrays it validated or built itself.
    pub unsafe fn new_unvalidated(schema: SchemaRef) -> Self {
        let mut skip_validation = UnsafeFlag::new();
        // SAFETY: forwarded to the caller.
        unsafe { skip_validation.set(true) };
        Self {
            schema,
            dictionaries: HashMap::new(),
            dictionary_sizes: HashMap::new(),
            skip_validation,
            flat: false,
            bounds: MessageBounds::default(),
        }
    }

    /// The stream's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes one message. Dictionary batches are remembered and yield `None`;
    /// record batches yield `Some`. Anything else, a body that does not match its
    /// header, a claim beyond [`MessageBounds`], a footprint beyond
    /// [`allowed_footprint`] (bytes referenced many times), or data that breaks
    /// Arrow's invariants is an error. Never panics, whatever the bytes.
    pub fn decode(
        &mut self,
        header: &[u8],
        body: Buffer,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        let sent = header.len().saturating_add(body.len());
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
        self.bounds.check(&message, body.len())?;
        // The walk checks every buffer and node against the body before arrow-ipc
        // slices it; the catch is a second net for any decoder panic left.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.decode_checked(&message, &body, sent)
        }));
        decoded.unwrap_or_else(|_| {
            Err(ArrowError::IpcError(
                "the message could not be decoded (malformed buffers)".into(),
            ))
        })
    }

    fn decode_checked(
        &mut self,
        message: &arrow_ipc::Message<'_>,
        body: &Buffer,
        sent: usize,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        let within = |footprint: u64| {
            let allowed = allowed_footprint(sent);
            if footprint > allowed {
                Err(ArrowError::IpcError(format!(
                    "a message of {sent} bytes references {footprint} bytes once decoded \
                     (shared views, repeated dictionary keys or overlapping buffers); at most \
                     {allowed} are accepted for its size"
                )))
            } else {
                Ok(())
            }
        };
        match message.header_type() {
            MessageHeader::RecordBatch => {
                let batch = message
                    .header_as_record_batch()
                    .ok_or_else(|| ArrowError::IpcError("unreadable record batch header".into()))?;
                let footprint = Walk::new(&batch, body.as_slice(), &self.dictionary_sizes)
                    .columns(self.schema.fields())?;
                within(footprint)?;
                if self.flat && batch.variadicBufferCounts().is_some_and(|c| !c.is_empty()) {
                    return Err(ArrowError::IpcError(
                        "variadic buffer counts for a schema without view columns".into(),
                    ));
                }
                let mut skip_validation = self.skip_validation.clone();
                let flat =
                    self.flat && flat_validation::buffers_suffice(&batch, self.schema.fields());
                if flat {
                    // SAFETY: `validate_batch` below runs every check skipped here
                    // before the batch leaves this function.
                    unsafe { skip_validation.set(true) };
                }
                let decoded = reader::RecordBatchDecoder::try_new(
                    body,
                    batch,
                    self.schema.clone(),
                    &self.dictionaries,
                    &message.version(),
                )?
                .with_skip_validation(skip_validation)
                .read_record_batch()?;
                if !flat {
                    return Ok(Some(decoded));
                }
                let rows = decoded.num_rows();
                let (schema, columns, _) = decoded.into_parts();
                flat_validation::validate_batch(schema, columns, rows).map(Some)
            }
            MessageHeader::DictionaryBatch => {
                let batch = message
                    .header_as_dictionary_batch()
                    .ok_or_else(|| ArrowError::IpcError("unreadable dictionary header".into()))?;
                let id = batch.id();
                let data = batch
                    .data()
                    .ok_or_else(|| ArrowError::IpcError("dictionary batch without data".into()))?;
                let value_field = self.dictionary_value_field(id)?;
                let column = Walk::new(&data, body.as_slice(), &self.dictionary_sizes)
                    .column(&value_field, true)?;
                within(column.footprint)?;
                reader::read_dictionary_impl(
                    body,
                    batch,
                    &self.schema,
                    &mut self.dictionaries,
                    &message.version(),
                    false,
                    self.skip_validation.clone(),
                )?;
                let sizes = column.sizes.unwrap_or(ValueSizes::Each(column.footprint));
                let entry = match self.dictionary_sizes.remove(&id) {
                    Some(stored) if batch.isDelta() => DictionarySizes {
                        len: stored.len.saturating_add(column.len),
                        sizes: stored.sizes.extended(stored.len, sizes, column.len),
                    },
                    _ => DictionarySizes {
                        len: column.len,
                        sizes,
                    },
                };
                self.dictionary_sizes.insert(id, entry);
                Ok(None)
            }
            other => Err(ArrowError::IpcError(format!(
                "expected a record batch or dictionary message, got {other:?}"
            ))),
        }
    }

    /// The values field of dictionary `id`, as the schema declares it.
    fn dictionary_value_field(&self, id: i64) -> Result<Field, ArrowError> {
        #[expect(deprecated, reason = "arrow-ipc keys dictionaries by the field's id")]
        let fields = self.schema.fields_with_dict_id(id);
        match fields.first().map(|f| f.data_type()) {
            Some(arrow_schema::DataType::Dictionary(_, values)) => {
                Ok(Field::new("dictionary", values.as_ref().clone(), true))
            }
            _ => Err(ArrowError::IpcError(format!(
                "dictionary id {id} is not in the stream's schema"
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

/// A hand-made record batch header of `columns` Int64 columns, each a node of
/// `length` rows, with `buffers` as (offset, length) pairs and the declared body
/// length: what a lying client or guest sends, for the tests and hostile guests
/// that attack the decoder.
#[doc(hidden)]
pub fn forged_int64_batch_header(
    columns: usize,
    length: i64,
    buffers: &[(i64, i64)],
    body_len: i64,
) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let nodes = fbb.create_vector(&vec![arrow_ipc::FieldNode::new(length, 0); columns]);
    let specs: Vec<_> = buffers
        .iter()
        .map(|(o, l)| arrow_ipc::Buffer::new(*o, *l))
        .collect();
    let buffers = fbb.create_vector(&specs);
    let batch = {
        let mut b = arrow_ipc::RecordBatchBuilder::new(&mut fbb);
        b.add_length(length.max(0));
        b.add_nodes(nodes);
        b.add_buffers(buffers);
        b.finish()
    };
    let message = {
        let mut b = arrow_ipc::MessageBuilder::new(&mut fbb);
        b.add_version(arrow_ipc::MetadataVersion::V5);
        b.add_header_type(MessageHeader::RecordBatch);
        b.add_header(batch.as_union_value());
        b.add_bodyLength(body_len);
        b.finish()
    };
    fbb.finish(message, None);
    fbb.finished_data().to_vec()
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
    let mut decoder = MessageDecoder::new(schema.clone());
    let _ = decoder.decode(header, Buffer::from(body.to_vec()));
    // Flat columns are validated after an unchecked decode: the verdict and the
    // batch must be Arrow's own.
    let flat = Arc::new(Schema::new(vec![
        arrow_schema::Field::new("id", arrow_schema::DataType::Int64, true),
        arrow_schema::Field::new("name", arrow_schema::DataType::Utf8, true),
        arrow_schema::Field::new("ok", arrow_schema::DataType::Boolean, false),
        arrow_schema::Field::new("blob", arrow_schema::DataType::Binary, true),
        arrow_schema::Field::new("text", arrow_schema::DataType::LargeUtf8, false),
    ]));
    for fields in [&[0, 1, 2][..], &[1, 3, 4], &[1], &[4]] {
        let schema = Arc::new(flat.project(fields).expect("fields of `flat`"));
        flat_validation_agrees_with_arrow(&schema, header, body);
    }
    // Input on demand: a header the host let through (its rows within bounds of
    // the body the client sent) reaches a session as the header alone.
    if MessageBounds::default()
        .check_header(header, body.len())
        .is_ok()
    {
        let flat = Arc::new(flat.project(&[0, 1, 2]).expect("three flat fields"));
        crate::raw::exercise_reading(flat, header);
    }
}

/// Decodes one message with the flat-column validation and with Arrow's, and
/// panics unless what Arrow accepts is accepted alike and what is accepted is
/// valid by Arrow's full validation of the arrays returned. (Arrow's decoder also
/// refuses, by a caught panic, a buffer whose length is no multiple of its
/// values' width, which the arrays never read: accepting that is sound.)
/// Returns whether the message was accepted.
#[doc(hidden)]
pub fn flat_validation_agrees_with_arrow(schema: &SchemaRef, header: &[u8], body: &[u8]) -> bool {
    let ours = MessageDecoder::new(schema.clone()).decode(header, Buffer::from(body.to_vec()));
    let arrows = MessageDecoder::with_arrow_validation(schema.clone())
        .decode(header, Buffer::from(body.to_vec()));
    match (ours, arrows) {
        (Ok(ours), Ok(arrows)) => {
            assert_eq!(ours, arrows, "decoded alike");
            true
        }
        (Ok(Some(ours)), Err(arrows)) => {
            for column in ours.columns() {
                if let Err(e) = column.to_data().validate_full() {
                    panic!("flat validation accepted an invalid column ({e}); Arrow: {arrows}");
                }
            }
            true
        }
        (Err(ours), Ok(arrows)) => panic!("flat validation refused ({ours}) {arrows:?}"),
        (ours, _) => ours.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, NullArray};
    use arrow_schema::{DataType, Field};

    fn encoded(batch: &RecordBatch) -> Message {
        let mut encoder = MessageEncoder::new(batch.schema());
        let mut out = Vec::new();
        encoder.encode(batch, &mut out).unwrap();
        out.pop().unwrap()
    }

    #[test]
    fn a_null_column_claiming_billions_of_rows_is_refused_before_decoding() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Null, true)]));
        let claim = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(NullArray::new(2_000_000_000))],
        )
        .unwrap();
        let message = encoded(&claim);
        assert!(message.header.len() + message.body.len() < 1024);
        let err = MessageDecoder::new(schema)
            .decode(&message.header, Buffer::from(message.body))
            .unwrap_err();
        assert!(
            err.to_string().contains("declares 2000000000 rows"),
            "{err}"
        );
    }

    /// A dictionary batch header: `rows` values, `delta` or not, of dictionary 0.
    fn dictionary_header(rows: i64, delta: bool, body_len: usize) -> Vec<u8> {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let data = {
            let mut b = arrow_ipc::RecordBatchBuilder::new(&mut fbb);
            b.add_length(rows);
            b.finish()
        };
        let dictionary = {
            let mut b = arrow_ipc::DictionaryBatchBuilder::new(&mut fbb);
            b.add_id(0);
            b.add_data(data);
            b.add_isDelta(delta);
            b.finish()
        };
        let message = {
            let mut b = arrow_ipc::MessageBuilder::new(&mut fbb);
            b.add_version(arrow_ipc::MetadataVersion::V5);
            b.add_header_type(MessageHeader::DictionaryBatch);
            b.add_header(dictionary.as_union_value());
            b.add_bodyLength(body_len as i64);
            b.finish()
        };
        fbb.finish(message, None);
        fbb.finished_data().to_vec()
    }

    #[test]
    fn many_small_deltas_onto_a_large_dictionary_are_cut_short() {
        let mut bounds = MessageBounds::default();
        let large = 32 << 20;
        bounds
            .check_header(&dictionary_header(1000, false, large), large)
            .unwrap();
        let delta = dictionary_header(8, true, 192);
        let accepted = (0..3000)
            .take_while(|_| bounds.check_header(&delta, 192).is_ok())
            .count();
        // Each delta copies the 32 MiB dictionary: the 256 MiB copy budget allows 7.
        assert_eq!(accepted, 7);
        let err = bounds.check_header(&delta, 192).unwrap_err();
        assert!(err.to_string().contains("deltas would copy"), "{err}");
    }

    #[test]
    fn dictionaries_are_capped_in_total_and_replacements_do_not_add_up() {
        let mut bounds = MessageBounds::default();
        let size = 40 << 20;
        let replacement = dictionary_header(1000, false, size);
        for _ in 0..10 {
            bounds.check_header(&replacement, size).unwrap();
        }
        let mut growing = MessageBounds::default();
        growing.check_header(&replacement, size).unwrap();
        let err = growing
            .check_header(&dictionary_header(1000, true, size), size)
            .unwrap_err();
        assert!(err.to_string().contains("dictionaries would hold"), "{err}");
    }

    fn decode_all(
        schema: SchemaRef,
        messages: Vec<Message>,
    ) -> Result<Vec<RecordBatch>, ArrowError> {
        let mut decoder = MessageDecoder::new(schema);
        let mut out = Vec::new();
        for m in messages {
            if let Some(b) = decoder.decode(&m.header, Buffer::from(m.body))? {
                out.push(b);
            }
        }
        Ok(out)
    }

    fn encoded_all(batch: &RecordBatch) -> Vec<Message> {
        let mut encoder = MessageEncoder::new(batch.schema());
        let mut out = Vec::new();
        encoder.encode(batch, &mut out).unwrap();
        out
    }

    /// A `Utf8View` column of `rows` views of one `len`-byte string.
    fn shared_views(rows: usize, len: usize) -> RecordBatch {
        let mut builder = arrow_array::builder::StringViewBuilder::new();
        let block = builder.append_block(Buffer::from(vec![b'x'; len]));
        for _ in 0..rows {
            builder.try_append_view(block, 0, len as u32).unwrap();
        }
        let array = builder.finish();
        RecordBatch::try_from_iter([("s", Arc::new(array) as ArrayRef)]).unwrap()
    }

    #[test]
    fn views_of_one_string_repeated_are_refused_before_validation() {
        // 65,536 views (1 MiB) of one 64 KiB string reference 4 GiB.
        let batch = shared_views(65_536, 64 << 10);
        let started = std::time::Instant::now();
        let err = decode_all(batch.schema(), encoded_all(&batch)).unwrap_err();
        assert!(err.to_string().contains("references"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // The same column with distinct short strings passes.
        let fine = shared_views(65_536, 12);
        assert_eq!(
            decode_all(fine.schema(), encoded_all(&fine)).unwrap()[0].num_rows(),
            65_536
        );
    }

    fn dictionary_batch(categories: usize, width: usize, rows: usize) -> RecordBatch {
        let values = arrow_array::StringArray::from_iter_values(
            (0..categories).map(|i| format!("{i:08}{}", "x".repeat(width - 8))),
        );
        let keys =
            arrow_array::Int8Array::from_iter_values((0..rows).map(|i| (i % categories) as i8));
        let array = arrow_array::DictionaryArray::try_new(keys, Arc::new(values)).unwrap();
        RecordBatch::try_from_iter([("d", Arc::new(array) as ArrayRef)]).unwrap()
    }

    #[test]
    fn dictionary_keys_are_costed_by_the_values_they_repeat() {
        // Ordinary categories: 100 values of 30 bytes over 1M rows (30x) pass.
        let ordinary = dictionary_batch(100, 30, 1_000_000);
        let decoded = decode_all(ordinary.schema(), encoded_all(&ordinary)).unwrap();
        assert_eq!(decoded[0].num_rows(), 1_000_000);
        // One 64 KiB value repeated by 100,000 one-byte keys (6.5 GB) is refused.
        let bomb = dictionary_batch(1, 64 << 10, 100_000);
        let err = decode_all(bomb.schema(), encoded_all(&bomb)).unwrap_err();
        assert!(err.to_string().contains("references"), "{err}");
    }

    #[test]
    fn buffers_outside_the_body_and_negative_lengths_are_errors_not_panics() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let body = Buffer::from(vec![0u8; 80]);
        for (length, buffers) in [
            (10, vec![(0, 0), (1 << 40, 80)]),
            (10, vec![(0, 0), (72, 80)]),
            (10, vec![(0, 0), (-8, 80)]),
            (10, vec![(0, 0), (0, -1)]),
            (-5, vec![(0, 0), (0, 80)]),
            (10, vec![(i64::MAX, i64::MAX)]),
        ] {
            let header = forged_int64_batch_header(1, length, &buffers, 80);
            let err = MessageDecoder::new(schema.clone())
                .decode(&header, body.clone())
                .unwrap_err();
            assert!(
                err.to_string().contains("outside") || err.to_string().contains("length"),
                "{length} {buffers:?}: {err}"
            );
        }
        // Two columns sharing one region of the body are costed twice.
        let two = Arc::new(Schema::new(
            (0..100)
                .map(|i| Field::new(format!("v{i}"), DataType::Int64, false))
                .collect::<Vec<_>>(),
        ));
        let shared: Vec<(i64, i64)> = (0..100).flat_map(|_| [(0, 0), (0, 1 << 20)]).collect();
        let header = forged_int64_batch_header(100, 131_072, &shared, 1 << 20);
        let err = MessageDecoder::new(two)
            .decode(&header, Buffer::from(vec![0u8; 1 << 20]))
            .unwrap_err();
        assert!(err.to_string().contains("references"), "{err}");
    }

    #[test]
    fn a_buffer_short_of_its_rows_gets_arrows_verdict_not_a_caught_panic() {
        // 40 bytes of values for 327,680 rows (a fuzzer's find): Arrow's array
        // constructors panic on it after an unchecked decode, so the flat path
        // must hand it to Arrow's validated decode instead.
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let header = forged_int64_batch_header(1, 327_680, &[(0, 0), (0, 40)], 40);
        let message = root_as_message(&header).unwrap();
        let batch = message.header_as_record_batch().unwrap();
        assert!(!flat_validation::buffers_suffice(&batch, schema.fields()));
        let ours = MessageDecoder::new(schema.clone())
            .decode(&header, Buffer::from(vec![0u8; 40]))
            .unwrap_err();
        let arrows = MessageDecoder::with_arrow_validation(schema.clone())
            .decode(&header, Buffer::from(vec![0u8; 40]))
            .unwrap_err();
        assert_eq!(ours.to_string(), arrows.to_string());
        assert!(!ours.to_string().contains("could not be decoded"), "{ours}");
        // Enough bytes for the rows pass the pre-check.
        let header = forged_int64_batch_header(1, 5, &[(0, 0), (0, 40)], 40);
        let message = root_as_message(&header).unwrap();
        let batch = message.header_as_record_batch().unwrap();
        assert!(flat_validation::buffers_suffice(&batch, schema.fields()));
    }

    #[test]
    fn ordinary_batches_and_small_null_batches_pass() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let rows = 1_000_000;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap();
        let message = encoded(&batch);
        let decoded = MessageDecoder::new(schema)
            .decode(&message.header, Buffer::from(message.body))
            .unwrap()
            .unwrap();
        assert_eq!(decoded.num_rows(), rows as usize);

        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Null, true)]));
        let at_limit = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(NullArray::new(MAX_ROWS_WITHOUT_BODY as usize))],
        )
        .unwrap();
        let message = encoded(&at_limit);
        assert!(
            MessageBounds::default()
                .check_header(&message.header, message.body.len())
                .is_ok()
        );
    }

    #[test]
    fn every_one_byte_corruption_of_a_flat_batch_gets_arrows_verdict_and_batch() {
        use arrow_array::{BinaryArray, BooleanArray, LargeStringArray, StringArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("text", DataType::LargeUtf8, false),
            Field::new("blob", DataType::Binary, true),
            Field::new("ok", DataType::Boolean, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(StringArray::from(vec![
                    Some("é"),
                    None,
                    Some("ab"),
                    Some("€x"),
                ])),
                Arc::new(LargeStringArray::from(vec!["a", "", "ü", "zz"])),
                Arc::new(BinaryArray::from(vec![
                    Some(&b"\xff"[..]),
                    Some(b""),
                    None,
                    Some(b"\x00\x01"),
                ])),
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    None,
                    Some(false),
                    None,
                ])),
            ],
        )
        .unwrap();
        let message = encoded(&batch);
        assert!(
            flat_validation_agrees_with_arrow(&schema, &message.header, &message.body),
            "the original"
        );
        // Each byte set to each of `values` in turn (header bytes: lengths, null
        // counts, buffer offsets and sizes).
        let corruptions = |bytes: &[u8], values: &[u8]| {
            let mut out = Vec::new();
            for at in 0..bytes.len() {
                for &value in values.iter().filter(|&&v| v != bytes[at]) {
                    let mut corrupted = bytes.to_vec();
                    corrupted[at] = value;
                    out.push(corrupted);
                }
            }
            out
        };
        let mut refused = 0;
        for body in corruptions(&message.body, &[0x00, 0x01, 0x7f, 0x80, 0xa9, 0xc3, 0xff]) {
            refused += usize::from(!flat_validation_agrees_with_arrow(
                &schema,
                &message.header,
                &body,
            ));
        }
        for header in corruptions(&message.header, &[0x00, 0x01, 0x05, 0x7f, 0x80, 0xff]) {
            refused += usize::from(!flat_validation_agrees_with_arrow(
                &schema,
                &header,
                &message.body,
            ));
        }
        assert!(refused > 0, "some corruptions break an invariant");
    }
}
