//! Containers' output through the Engine API's logs stream: the raw stream
//! ([`DockerLogs`]), its decoding, and the [`DockerLogSource`] that
//! [`DockerProvider`](crate::DockerProvider) supplies to the collector.
//! Other runtimes that serve Docker's logs API (Podman) reuse the source
//! under their own name.

mod decode;
mod source;
mod stream;

pub use decode::{DecodeError, DockerCursor, DockerDecoder, DockerLine, StreamCursor};
pub use source::DockerLogSource;
pub use stream::{DockerLogs, LogsBody};
