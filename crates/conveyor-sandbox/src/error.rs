//! The errors of the sandbox's Rust API (and of its control API, which maps them to
//! HTTP statuses).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::Service;

/// What can go wrong when starting or steering a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A configuration file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is not valid JSON of the expected shape.
    #[error("{}: {source}", path.display())]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// No application has this client id.
    #[error("no application with client_id {0:?}")]
    UnknownApp(String),
    /// The sandbox has no application at all, so there is no default one.
    #[error("no application is registered")]
    NoApp,
    /// An application registration was rejected.
    #[error("invalid application: {0}")]
    InvalidApp(String),
    /// A forced failure names an error the service does not have.
    #[error("{service} has no error {error:?} (known: {known})")]
    UnknownError {
        service: Service,
        error: String,
        known: String,
    },
    /// A forced failure has an HTTP status outside 100–599.
    #[error("invalid HTTP status {0}")]
    InvalidStatus(u16),
}
