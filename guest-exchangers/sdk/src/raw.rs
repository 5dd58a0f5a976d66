//! The message-level exchanger interface, and the adapter that puts a typed
//! [`Exchanger`] on top of it.
//!
//! Most exchangers implement [`Exchanger`] and never see IPC. [`RawExchanger`] is
//! for the few that want the messages themselves (pass-through without decoding, or
//! the hostile test guests that emit deliberately broken output).

use crate::ipc::{Message, MessageDecoder, MessageEncoder, schema_from_header};
use crate::{ExchangeError, Exchanger, Info, Params};
use arrow_buffer::Buffer;
use std::sync::Arc;

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
}

/// A typed [`Exchanger`] seen as a [`RawExchanger`]: decodes input messages, encodes
/// output batches.
pub struct Typed<E> {
    exchanger: E,
    decoder: MessageDecoder,
    encoder: MessageEncoder,
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
        Ok(Self {
            exchanger,
            decoder: input_decoder(input),
            encoder: MessageEncoder::new(output),
        })
    }

    fn output_schema(&self) -> Vec<u8> {
        self.encoder.schema_header()
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
}
