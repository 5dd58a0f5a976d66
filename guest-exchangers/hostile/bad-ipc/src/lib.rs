//! Hostile test guest: answers every message with bytes that are not Arrow IPC.

use mallard_exchanger::prelude::*;

/// Declares its input schema as output, then emits garbage.
pub struct BadIpc(Vec<u8>);

impl RawExchanger for BadIpc {
    const INFO: Info = Info {
        name: "hostile_bad_ipc",
        version: "0.1.0",
        description: "emits malformed IPC",
    };
    fn open(input_schema: &[u8], _: &Params) -> Result<Self, ExchangeError> {
        Ok(Self(input_schema.to_vec()))
    }
    fn output_schema(&self) -> Vec<u8> {
        self.0.clone()
    }
    fn push(&mut self, message: Message) -> Result<Vec<Message>, ExchangeError> {
        let garbage = message
            .header
            .iter()
            .map(|b| b.wrapping_mul(31) ^ 0x5a)
            .collect();
        Ok(vec![Message {
            header: garbage,
            body: message.body,
        }])
    }
    fn finish(&mut self) -> Result<Vec<Message>, ExchangeError> {
        Ok(Vec::new())
    }
}

export_raw_exchanger!(BadIpc);
