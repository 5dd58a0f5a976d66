//! The error an exchanger returns to refuse its parameters or input.

use std::fmt;

/// Why an exchanger refused to go on. The host maps each kind to a gRPC status
/// (`InvalidParams`/`InvalidInput` → InvalidArgument, `Failed` → Aborted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// The parameters given to `open` are wrong.
    InvalidParams(String),
    /// The input schema or a batch is not what this exchanger works on.
    InvalidInput(String),
    /// Anything else.
    Failed(String),
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidParams(m) => write!(f, "invalid params: {m}"),
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for ExchangeError {}

impl From<arrow_schema::ArrowError> for ExchangeError {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Self::Failed(e.to_string())
    }
}
