//! Mallard's error type and its mapping to gRPC status codes.
//!
//! Every error a client can cause maps to a precise code; `Internal` is kept for
//! faults of the server itself.

use tonic::Status;

/// Everything that can go wrong serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed request: bad SQL, bad descriptor, bad JSON, bad IPC, bad component.
    #[error("{0}")]
    InvalidArgument(String),
    /// No or bad credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated but not allowed.
    #[error("{0}")]
    PermissionDenied(String),
    /// Unknown table, exchanger or action.
    #[error("{0}")]
    NotFound(String),
    /// Already exists (e.g. a table created concurrently).
    #[error("{0}")]
    AlreadyExists(String),
    /// The request cannot run in the current state (e.g. removing a version an
    /// exchange is running on).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A limit was hit: memory, size, count.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A time limit was hit.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// An exchanger failed or trapped; the stream is over, the server is fine.
    #[error("{0}")]
    Aborted(String),
    /// The other side went away or the server is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The request was cancelled.
    #[error("{0}")]
    Cancelled(String),
    /// A request the server understands but does not support (a Flight SQL
    /// feature Mallard does not offer).
    #[error("{0}")]
    Unimplemented(String),
    /// A bug or an environment failure on the server.
    #[error("{0}")]
    Internal(String),
}

impl From<mallard_protocol::ProtocolError> for Error {
    fn from(e: mallard_protocol::ProtocolError) -> Self {
        use mallard_protocol::ProtocolError as P;
        match e {
            P::Invalid(m) => Self::InvalidArgument(m),
            P::UnknownAction(m) => Self::NotFound(m),
            P::BadCredentials(m) => Self::Unauthenticated(m),
            P::TooLarge(m) => Self::ResourceExhausted(m),
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC code this error maps to.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::Aborted(_) => Code::Aborted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Cancelled(_) => Code::Cancelled,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// Prefixes the message with context, keeping the code.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        let wrap = |m: String| format!("{what}: {m}");
        match self {
            Self::InvalidArgument(m) => Self::InvalidArgument(wrap(m)),
            Self::Unauthenticated(m) => Self::Unauthenticated(wrap(m)),
            Self::PermissionDenied(m) => Self::PermissionDenied(wrap(m)),
            Self::NotFound(m) => Self::NotFound(wrap(m)),
            Self::AlreadyExists(m) => Self::AlreadyExists(wrap(m)),
            Self::FailedPrecondition(m) => Self::FailedPrecondition(wrap(m)),
            Self::ResourceExhausted(m) => Self::ResourceExhausted(wrap(m)),
            Self::DeadlineExceeded(m) => Self::DeadlineExceeded(wrap(m)),
            Self::Aborted(m) => Self::Aborted(wrap(m)),
            Self::Unavailable(m) => Self::Unavailable(wrap(m)),
            Self::Cancelled(m) => Self::Cancelled(wrap(m)),
            Self::Unimplemented(m) => Self::Unimplemented(wrap(m)),
            Self::Internal(m) => Self::Internal(wrap(m)),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        use tonic::Code;
        let m = s.message().to_owned();
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument(m),
            Code::FailedPrecondition => Self::FailedPrecondition(m),
            Code::Unauthenticated => Self::Unauthenticated(m),
            Code::PermissionDenied => Self::PermissionDenied(m),
            Code::NotFound => Self::NotFound(m),
            Code::AlreadyExists => Self::AlreadyExists(m),
            Code::ResourceExhausted => Self::ResourceExhausted(m),
            Code::DeadlineExceeded => Self::DeadlineExceeded(m),
            Code::Aborted => Self::Aborted(m),
            Code::Unavailable => Self::Unavailable(m),
            Code::Cancelled => Self::Cancelled(m),
            Code::Unimplemented => Self::Unimplemented(m),
            _ => Self::Internal(m),
        }
    }
}

impl From<duckdb::Error> for Error {
    fn from(e: duckdb::Error) -> Self {
        crate::db::errors::classify(e)
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self::InvalidArgument(format!("arrow: {e}"))
    }
}

impl From<arrow_flight::error::FlightError> for Error {
    fn from(e: arrow_flight::error::FlightError) -> Self {
        use arrow_flight::error::FlightError;
        match e {
            FlightError::Tonic(s) => Self::from(*s),
            FlightError::Arrow(a) => Self::from(a),
            other => Self::InvalidArgument(other.to_string()),
        }
    }
}
