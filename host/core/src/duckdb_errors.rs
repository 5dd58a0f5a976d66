//! Classifying DuckDB errors into [`ErrorKind`]s by DuckDB's own error class
//! (feature `duckdb`; it lives here so `?` converts `duckdb::Error`).

use crate::error::{Error, ErrorKind};

impl From<duckdb::Error> for Error {
    fn from(e: duckdb::Error) -> Self {
        classify(e)
    }
}

/// Maps a DuckDB error to the [`Error`] kind a client should see, keeping DuckDB's
/// message. DuckDB prefixes messages with its error class (`Parser Error: ...`).
pub fn classify(e: duckdb::Error) -> Error {
    let message = e.to_string();
    classify_message(message).with_source(e)
}

/// Marks an error raised from inside DuckDB (a table function's callback), so
/// the kind it had survives DuckDB's message wrapping: `[mallard:KindName] message`.
pub fn tagged(e: &Error) -> String {
    format!("{TAG}{}] {e}", e.kind().name())
}

const TAG: &str = "[mallard:";

/// The error a [`tagged`] message carried, if it is one.
fn untag(message: &str) -> Option<Error> {
    let (_, rest) = message.split_once(TAG)?;
    let (kind, text) = rest.split_once("] ")?;
    Some(Error::new(ErrorKind::from_name(kind)?, text))
}

/// Classifies an error by the type DuckDB's C API reports with it
/// (`duckdb_result_error_type`). The type decides, except where one type
/// covers kinds a client must tell apart: a catalog error is a missing or an
/// existing object, a transaction error a conflict or a write refused by a
/// read-only transaction; those, and errors without a type, read the message.
pub fn classify_typed(error_type: duckdb::ffi::duckdb_error_type, message: String) -> Error {
    use duckdb::ffi as t;
    if let Some(e) = untag(&message) {
        return e;
    }
    let kind = match error_type {
        t::duckdb_error_type_DUCKDB_ERROR_INTERRUPT => ErrorKind::Cancelled,
        t::duckdb_error_type_DUCKDB_ERROR_OUT_OF_MEMORY => ErrorKind::ResourceExhausted,
        t::duckdb_error_type_DUCKDB_ERROR_PERMISSION => ErrorKind::PermissionDenied,
        t::duckdb_error_type_DUCKDB_ERROR_INTERNAL
        | t::duckdb_error_type_DUCKDB_ERROR_FATAL
        | t::duckdb_error_type_DUCKDB_ERROR_IO => ErrorKind::Internal,
        t::duckdb_error_type_DUCKDB_ERROR_INVALID
        | t::duckdb_error_type_DUCKDB_ERROR_CATALOG
        | t::duckdb_error_type_DUCKDB_ERROR_CONSTRAINT
        | t::duckdb_error_type_DUCKDB_ERROR_TRANSACTION => return classify_message(message),
        // Parser, binder, conversion, invalid input, not implemented...: all
        // caused by what the client sent.
        _ => ErrorKind::InvalidArgument,
    };
    Error::new(kind, message)
}

/// Classifies an error of DuckDB's v2 C API by its code (`DUCKDB_V2_ERROR` in
/// `duckdb_v2.h`), reading the message only where the code is shared by kinds
/// (as [`classify_typed`]) or generic.
pub fn classify_v2(code: u32, message: String) -> Error {
    if let Some(e) = untag(&message) {
        return e;
    }
    let kind = match code {
        8003 => ErrorKind::Cancelled,              // RUNTIME_INTERRUPT
        3002 => ErrorKind::ResourceExhausted,      // RESOURCE_OUT_OF_MEMORY
        7003 => ErrorKind::PermissionDenied,       // CONFIGURATION_PERMISSION
        8001 | 8002 | 8004 => ErrorKind::Internal, // RUNTIME_INTERNAL, _FATAL, _NULL_POINTER
        // INPUT_*, TYPE_*, QUERY_*: what the client sent.
        2001..=2999 | 4001..=4999 | 5001..=5999 => ErrorKind::InvalidArgument,
        // API (generic), IO_* (a refused file is a permission error in text
        // only), DATABASE_CATALOG/_TRANSACTION/_CONSTRAINT (shared), the rest.
        _ => return classify_message(message),
    };
    Error::new(kind, message)
}

