//! The WebAssembly sandbox that runs exchangers.
//!
//! A deliberately narrow wrapper around wasmtime: one [`engine::SandboxEngine`]
//! (compiler, epoch ticker), one [`Limits`] struct with tight documented defaults, a
//! fresh store per instance ([`store`], driven by `mallard-exchange`'s wasm
//! session), and validated, compiled components ([`upload`]); which exchangers
//! exist and who owns them is `mallard-exchange`'s catalogue's job. Guests get
//! WASI with every capability denied ([`wasi`]). No DuckDB, no tonic.

pub mod bindings;
pub mod emit;
pub mod engine;
pub mod input;
pub mod limits;
pub mod meter;
pub mod store;
pub mod upload;
pub mod wasi;

pub use limits::Limits;
