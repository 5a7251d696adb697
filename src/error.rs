//! Why the server could not start, or had to stop: the errors `roost serve` and the admin
//! socket end with (a request's errors are `http::error`'s).

use roost_protocol::Domain;

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Storage(#[from] roost_storage::StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "the store at {path} holds the keys of domain {stored}, but server.domain is {configured}"
    )]
    DomainMismatch {
        path: String,
        stored: Domain,
        configured: Domain,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot start recording metrics: {0}")]
    Metrics(String),
    #[error("the store failed to write and must be reopened: start roost again (under a supervisor it restarts by itself)")]
    StoreFailed,
    #[error("the store did not close within {0} s; every acknowledged write was already durable")]
    CloseTimeout(u64),
}
