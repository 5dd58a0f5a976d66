//! Hostile test guest: its `describe()` returns a 1242-byte description, more
//! than the host stores with a version.

use mallard_exchanger::prelude::*;

/// Passes batches through; only its description is hostile.
pub struct LongDescription(Vec<u8>);

impl RawExchanger for LongDescription {
    const INFO: Info = Info {
        name: "hostile_long_description",
        version: "0.1.0",
        description: "a description longer than the host keeps: long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long long ",
    };
    fn open(input_schema: &[u8], _: &Params) -> Result<Self, ExchangeError> {
        Ok(Self(input_schema.to_vec()))
    }
    fn output_schema(&self) -> Vec<u8> {
        self.0.clone()
    }
    fn push(&mut self, message: Message) -> Result<Vec<Message>, ExchangeError> {
        Ok(vec![message])
    }
    fn finish(&mut self) -> Result<Vec<Message>, ExchangeError> {
        Ok(Vec::new())
    }
}

export_raw_exchanger!(LongDescription);
