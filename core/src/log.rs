//! The [`LogSource`] trait: a container's stdout and stderr.

use std::time::SystemTime;

use async_trait::async_trait;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::model::Container;

/// Where a log record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogOrigin {
    /// The Docker Engine logs API.
    Docker,
    /// A CRI log file.
    Cri,
    /// The syslog listener.
    Syslog,
    /// The Fluentd forward listener.
    Forward,
}

/// Which output stream a line was written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One log line (partial lines already merged).
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    /// When the runtime or sender says it was written.
    pub timestamp: SystemTime,
    /// Where it came from.
    pub origin: LogOrigin,
    /// The stream, when known (syslog and forward records may lack one).
    pub stream: Option<LogStream>,
    /// The text, without the trailing newline.
    pub message: String,
    /// The container that wrote it, when known.
    pub container: Option<Container>,
}

/// A way to follow a container's output.
#[async_trait]
pub trait LogSource: Send + Sync {
    /// A short name for logs (`docker`, `cri`, ...).
    fn name(&self) -> &'static str;

    /// True when this source can read `container`'s output (a Docker source
    /// reads Docker's containers, a CRI source those with a log path).
    fn accepts(&self, container: &Container) -> bool;

    /// Follows `container`'s output until `cancel` fires or it stops.
    async fn follow(
        &self,
        container: &Container,
        cancel: CancellationToken,
    ) -> Result<BoxStream<'static, Result<LogRecord>>>;
}
