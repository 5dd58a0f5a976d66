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
    /// Claims to be stateless, as a hostile guest would, to be given more
    /// instances: each must be stopped as one would.
    fn stateless(&self) -> bool {
        true
    }
    fn push(&mut self, _: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        // Touch one byte per wasm page: every page is really committed, but the
        // limit is reached in milliseconds, not after a memset of the whole budget
        // (which, on a loaded machine, met the CPU deadline first).
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = Vec::<u8>::with_capacity(16 << 20);
            for page in (0..block.capacity()).step_by(64 << 10) {
                block.spare_capacity_mut()[page].write(7);
            }
            hoard.push(std::hint::black_box(block));
        }
    }
}

export_exchanger!(MemoryBomb);
