//! `add_processed` exactly as the built-in, but exported for contract 0.1
//! (output returned from each call, every column copied back): the component
//! the tests use to show that 0.1 components keep uploading and running.

#[path = "../../../add-processed/src/lib.rs"]
pub mod add_processed;
