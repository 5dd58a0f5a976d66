//! Classifying DuckDB errors into gRPC-worthy kinds by DuckDB's own error class.

use crate::error::Error;

/// Maps a DuckDB error to the [`Error`] kind a client should see, keeping DuckDB's
/// message. DuckDB prefixes messages with its error class (`Parser Error: ...`).
pub fn classify(e: duckdb::Error) -> Error {
    let message = e.to_string();
    classify_message(message)
}

/// Marks an error raised from inside DuckDB (a table function's callback), so
/// the status it had survives DuckDB's message wrapping: `[mallard:CODE] message`.
pub fn tagged(e: &Error) -> String {
    format!("{TAG}{}] {e}", e.code() as i32)
}

const TAG: &str = "[mallard:";

/// The error a [`tagged`] message carried, if it is one.
fn untag(message: &str) -> Option<Error> {
    let (_, rest) = message.split_once(TAG)?;
    let (code, text) = rest.split_once("] ")?;
    let code = tonic::Code::from(code.parse::<i32>().ok()?);
    Some(tonic::Status::new(code, text).into())
}

/// The classification itself, on DuckDB's message text.
pub fn classify_message(message: String) -> Error {
    if let Some(e) = untag(&message) {
        return e;
    }
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
    } else if (starts("Constraint Error") || starts("Catalog Error"))
        && message.contains("already exists")
    {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tagged_error_keeps_its_status_through_duckdb_wrapping() {
        let e = Error::ResourceExhausted("guest memory".into());
        let wrapped = format!("Invalid Input Error: {}", tagged(&e));
        let back = classify_message(wrapped);
        assert_eq!(back.code(), tonic::Code::ResourceExhausted);
        assert_eq!(back.to_string(), e.to_string());
        assert_eq!(
            classify_message("Parser Error: syntax error".into()).code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            classify_message("Invalid Input Error: [mallard:x] y".into()).code(),
            tonic::Code::InvalidArgument
        );
    }
}
