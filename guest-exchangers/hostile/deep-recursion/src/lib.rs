//! Hostile test guest: recurses without bound. The host's wasm stack limit must stop it.

use mallard_exchanger::prelude::*;

/// Passes the schema through, then recurses until the stack runs out.
pub struct DeepRecursion(SchemaRef);

#[allow(unconditional_recursion)] // the point of this guest
fn descend(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 32]);
    descend(depth + 1).wrapping_add(frame[depth as usize % 32])
}

impl Exchanger for DeepRecursion {
    const INFO: Info = Info { name: "hostile_deep_recursion", version: "0.1.0", description: "recurses forever" };
    fn open(input: SchemaRef, _: &Params) -> Result<Self, ExchangeError> {
        Ok(Self(input))
    }
    fn output_schema(&self) -> SchemaRef {
        self.0.clone()
    }
    fn push(&mut self, _: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        std::hint::black_box(descend(0));
        Ok(Vec::new())
    }
}

export_exchanger!(DeepRecursion);
