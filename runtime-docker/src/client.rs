//! HTTP/1.1 over a unix socket serving a Docker-style API (Docker Engine,
//! or Podman's), with the API's failures mapped to core errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use http_body_util::{BodyExt, BodyStream, Empty};
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;
use portwarden_core::{BoxError, Error, Result};
use serde::de::DeserializeOwned;

/// Largest response body read into memory. `/containers/json` on a host
/// with thousands of containers is a few MiB; anything past this is not Docker.
const MAX_BODY: usize = 64 << 20;

/// A client for a Docker-style API bound to one socket.
#[derive(Clone)]
pub struct DockerClient {
    http: Client<UnixConnector, Empty<Bytes>>,
    socket: PathBuf,
    timeout: Duration,
}

impl DockerClient {
    /// A client for `socket`; `timeout` bounds each request (for streams,
    /// until the response headers).
    pub fn new(socket: &Path, timeout: Duration) -> Self {
        let http = Client::builder(TokioExecutor::new())
            // Without a timer the pool never closes idle connections.
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(8)
            .build(UnixConnector);
        Self { http, socket: socket.to_path_buf(), timeout }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// GETs `path` and decodes the JSON body, all within the request timeout.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let body = tokio::time::timeout(self.timeout, async {
            let response = self.send(path).await?;
            let body = http_body_util::Limited::new(response.into_body(), MAX_BODY);
            body.collect().await.map(|b| b.to_bytes()).map_err(|e| self.classify(path, e, true))
        })
        .await
        .map_err(|_| Error::Timeout { what: format!("GET {path}"), after: self.timeout })??;
        serde_json::from_slice(&body).map_err(|e| Error::protocol(format!("GET {path}"), e))
    }

    /// GETs `path` and returns the body as it arrives, for long-lived
    /// streams. Only the response headers are subject to the timeout.
    pub async fn get_stream(&self, path: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        let response = tokio::time::timeout(self.timeout, self.send(path))
            .await
            .map_err(|_| Error::Timeout { what: format!("GET {path}"), after: self.timeout })??;
        Ok(self.body_stream(path, response))
    }

    /// As [`DockerClient::get_stream`], but waits for the response headers
    /// without a deadline: for servers that send them only with the first
    /// item (Podman's event stream). Pair it with
    /// [`detached_subscription`](portwarden_core::detached_subscription).
    pub async fn get_stream_unbounded(&self, path: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        let response = self.send(path).await?;
        Ok(self.body_stream(path, response))
    }

    fn body_stream(&self, path: &str, response: Response<Incoming>) -> BoxStream<'static, Result<Bytes>> {
        let (client, path) = (self.clone(), path.to_owned());
        let frames = BodyStream::new(response.into_body()).filter_map(move |frame| {
            let item = match frame {
                Ok(frame) => frame.into_data().ok().map(Ok),
                Err(e) => Some(Err(client.classify(&path, e.into(), false))),
            };
            futures::future::ready(item)
        });
        frames.boxed()
    }

    /// Sends a GET and turns non-2xx statuses into errors.
    async fn send(&self, path: &str) -> Result<Response<Incoming>> {
        let uri: hyper::Uri = hyperlocal::Uri::new(&self.socket, path).into();
        let response = self.http.get(uri).await.map_err(|e| self.request_error(path, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = http_body_util::Limited::new(response.into_body(), 64 << 10).collect().await;
        let message = body
            .ok()
            .and_then(|b| serde_json::from_slice::<ApiMessage>(&b.to_bytes()).ok())
            .map(|m| m.message)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
        let request = format!("GET {path}");
        Err(match status {
            StatusCode::NOT_FOUND => Error::NotFound { what: message },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::PermissionDenied { what: message },
            _ => Error::Api { request, status: status.as_u16(), message },
        })
    }

    fn request_error(&self, path: &str, e: hyper_util::client::legacy::Error) -> Error {
        if e.is_connect() {
            return Error::unavailable(self.socket.display().to_string(), e);
        }
        // No response arrived: a connection cut short here is the daemon
        // going away (or closing a pooled connection), not a malformed reply.
        self.classify(path, Box::new(e), false)
    }

    /// A parse failure is the peer's fault (malformed), and so is a body cut
    /// short when a whole document was expected; a long-lived stream cut
    /// short means the daemon went away. Anything else is a broken connection.
    fn classify(&self, path: &str, e: BoxError, whole_document: bool) -> Error {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
        while let Some(c) = cause {
            if let Some(h) = c.downcast_ref::<hyper::Error>() {
                if h.is_parse() || h.is_parse_status() || (whole_document && h.is_incomplete_message()) {
                    return Error::protocol(format!("GET {path}"), h);
                }
            }
            let eof =
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof);
            if whole_document && eof {
                return Error::protocol(format!("GET {path}"), "response truncated (connection closed mid-body)");
            }
            if c.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                return Error::protocol(format!("GET {path}"), format!("body larger than {MAX_BODY} bytes"));
            }
            cause = c.source();
        }
        Error::unavailable(self.socket.display().to_string(), e)
    }
}

/// Docker's error body: `{"message": "..."}`.
#[derive(serde::Deserialize)]
struct ApiMessage {
    message: String,
}
