//! What can keep detection from starting, naming the file, pipe or socket,
//! with the system's error as the cause.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Detection's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mirror's named pipe cannot be made or opened.
    #[error("mirror pipe {}", path.display())]
    MirrorPipe {
        /// The pipe.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The VXLAN mirror's socket cannot be set up.
    #[error("VXLAN mirror to {remote}")]
    Vxlan {
        /// The remote sensor.
        remote: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The rules path cannot be read.
    #[error("rules {}", path.display())]
    Rules {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The user's Suricata include cannot be read.
    #[error("nids.include {}", path.display())]
    Include {
        /// The include.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file of Suricata's generated config cannot be written.
    #[error("Suricata config {}", path.display())]
    Config {
        /// The file (or the run directory).
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket or pipe Suricata sends EVE events to cannot be made.
    #[error("EVE {what} {}", path.display())]
    Eve {
        /// `socket` or `pipe`.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The system's error underneath.
    pub fn io(&self) -> &io::Error {
        match self {
            Error::MirrorPipe { source, .. }
            | Error::Vxlan { source, .. }
            | Error::Rules { source, .. }
            | Error::Include { source, .. }
            | Error::Config { source, .. }
            | Error::Eve { source, .. } => source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
