//! Hostile test guest: panics on the first batch (after printing to stderr, which the
//! host captures and logs).

use mallard_exchanger::prelude::*;

/// Passes the schema through, then panics.
pub struct Panics(SchemaRef);

impl Exchanger for Panics {
    const INFO: Info = Info {
        name: "hostile_panic",
        version: "0.1.0",
        description: "panics",
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
    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        eprintln!(
            "hostile_panic: about to panic on a batch of {} rows",
            batch.num_rows()
        );
        panic!("hostile_panic gives up");
    }
}

export_exchanger!(Panics);
