//! What Mallard clients send, parsed and validated: table names, tickets and
//! descriptors, `do_exchange` requests, `do_action` bodies, Flight SQL commands and
//! parameters, Basic credentials, users files and the gRPC-framed FlightData of a
//! client's stream; and, the other way, a Flight message whose body leaves in
//! pieces ([`outgoing`]).
//!
//! Everything here runs on untrusted bytes before the server does any work, so it
//! is kept free of DuckDB, wasmtime and I/O: `fuzz/` runs it under libFuzzer on
//! its own, and the server maps [`ProtocolError`] to gRPC statuses.

pub mod action;
pub mod body_pool;
pub mod credentials;
pub mod descriptor;
pub mod exchange;
pub mod exchanger_ref;
pub mod flight_data;
pub mod flight_sql;
pub mod fuzzing;
pub mod outgoing;
pub mod publish;
pub mod push;
pub mod receipt;
pub mod table_name;
pub mod upload;
pub mod users;

pub use action::{ACTIONS, ActionRequest};
pub use exchange::{ExchangeRequest, MAX_STAGES, Order, Sandbox, Stage};
pub use exchanger_ref::{ExchangerRef, Namespace, Pin};
pub use publish::PublishRequest;
pub use push::{Partition, PushRequest, PushTarget};
pub use receipt::{Receipt, StageReceipt};
pub use table_name::{TableName, quote, quote_literal};
pub use upload::{UploadOptions, UploadRequest};

/// Why a request was refused before it reached the database or a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The request is malformed; the message says how (InvalidArgument).
    #[error("{0}")]
    Invalid(String),
    /// The action does not exist (NotFound).
    #[error("{0}")]
    UnknownAction(String),
    /// Credentials that cannot be decoded (Unauthenticated).
    #[error("{0}")]
    BadCredentials(String),
    /// Well-formed but beyond a documented bound (ResourceExhausted).
    #[error("{0}")]
    TooLarge(String),
}

/// Results of parsing.
pub type Result<T> = std::result::Result<T, ProtocolError>;

pub(crate) fn invalid(message: impl Into<String>) -> ProtocolError {
    ProtocolError::Invalid(message.into())
}
