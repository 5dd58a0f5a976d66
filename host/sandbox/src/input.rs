//! Contract 0.2's `input` import: a session that asks for its input on demand
//! gets each record batch's header only, and reads the columns it needs. The host
//! validates the batch once (the decode it would do anyway to pass columns
//! through), keeps it for the exchange layer's assembly, and copies only the
//! columns asked for into the guest.
//!
//! A guest that misuses the import (reads outside a record batch's `push`, names
//! a column twice or past the schema) is refused, and the refusal ends the stream:
//! the exchange layer reports it after the call.

use crate::bindings::v0_2::mallard::exchanger::input::Host;
use crate::bindings::v0_2::mallard::exchanger::types::IpcMessage;
use crate::store::StoreState;
use arrow_buffer::Buffer;
use bytes::Bytes;
use mallard_exchanger::arrow_array::RecordBatch;
use mallard_exchanger::arrow_schema::SchemaRef;
use mallard_exchanger::ipc::{MessageDecoder, MessageEncoder, has_dictionary};

/// Why a `read-columns` call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRefused {
    /// The guest broke the contract (where it read, what it named).
    Misuse(String),
    /// The client's batch is malformed: the client's error, not the guest's.
    Input(String),
}

impl std::fmt::Display for ReadRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Misuse(m) => f.write_str(m),
            Self::Input(m) => write!(f, "the client's batch is malformed: {m}"),
        }
    }
}

/// One store's input-on-demand state.
pub struct InputOnDemand {
    /// The input schema; set when the session opens.
    schema: Option<SchemaRef>,
    /// Whether the session is in `open` (the only place it may ask).
    opening: bool,
    /// Whether the session asked, and was granted, input on demand.
    granted: bool,
    /// The record batch message being pushed, while its `push` runs.
    current: Option<(Bytes, Bytes)>,
    /// `current`, decoded and validated, once a read or an assembly needed it.
    decoded: Option<RecordBatch>,
    /// The encoder of the last projection read (a session usually reads the
    /// same columns from every batch).
    encoder: Option<(Vec<u32>, MessageEncoder)>,
    refused: Option<ReadRefused>,
}

impl InputOnDemand {
    /// No session yet: nothing granted.
    pub fn new() -> Self {
        Self {
            schema: None,
            opening: false,
            granted: false,
            current: None,
            decoded: None,
            encoder: None,
            refused: None,
        }
    }

    /// The session's `open` runs, over `schema`.
    pub fn opening(&mut self, schema: SchemaRef) {
        self.schema = Some(schema);
        self.opening = true;
    }

    /// `open` returned.
    pub fn opened(&mut self) {
        self.opening = false;
    }

    /// Whether the session reads its input on demand (its pushes get no body).
    pub fn granted(&self) -> bool {
        self.granted
    }

    /// A record batch's `push` starts: `header` and `body` as the client sent them.
    pub fn pushing(&mut self, header: &Bytes, body: &Bytes) {
        self.current = Some((header.clone(), body.clone()));
        self.decoded = None;
        self.refused = None;
    }

    /// The `push` returned: the batch decoded during it (if a read needed it),
    /// and why a read was refused (if one was).
    pub fn pushed(&mut self) -> (Option<RecordBatch>, Option<ReadRefused>) {
        self.current = None;
        (self.decoded.take(), self.refused.take())
    }

    fn grant(&mut self) -> bool {
        let Some(schema) = &self.schema else {
            return false;
        };
        let has_dictionaries = schema
            .fields()
            .iter()
            .any(|f| has_dictionary(f.data_type()));
        if self.opening && !has_dictionaries {
            self.granted = true;
        }
        self.granted && self.opening
    }

    fn read(&mut self, indices: Vec<u32>) -> Result<IpcMessage, ReadRefused> {
        if let Some(refused) = &self.refused {
            return Err(refused.clone());
        }
        let result = self.project(indices);
        if let Err(refused) = &result {
            self.refused = Some(refused.clone());
        }
        result
    }

    fn project(&mut self, indices: Vec<u32>) -> Result<IpcMessage, ReadRefused> {
        let misuse = |m: &str| Err(ReadRefused::Misuse(format!("read-columns {m}")));
        if !self.granted {
            return misuse("called without read-on-demand granted in open");
        }
        let (Some(schema), Some((header, body))) = (&self.schema, &self.current) else {
            return misuse("called outside the push of a record batch");
        };
        let fields = schema.fields().len();
        let mut seen = vec![false; fields];
        for &k in &indices {
            match seen.get_mut(k as usize) {
                None => {
                    return misuse(&format!("named column {k} of an input of {fields} columns"));
                }
                Some(true) => return misuse(&format!("named column {k} twice")),
                Some(seen) => *seen = true,
            }
        }
        if self.decoded.is_none() {
            let mut decoder = MessageDecoder::new(schema.clone());
            self.decoded = decoder
                .decode(header, Buffer::from(body.clone()))
                .map_err(|e| ReadRefused::Input(e.to_string()))?;
        }
        let Some(batch) = &self.decoded else {
            return misuse("called outside the push of a record batch");
        };
        let columns: Vec<usize> = indices.iter().map(|&k| k as usize).collect();
        let projected = batch
            .project(&columns)
            .map_err(|e| ReadRefused::Misuse(format!("read-columns: {e}")))?;
        let encoder = match &mut self.encoder {
            Some((read, encoder)) if *read == indices => encoder,
            slot => {
                let encoder = MessageEncoder::new(projected.schema());
                &mut slot.insert((indices, encoder)).1
            }
        };
        let mut messages = Vec::with_capacity(1);
        encoder
            .encode(&projected, &mut messages)
            .map_err(|e| ReadRefused::Misuse(format!("read-columns: {e}")))?;
        let message = messages
            .pop()
            .expect("a batch without dictionaries encodes as one message");
        Ok(IpcMessage {
            header: message.header,
            body: message.body,
        })
    }
}

