//! What can keep a part of log collection from starting, naming the part
//! and the path or port, with the system's error as the cause.

use std::io;
use std::path::PathBuf;

/// Log collection's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not bind its port or socket.
    #[error("cannot listen for {what} on {address}")]
    Listen {
        /// `syslog` or `forward`.
        what: &'static str,
        /// `tcp port 1514`, a socket path, ...
        address: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The state directory (checkpoints) cannot be made or written.
    #[error("state directory {}", path.display())]
    StateDir {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file output cannot be opened, or restored to its checkpoint.
    #[error("log output {}", path.display())]
    Output {
        /// The output's file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A Fluent Bit config cannot be read or written.
    #[error("Fluent Bit config {}", path.display())]
    FluentConfig {
        /// The config file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The pipeline was given no output.
    #[error("the log pipeline needs at least one output")]
    NoOutput,
    /// An output could not be returned to where the last checkpoint left it.
    #[error("log output {name} cannot be restored to its checkpoint")]
    Restore {
        /// The output's name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
