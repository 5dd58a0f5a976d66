//! The one mapping between [`ErrorKind`] and gRPC codes, and the conversions
//! between [`Error`] and what tonic and arrow-flight use (feature `grpc`; the
//! layers below the wire — DuckDB, the sandbox — build without tonic).

use crate::error::{Error, ErrorKind};
use tonic::{Code, Status};

impl ErrorKind {
    /// The gRPC code of this kind.
    pub fn code(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Aborted => Code::Aborted,
            Self::Unavailable => Code::Unavailable,
            Self::Cancelled => Code::Cancelled,
            Self::Unimplemented => Code::Unimplemented,
            Self::Internal => Code::Internal,
        }
    }

    /// The kind of a status another server (a push target) answered: the
    /// inverse of [`ErrorKind::code`]; codes Mallard never sends are internal,
    /// except OutOfRange, which is the client's.
    pub fn of_code(code: Code) -> Self {
        match code {
            Code::OutOfRange => Self::InvalidArgument,
            code => Self::ALL
                .into_iter()
                .find(|k| k.code() == code)
                .unwrap_or(Self::Internal),
        }
    }
}

impl Error {
    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        self.kind().code()
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        Error::new(ErrorKind::of_code(s.code()), s.message())
    }
}

impl From<arrow_flight::error::FlightError> for Error {
    fn from(e: arrow_flight::error::FlightError) -> Self {
        use arrow_flight::error::FlightError;
        match e {
            FlightError::Tonic(s) => Self::from(*s),
            FlightError::Arrow(a) => Self::from(a),
            other => Self::invalid_argument(other.to_string()).with_source(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_code_and_comes_back_from_it() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::of_code(kind.code()), kind);
        }
        assert_eq!(
            ErrorKind::of_code(Code::OutOfRange),
            ErrorKind::InvalidArgument
        );
        assert_eq!(ErrorKind::of_code(Code::DataLoss), ErrorKind::Internal);
    }

    #[test]
    fn a_status_keeps_kind_and_message() {
        let s = Status::from(Error::resource_exhausted("guest memory"));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.message(), "guest memory");
    }
}
