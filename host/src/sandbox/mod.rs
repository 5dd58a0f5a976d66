//! The WebAssembly sandbox that runs exchangers.
//!
//! A deliberately narrow wrapper around wasmtime: one [`engine::SandboxEngine`]
//! (compiler, epoch ticker), one [`Limits`] struct with tight documented defaults, a
//! fresh store and instance per exchange stream ([`session::WasmSession`]), and a
//! [`registry::Registry`] of validated, compiled components kept on disk. Guests get
//! WASI with every capability denied ([`wasi`]).

pub mod bindings;
pub mod engine;
pub mod limits;
pub mod meter;
pub mod registry;
pub mod session;
pub mod store;
pub mod upload;
pub mod wasi;

pub use limits::Limits;
