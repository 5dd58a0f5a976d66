//! The WebAssembly sandbox that runs exchangers.
//!
//! A deliberately narrow wrapper around wasmtime: one [`engine::SandboxEngine`]
//! (compiler, epoch ticker), one [`Limits`] struct with tight documented defaults, a
//! fresh store per instance ([`store`], driven by
//! [`crate::exchange::wasm::WasmSession`]), and validated, compiled components ([`upload`]); which exchangers exist and who
//! owns them is [`crate::exchange::catalog`]'s job. Guests get WASI with every
//! capability denied ([`wasi`]).

pub mod bindings;
pub mod engine;
pub mod limits;
pub mod meter;
pub mod store;
pub mod upload;
pub mod wasi;

pub use limits::Limits;
