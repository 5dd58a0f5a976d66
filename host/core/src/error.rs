//! Mallard's one error type: what kind of failure it is (which decides the gRPC
//! code, in exactly one place: [`ErrorKind::code`]), the message a client sees,
//! and the cause it came from, kept for logs and `source()` chains.
//!
//! Every error a client can cause has a precise kind; [`ErrorKind::Internal`] is
//! kept for faults of the server itself.

use std::fmt;

/// What kind of failure an [`Error`] is; each kind is one gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Malformed request: bad SQL, bad descriptor, bad JSON, bad IPC, bad component.
    InvalidArgument,
    /// No or bad credentials.
    Unauthenticated,
    /// Authenticated but not allowed.
    PermissionDenied,
    /// Unknown table, exchanger or action.
    NotFound,
    /// Already exists (e.g. a table created concurrently).
    AlreadyExists,
    /// The request cannot run in the current state (e.g. removing a version an
    /// exchange is running on).
    FailedPrecondition,
    /// A limit was hit: memory, size, count.
    ResourceExhausted,
    /// A time limit was hit.
    DeadlineExceeded,
    /// An exchanger failed or trapped; the stream is over, the server is fine.
    Aborted,
    /// The other side went away or the server is shutting down.
    Unavailable,
    /// The request was cancelled.
    Cancelled,
    /// A request the server understands but does not support (a Flight SQL
    /// feature Mallard does not offer).
    Unimplemented,
    /// A bug or an environment failure on the server.
    Internal,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 13] = [
        Self::InvalidArgument,
        Self::Unauthenticated,
        Self::PermissionDenied,
        Self::NotFound,
        Self::AlreadyExists,
        Self::FailedPrecondition,
        Self::ResourceExhausted,
        Self::DeadlineExceeded,
        Self::Aborted,
        Self::Unavailable,
        Self::Cancelled,
        Self::Unimplemented,
        Self::Internal,
    ];

    /// The kind's stable name (its variant's name), used where an error must
    /// cross a text-only boundary such as a DuckDB error message.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidArgument => "InvalidArgument",
            Self::Unauthenticated => "Unauthenticated",
            Self::PermissionDenied => "PermissionDenied",
            Self::NotFound => "NotFound",
            Self::AlreadyExists => "AlreadyExists",
            Self::FailedPrecondition => "FailedPrecondition",
            Self::ResourceExhausted => "ResourceExhausted",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::Aborted => "Aborted",
            Self::Unavailable => "Unavailable",
            Self::Cancelled => "Cancelled",
            Self::Unimplemented => "Unimplemented",
            Self::Internal => "Internal",
        }
    }

    /// The kind named `name` (see [`ErrorKind::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cause kept behind an [`Error`].
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong serving a request: a kind, the client's message
/// and, when there is one, the cause.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
}

/// Shorthand for results in Mallard's crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! constructors {
    ($($name:ident => $kind:ident),* $(,)?) => {
        $(
            #[doc = concat!("An [`ErrorKind::", stringify!($kind), "`] error with `message`.")]
            pub fn $name(message: impl Into<String>) -> Self {
                Self::new(ErrorKind::$kind, message)
            }
        )*
    };
}

impl Error {
    /// An error of `kind` with `message` for the client.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    constructors! {
        invalid_argument => InvalidArgument,
        unauthenticated => Unauthenticated,
        permission_denied => PermissionDenied,
        not_found => NotFound,
        already_exists => AlreadyExists,
        failed_precondition => FailedPrecondition,
        resource_exhausted => ResourceExhausted,
        deadline_exceeded => DeadlineExceeded,
        aborted => Aborted,
        unavailable => Unavailable,
        cancelled => Cancelled,
        unimplemented => Unimplemented,
        internal => Internal,
    }

    /// Keeps `source` as this error's cause.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message a client sees.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with context, keeping the kind and the cause.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<mallard_protocol::ProtocolError> for Error {
    fn from(e: mallard_protocol::ProtocolError) -> Self {
        use mallard_protocol::ProtocolError as P;
        let kind = match &e {
            P::Invalid(_) => ErrorKind::InvalidArgument,
            P::UnknownAction(_) => ErrorKind::NotFound,
            P::BadCredentials(_) => ErrorKind::Unauthenticated,
            P::TooLarge(_) => ErrorKind::ResourceExhausted,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Self::invalid_argument(format!("arrow: {e}")).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn context_keeps_the_kind_and_the_cause() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::internal("cannot write")
            .with_source(io)
            .context("saving t");
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(e.to_string(), "saving t: cannot write");
        assert_eq!(e.source().unwrap().to_string(), "disk on fire");
    }

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ErrorKind::from_name("Nope"), None);
    }

    #[test]
    fn an_arrow_error_is_the_clients_and_keeps_its_cause() {
        let e = Error::from(arrow_schema::ArrowError::ParseError("bad".into()));
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.source().is_some());
    }
}
