//! Hostile test guest: spins forever in `push`. The host's CPU deadline must stop it.

use mallard_exchanger::prelude::*;

/// Passes the schema through, then never returns from `push`.
pub struct EndlessLoop(SchemaRef);

impl Exchanger for EndlessLoop {
    const INFO: Info = Info {
        name: "hostile_endless_loop",
        version: "0.1.0",
        description: "loops forever",
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
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export_exchanger!(EndlessLoop);