impl Default for InputOnDemand {
    fn default() -> Self {
        Self::new()
    }
}

impl Host for StoreState {
    fn read_on_demand(&mut self) -> bool {
        self.input.grant()
    }

    fn read_columns(&mut self, indices: Vec<u32>) -> Result<IpcMessage, String> {
        self.input
            .read(indices)
            .map_err(|refused| refused.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mallard_exchanger::arrow_array::{ArrayRef, Int64Array, StringArray};
    use mallard_exchanger::arrow_schema::{DataType, Field, Schema};
    use mallard_exchanger::ipc::Message;
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            ("a", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            (
                "b",
                Arc::new(StringArray::from(vec!["x", "y", "z"])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    fn message(batch: &RecordBatch) -> (Bytes, Bytes) {
        let mut out = Vec::new();
        MessageEncoder::new(batch.schema())
            .encode(batch, &mut out)
            .unwrap();
        let Message { header, body } = out.pop().unwrap();
        (header.into(), body.into())
    }

    fn granted(schema: SchemaRef) -> InputOnDemand {
        let mut input = InputOnDemand::new();
        input.opening(schema);
        assert!(input.grant());
        input.opened();
        input
    }

    #[test]
    fn only_open_may_ask_and_dictionary_inputs_are_refused() {
        let mut input = InputOnDemand::new();
        assert!(!input.grant(), "before open");
        input.opening(batch().schema());
        input.opened();
        assert!(!input.grant(), "after open");
        assert!(!input.granted());

        let dictionary = Arc::new(Schema::new(vec![Field::new(
            "d",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ))),
            true,
        )]));
        let mut input = InputOnDemand::new();
        input.opening(dictionary);
        assert!(!input.grant(), "a nested dictionary");
    }

    #[test]
    fn reads_give_the_named_columns_in_the_order_named_and_keep_the_decode() {
        let batch = batch();
        let mut input = granted(batch.schema());
        let (header, body) = message(&batch);
        input.pushing(&header, &body);
        let read = input.read(vec![1, 0]).unwrap();
        let schema = Arc::new(batch.schema().project(&[1, 0]).unwrap());
        let got = MessageDecoder::new(schema)
            .decode(&read.header, Buffer::from(read.body))
            .unwrap()
            .unwrap();
        assert_eq!(got, batch.project(&[1, 0]).unwrap());
        let none = input.read(vec![]).unwrap();
        assert!(none.body.is_empty());
        let (decoded, refused) = input.pushed();
        assert_eq!(decoded.unwrap(), batch);
        assert_eq!(refused, None);
    }

    #[test]
    fn misuse_is_refused_and_sticks_for_the_call() {
        let batch = batch();
        let mut input = granted(batch.schema());
        assert!(
            matches!(input.read(vec![0]), Err(ReadRefused::Misuse(m)) if m.contains("outside"))
        );
        let (header, body) = message(&batch);
        for (indices, says) in [
            (vec![2], "column 2 of an input of 2"),
            (vec![0, 0], "twice"),
        ] {
            input.pushing(&header, &body);
            let refused = input.read(indices).unwrap_err();
            assert!(
                matches!(&refused, ReadRefused::Misuse(m) if m.contains(says)),
                "{refused:?}"
            );
            assert!(
                input.read(vec![0]).is_err(),
                "refused for the rest of the call"
            );
            let (_, refused) = input.pushed();
            assert!(refused.is_some());
        }
        let mut ungranted = InputOnDemand::new();
        ungranted.pushing(&header, &body);
        assert!(
            matches!(ungranted.read(vec![0]), Err(ReadRefused::Misuse(m)) if m.contains("without"))
        );
    }

    #[test]
    fn a_malformed_batch_is_the_clients_error() {
        let batch = batch();
        let mut input = granted(batch.schema());
        let (header, body) = message(&batch);
        // The string column's offsets become negative.
        let broken = vec![0xff; body.len()];
        input.pushing(&header, &Bytes::from(broken));
        assert!(matches!(input.read(vec![0]), Err(ReadRefused::Input(_))));
    }
}
