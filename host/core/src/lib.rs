//! What every layer of the Mallard server shares, and nothing else:
//!
//! - [`Error`]: one error type, a kind ([`ErrorKind`]), the client's message and
//!   the cause; with feature `grpc`, the kind's one mapping to a gRPC code.
//! - with feature `duckdb`, `duckdb_errors`: DuckDB's error classes mapped to kinds.
//! - [`gauges`]: live-resource counts that `healthcheck` reports, so leaks show.

#[cfg(feature = "duckdb")]
pub mod duckdb_errors;
mod error;
pub mod gauges;
#[cfg(feature = "grpc")]
mod grpc;

pub use error::{Error, ErrorKind, Result, Source};
