//! The raw `/containers/{id}/logs` stream; decoding it is `portwarden-logs`'s job.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use portwarden_core::{ContainerId, Error, Result};

use crate::api;
use crate::client::DockerClient;
use crate::runtime::is_safe_id;

/// Opens containers' log streams on one Docker Engine.
#[derive(Clone)]
pub struct DockerLogs {
    client: DockerClient,
}

/// An open log stream.
pub struct LogsBody {
    /// True for a TTY container: the body is the raw terminal output, not
    /// Docker's multiplexed 8-byte-header frames.
    pub tty: bool,
    /// The container's log driver (`json-file`, `local`, `syslog`, ...).
    pub driver: String,
    /// The body as it arrives.
    pub body: BoxStream<'static, Result<Bytes>>,
}

impl DockerLogs {
    /// A client for the engine at `socket`; `request_timeout` bounds the
    /// inspect and the wait for the stream's headers.
    pub fn new(socket: &Path, request_timeout: Duration) -> Self {
        Self { client: DockerClient::new(socket, request_timeout) }
    }

    /// Opens `id`'s stdout and stderr with timestamps, from `since`
    /// (nanoseconds since the epoch, inclusive) or the beginning. With
    /// `follow` it stays open until the container stops.
    ///
    /// A log driver Docker cannot read back (`none`, or `syslog` with the
    /// dual-logging cache off) is an [`Error::Api`] with status 501.
    pub async fn open(&self, id: &ContainerId, since: Option<u64>, follow: bool) -> Result<LogsBody> {
        if !is_safe_id(id.as_str()) {
            return Err(Error::NotFound { what: format!("container {id}") });
        }
        let inspect: api::Inspect = self.client.get_json(&format!("/containers/{id}/json")).await?;
        let tty = inspect.config.is_some_and(|c| c.tty);
        let driver = inspect.host_config.and_then(|h| h.log_config).map(|l| l.kind).unwrap_or_default();
        let mut path = format!("/containers/{id}/logs?stdout=1&stderr=1&timestamps=1&follow={}", u8::from(follow));
        if let Some(ns) = since {
            // Docker reads `since` as seconds with a nanosecond fraction.
            path.push_str(&format!("&since={}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000));
        }
        let body = self.client.get_stream(&path).await?;
        Ok(LogsBody { tty, driver, body })
    }
}
