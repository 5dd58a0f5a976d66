//! Hostile test guest: recurses without bound. The host's wasm stack limit must stop it.

use mallard_exchanger::prelude::*;

/// Passes the schema through, then recurses until the stack runs out.
pub struct DeepRecursion(SchemaRef);

/// Recurses `limit` times. No locals have their address taken, so the frames live
/// on the wasm stack (which the host limits), not Rust's shadow stack in linear
/// memory; the multiply-add keeps LLVM from turning the recursion into a loop.
#[inline(never)]
fn descend(depth: u64, limit: u64) -> u64 {
    if depth == limit {
        return depth;
    }
    descend(depth + 1, limit)
        .wrapping_mul(depth | 1)
        .wrapping_add(depth)
}

impl Exchanger for DeepRecursion {
    const INFO: Info = Info {
        name: "hostile_deep_recursion",
        version: "0.1.0",
        description: "recurses forever",
    };
    fn open(input: SchemaRef, _: &Params) -> Result<Self, ExchangeError> {
        Ok(Self(input))
    }
    fn output_schema(&self) -> SchemaRef {
        self.0.clone()
    }
    fn push(&mut self, _: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        std::hint::black_box(descend(0, std::hint::black_box(u64::MAX)));
        Ok(Vec::new())
    }
}

export_exchanger!(DeepRecursion);
