//! The raw `/containers/{id}/logs` stream.
//!
//! Docker sends one HTTP chunk per log message. Through the pooled client
//! every chunk crossed from the connection's task to the reader's, a wake-up
//! per line; here the stream has a connection of its own, driven by whoever
//! reads the body, so a burst of lines costs one task's time.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use http_body_util::Empty;
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use portwarden_core::{ContainerId, Error, Result};

use crate::api;
use crate::client::DockerClient;
use crate::runtime::is_safe_id;

/// Opens containers' log streams on one Docker Engine.
#[derive(Clone)]
pub struct DockerLogs {
    client: DockerClient,
    socket: PathBuf,
    timeout: Duration,
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
        Self {
            client: DockerClient::new(socket, request_timeout),
            socket: socket.to_path_buf(),
            timeout: request_timeout,
        }
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
        let body = tokio::time::timeout(self.timeout, self.request(&path))
            .await
            .map_err(|_| Error::Timeout { what: format!("GET {path}"), after: self.timeout })??;
        Ok(LogsBody { tty, driver, body })
    }

    /// GET on a connection of its own, returned as a self-driving stream.
    async fn request(&self, path: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        let endpoint = self.socket.display().to_string();
        let stream =
            tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| Error::unavailable(&endpoint, e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| Error::unavailable(&endpoint, e))?;
        let mut conn = Box::pin(conn);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, "docker")
            .body(Empty::new())
            .map_err(|e| Error::protocol(format!("GET {path}"), e))?;
        let response = {
            let send = sender.send_request(request);
            tokio::pin!(send);
            // The connection must be driven while the request is in flight.
            tokio::select! {
                r = &mut send => r.map_err(|e| Error::unavailable(&endpoint, e))?,
                r = &mut conn => {
                    r.map_err(|e| Error::unavailable(&endpoint, e))?;
                    return Err(Error::protocol(format!("GET {path}"), "connection closed before the response"));
                }
            }
        };
        let status = response.status();
        if !status.is_success() {
            // Docker's error body is small; read it on the same connection.
            let body = Driven { conn, body: response.into_body(), conn_done: false, endpoint: endpoint.clone() };
            let mut bytes = Vec::new();
            let mut chunks = body.take(16);
            while let Some(Ok(chunk)) = chunks.next().await {
                bytes.extend_from_slice(&chunk);
            }
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
            return Err(match status.as_u16() {
                404 => Error::NotFound { what: message },
                401 | 403 => Error::PermissionDenied { what: message },
                code => Error::Api { request: format!("GET {path}"), status: code, message },
            });
        }
        Ok(Driven { conn, body: response.into_body(), conn_done: false, endpoint }.boxed())
    }
}

type Connection = hyper::client::conn::http1::Connection<TokioIo<tokio::net::UnixStream>, Empty<Bytes>>;

/// A response body that drives its own connection as it is read.
struct Driven {
    conn: Pin<Box<Connection>>,
    body: Incoming,
    conn_done: bool,
    endpoint: String,
}

impl Stream for Driven {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if !this.conn_done {
                if let Poll::Ready(result) = this.conn.as_mut().poll(cx) {
                    this.conn_done = true;
                    if let Err(e) = result {
                        return Poll::Ready(Some(Err(Error::unavailable(&this.endpoint, e))));
                    }
                }
            }
            return match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    Err(_) => continue, // trailers
                },
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::unavailable(&this.endpoint, e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}