/// The classification on DuckDB's message text alone, for errors that come
/// without a type (duckdb-rs's, the C++ shims').
pub fn classify_message(message: String) -> Error {
    if let Some(e) = untag(&message) {
        return e;
    }
    let starts = |p: &str| message.starts_with(p) || message.contains(&format!(": {p}"));
    if message.contains("does not exist") && starts("Catalog Error") {
        Error::not_found(message)
    } else if starts("Permission Error") || message.contains("launched in read-only mode") {
        // The second: a non-admin's read-only transaction refused a write that
        // DuckDB's statement type did not show (EXPLAIN ANALYZE of DML, nextval).
        Error::permission_denied(message)
    } else if starts("Out of Memory Error") {
        Error::resource_exhausted(message)
    } else if starts("INTERRUPT Error") || message.contains("Interrupted") {
        Error::cancelled(message)
    } else if (starts("Constraint Error") || starts("Catalog Error"))
        && message.contains("already exists")
    {
        Error::already_exists(message)
    } else if starts("INTERNAL Error") || starts("FATAL Error") || starts("IO Error") {
        Error::internal(message)
    } else if starts("TransactionContext Error") {
        Error::aborted(message)
    } else {
        // Parser, Binder, Catalog, Conversion, Constraint, Invalid Input, Not
        // implemented...: all caused by what the client sent.
        Error::invalid_argument(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tagged_error_keeps_its_status_through_duckdb_wrapping() {
        let e = Error::resource_exhausted("guest memory");
        let wrapped = format!("Invalid Input Error: {}", tagged(&e));
        let back = classify_message(wrapped);
        assert_eq!(back.kind(), ErrorKind::ResourceExhausted);
        assert_eq!(back.to_string(), e.to_string());
        assert_eq!(
            classify_message("Parser Error: syntax error".into()).kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            classify_message("Invalid Input Error: [mallard:x] y".into()).kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn the_type_decides_and_the_text_only_splits_shared_types() {
        use duckdb::ffi as t;
        let kind = |ty, m: &str| classify_typed(ty, m.to_owned()).kind();
        assert_eq!(
            kind(
                t::duckdb_error_type_DUCKDB_ERROR_PARSER,
                "syntax error at or near \"Interrupted\""
            ),
            ErrorKind::InvalidArgument,
            "a client's text cannot choose the kind"
        );
        assert_eq!(
            kind(t::duckdb_error_type_DUCKDB_ERROR_INTERRUPT, "x"),
            ErrorKind::Cancelled
        );
        assert_eq!(
            kind(t::duckdb_error_type_DUCKDB_ERROR_OUT_OF_MEMORY, "x"),
            ErrorKind::ResourceExhausted
        );
        assert_eq!(
            kind(
                t::duckdb_error_type_DUCKDB_ERROR_CATALOG,
                "Catalog Error: Table with name t does not exist!"
            ),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(
                t::duckdb_error_type_DUCKDB_ERROR_CATALOG,
                "Catalog Error: Table with name \"t\" already exists!"
            ),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind(
                t::duckdb_error_type_DUCKDB_ERROR_TRANSACTION,
                "TransactionContext Error: Cannot write to database \"memory\" - transaction is launched in read-only mode"
            ),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            kind(
                t::duckdb_error_type_DUCKDB_ERROR_TRANSACTION,
                "TransactionContext Error: Conflict on update"
            ),
            ErrorKind::Aborted
        );
        assert_eq!(
            classify_v2(5002, "Parser Error: near \"Permission Error\"".into()).kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            classify_v2(8003, "INTERRUPT Error".into()).kind(),
            ErrorKind::Cancelled
        );
        assert_eq!(
            classify_v2(
                6001,
                "Catalog Error: Table with name x does not exist!".into()
            )
            .kind(),
            ErrorKind::NotFound
        );
        let tagged = tagged(&Error::deadline_exceeded("guest deadline"));
        assert_eq!(
            kind(t::duckdb_error_type_DUCKDB_ERROR_INVALID_INPUT, &tagged),
            ErrorKind::DeadlineExceeded
        );
    }
}
