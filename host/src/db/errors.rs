//! Classifying DuckDB errors into gRPC-worthy kinds by DuckDB's own error class.

use crate::error::Error;

/// Maps a DuckDB error to the [`Error`] kind a client should see, keeping DuckDB's
/// message. DuckDB prefixes messages with its error class (`Parser Error: ...`).
pub fn classify(e: duckdb::Error) -> Error {
    let message = e.to_string();
    classify_message(message)
}

/// The classification itself, on DuckDB's message text.
pub fn classify_message(message: String) -> Error {
    let starts = |p: &str| message.starts_with(p) || message.contains(&format!(": {p}"));
    if message.contains("does not exist") && starts("Catalog Error") {
        Error::NotFound(message)
    } else if starts("Permission Error") || message.contains("launched in read-only mode") {
        // The second: a non-admin's read-only transaction refused a write that
        // DuckDB's statement type did not show (EXPLAIN ANALYZE of DML, nextval).
        Error::PermissionDenied(message)
    } else if starts("Out of Memory Error") {
        Error::ResourceExhausted(message)
    } else if starts("INTERRUPT Error") || message.contains("Interrupted") {
        Error::Cancelled(message)
    } else if starts("Constraint Error") && message.contains("already exists") {
        Error::AlreadyExists(message)
    } else if starts("INTERNAL Error") || starts("FATAL Error") || starts("IO Error") {
        Error::Internal(message)
    } else if starts("TransactionContext Error") {
        Error::Aborted(message)
    } else {
        // Parser, Binder, Catalog, Conversion, Constraint, Invalid Input, Not
        // implemented...: all caused by what the client sent.
        Error::InvalidArgument(message)
    }
}
