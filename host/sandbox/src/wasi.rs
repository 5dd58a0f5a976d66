//! WASI for guests, with every capability denied (and contract 0.2's `emit`,
//! the one non-WASI import, linked beside it).
//!
//! Rust guests built for `wasm32-wasip2` import WASI for their standard library, so
//! the host links it, but the context grants nothing: no preopened directories, no
//! environment, no arguments, no sockets, stdin closed, stdout/stderr captured. Timers
//! are worse than useless inside a batch transform and a blocking sleep would run in
//! host code where the epoch deadline cannot reach it, so subscribing to a clock
//! traps with [`CapabilityDenied`].

use crate::store::StoreState;
use mallard_core::{Error, Result};
use wasmtime::Engine;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::DynPollable;

/// The WASI version whose clock functions are replaced.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A guest tried to use a capability Mallard does not grant.
#[derive(Debug, Clone)]
pub struct CapabilityDenied(pub &'static str);

impl std::fmt::Display for CapabilityDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "capability denied: {}", self.0)
    }
}

impl std::error::Error for CapabilityDenied {}

/// A linker with deny-all WASI.
pub fn deny_all_linker(engine: &Engine) -> Result<Linker<StoreState>> {
    let wasm_err = |e: wasmtime::Error| Error::internal(format!("linking WASI: {e:#}"));
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wasm_err)?;
    // Contract 0.2's `emit` and `input`, the imports that are not WASI.
    crate::bindings::v0_2::mallard::exchanger::output::add_to_linker::<
        StoreState,
        wasmtime::component::HasSelf<StoreState>,
    >(&mut linker, |state| state)
    .map_err(wasm_err)?;
    crate::bindings::v0_2::mallard::exchanger::input::add_to_linker::<
        StoreState,
        wasmtime::component::HasSelf<StoreState>,
    >(&mut linker, |state| state)
    .map_err(wasm_err)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK).map_err(wasm_err)?;
    clock
        .func_wrap(
            "subscribe-duration",
            |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
                Err(wasmtime::Error::new(CapabilityDenied(
                    "timers and sleeping (wasi:clocks subscribe-duration)",
                )))
            },
        )
        .map_err(wasm_err)?;
    clock
        .func_wrap(
            "subscribe-instant",
            |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
                Err(wasmtime::Error::new(CapabilityDenied(
                    "timers and sleeping (wasi:clocks subscribe-instant)",
                )))
            },
        )
        .map_err(wasm_err)?;
    Ok(linker)
}
