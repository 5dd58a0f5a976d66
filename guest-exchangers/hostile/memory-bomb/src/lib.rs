//! Hostile test guest: allocates without bound in `push`. The host's memory limit
//! must stop it.

use mallard_exchanger::prelude::*;

/// Passes the schema through, then allocates 16 MiB blocks until something gives.
pub struct MemoryBomb(SchemaRef);

impl Exchanger for MemoryBomb {
    const INFO: Info = Info {
        name: "hostile_memory_bomb",
        version: "0.1.0",
        description: "allocates forever",
    };
    fn open(input: SchemaRef, _: &Params) -> Result<Self, ExchangeError> {
        Ok(Self(input))
    }
    fn output_schema(&self) -> SchemaRef {
        self.0.clone()
    }
    fn push(&mut self, _: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![7u8; 16 << 20]));
        }
    }
}

export_exchanger!(MemoryBomb);
