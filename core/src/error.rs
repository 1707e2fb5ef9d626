//! The error kinds callers branch on.
//!
//! Adapters map their clients' failures into these variants, so the registry
//! and the inventory can react without knowing which runtime failed: a
//! `NotFound` during inspect means the container is gone, `Unavailable` means
//! back off and reconnect, `Protocol` means the peer sent something we could
//! not read.

use std::time::Duration;

/// A boxed cause, for errors whose source type belongs to a client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from runtimes, sources and the inventory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist (an unknown container id, for example).
    #[error("{what} not found")]
    NotFound {
        /// What was looked up.
        what: String,
    },
    /// The endpoint could not be reached or dropped the connection.
    #[error("{endpoint} is unavailable")]
    Unavailable {
        /// The socket or address.
        endpoint: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The endpoint refused us for lack of privilege.
    #[error("permission denied: {what}")]
    PermissionDenied {
        /// What was refused.
        what: String,
    },
    /// The peer answered, but not with something we can read.
    #[error("malformed response to {request}: {detail}")]
    Protocol {
        /// The request that got the response.
        request: String,
        /// What was wrong with it.
        detail: String,
    },
    /// No answer within the deadline.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// A caller's argument is unusable (a filter that does not compile, ...).
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What was given.
        what: String,
        /// Why it is unusable.
        detail: String,
    },
    /// The runtime understood the request and reported a failure.
    #[error("{request} failed with status {status}: {message}")]
    Api {
        /// The request.
        request: String,
        /// The runtime's status code (HTTP or gRPC).
        status: u16,
        /// The runtime's message.
        message: String,
    },
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds [`Error::Unavailable`] from any cause.
    pub fn unavailable(endpoint: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unavailable { endpoint: endpoint.into(), source: source.into() }
    }

    /// Builds [`Error::Protocol`].
    pub fn protocol(request: impl Into<String>, detail: impl ToString) -> Self {
        Error::Protocol { request: request.into(), detail: detail.to_string() }
    }

    /// Maps a failed gRPC call to a kind, by the status code numbers of the
    /// gRPC spec, so adapters over any gRPC library share one mapping.
    /// `source` is the library's status, kept as the cause.
    pub fn from_grpc(
        request: &str,
        endpoint: &std::path::Path,
        code: i32,
        message: &str,
        source: impl Into<BoxError>,
    ) -> Self {
        const CANCELLED: i32 = 1;
        const DEADLINE_EXCEEDED: i32 = 4;
        const NOT_FOUND: i32 = 5;
        const PERMISSION_DENIED: i32 = 7;
        const ABORTED: i32 = 10;
        const UNAVAILABLE: i32 = 14;
        const UNAUTHENTICATED: i32 = 16;
        match code {
            NOT_FOUND => Error::NotFound { what: format!("{request}: {message}") },
            PERMISSION_DENIED | UNAUTHENTICATED => Error::PermissionDenied { what: format!("{request}: {message}") },
            DEADLINE_EXCEEDED => Error::Timeout { what: request.to_owned(), after: Duration::ZERO },
            CANCELLED | ABORTED | UNAVAILABLE => Error::unavailable(endpoint.display().to_string(), source),
            _ => Error::Api {
                request: request.to_owned(),
                status: u16::try_from(code).unwrap_or(u16::MAX),
                message: message.to_owned(),
            },
        }
    }

    /// True when retrying later may succeed: the runtime went away or stalled.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }
}

/// Displays an error with its causes, joined by `: `, for log fields.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
