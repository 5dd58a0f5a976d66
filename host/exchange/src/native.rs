//! The sandbox-off path: a built-in exchanger's native build, driven through the
//! same IPC messages as the wasm path so the two differ only in the sandbox.

use crate::{ExchangeSession, Outgoing, decode_input, exchanger_error};
use arrow_flight::FlightData;
use bytes::Bytes;
use mallard_assemble::pieces::PieceEncoder;
use mallard_core::{Error, Result};
use mallard_exchanger::ipc::{MessageDecoder, MessageEncoder};
use mallard_exchanger::native::{Builtin, Session};
use mallard_exchanger::{Params, arrow_schema::SchemaRef};

/// A native session of a built-in exchanger.
pub struct NativeSession {
    name: &'static str,
    session: Box<dyn Session>,
    decoder: MessageDecoder,
    encoder: MessageEncoder,
    /// Encodes output in pieces (the batches' own buffers) unless its schema
    /// has dictionaries; `encoder` tracks those.
    pieces: Option<PieceEncoder>,
    schema_header: Bytes,
    batch_index: u64,
}

impl NativeSession {
    /// Opens a native session for `input`.
    pub fn open(
        builtin: &Builtin,
        input: SchemaRef,
        params: Vec<(String, String)>,
    ) -> Result<Self> {
        let name = builtin.info.name;
        let session = builtin
            .open(input.clone(), &Params::new(params))
            .map_err(|e| exchanger_error(name, "open", e))?;
        let encoder = MessageEncoder::new(session.output_schema());
        Ok(Self {
            name,
            pieces: PieceEncoder::new(&session.output_schema()).ok(),
            schema_header: Bytes::from(encoder.schema_header()),
            encoder,
            decoder: MessageDecoder::new(input),
            session,
            batch_index: 0,
        })
    }

    fn encode(&mut self, batches: Vec<arrow::array::RecordBatch>) -> Result<Vec<Outgoing>> {
        let failed =
            |e: &dyn std::fmt::Display| Error::aborted(format!("exchanger {:?}: {e}", self.name));
        if let Some(pieces) = &mut self.pieces {
            let mut out = Vec::new();
            for batch in &batches {
                pieces
                    .encode(batch, usize::MAX, &mut out)
                    .map_err(|e| failed(&e))?;
            }
            return Ok(out);
        }
        let mut messages = Vec::new();
        for batch in &batches {
            self.encoder
                .encode(batch, &mut messages)
                .map_err(|e| failed(&e))?;
        }
        Ok(messages.into_iter().map(crate::outgoing).collect())
    }
}

impl ExchangeSession for NativeSession {
    fn schema_message(&self) -> FlightData {
        FlightData {
            data_header: self.schema_header.clone(),
            ..Default::default()
        }
    }

    fn push(&mut self, header: &Bytes, body: &Bytes) -> Result<Vec<Outgoing>> {
        let what = format!("batch {}", self.batch_index);
        self.batch_index += 1;
        let Some(batch) = decode_input(&mut self.decoder, header, body, &what)? else {
            return Ok(Vec::new());
        };
        let out = self
            .session
            .push(batch)
            .map_err(|e| exchanger_error(self.name, &what, e))?;
        self.encode(out)
    }

    fn finish(&mut self) -> Result<Vec<Outgoing>> {
        let out = self
            .session
            .finish()
            .map_err(|e| exchanger_error(self.name, "finish", e))?;
        self.encode(out)
    }

    fn stateless(&self) -> bool {
        self.session.stateless()
    }
}
