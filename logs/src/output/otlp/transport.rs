//! The two OTLP transports: gRPC (tonic) and HTTP/protobuf (hyper), each
//! over TCP or TLS. Both answer with the same [`Outcome`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use prost::Message;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

use super::{Compression, OtlpConfig, Protocol};
use crate::output::tls::TlsFiles;

/// What became of one export request.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Accepted; `rejected` records of it were refused for good
    /// (a partial success), with the receiver's reason.
    Accepted { rejected: u64, message: String },
    /// Worth sending again later (the receiver is down, busy, or timed out).
    Retry(String),
    /// Larger than the receiver takes: split it, or give up on one record.
    TooLarge(String),
    /// Refused for good (a malformed request, say): not sent again.
    Refused(String),
}

/// A connection to the receiver, made on first use and again after a
/// failure.
pub(super) enum Transport {
    Grpc(LogsServiceClient<Channel>),
    Http(HttpClient),
}

/// Checks the endpoint and TLS settings without reading files, connecting
/// or needing a runtime (the files are read when the output opens).
pub(super) fn check(config: &OtlpConfig) -> Result<(), String> {
    let uri: hyper::Uri = config.endpoint.parse().map_err(|e| format!("endpoint {}: {e}", config.endpoint))?;
    if uri.host().is_none() {
        return Err(format!("endpoint {}: no host", config.endpoint));
    }
    match (uri.scheme_str(), &config.tls) {
        (Some("http"), None) => Ok(()),
        (Some("http"), Some(_)) => Err("[tls] given for an http:// endpoint; use https://".into()),
        (Some("https"), None) => Err("an https endpoint needs [tls] with at least `ca`".into()),
        (Some("https"), Some(tls)) => tls.check(),
        _ => Err(format!("endpoint {}: needs http:// or https://", config.endpoint)),
    }
}

impl Transport {
    pub(super) fn new(config: &OtlpConfig) -> Result<Self, String> {
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let tls = config.tls.as_ref().map(TlsFiles::load).transpose()?;
        match config.protocol {
            Protocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
                    .map_err(|e| format!("endpoint {}: {e}", config.endpoint))?
                    .timeout(timeout)
                    .connect_timeout(timeout);
                if let Some(tls) = tls {
                    endpoint = endpoint.tls_config(tls.tonic()).map_err(|e| format!("TLS: {e}"))?;
                } else if config.endpoint.starts_with("https:") {
                    return Err("an https endpoint needs [tls] with at least `ca`".into());
                }
                let mut client = LogsServiceClient::new(endpoint.connect_lazy())
                    .max_decoding_message_size(4 << 20)
                    .max_encoding_message_size(usize::MAX);
                if config.compression == Compression::Gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                Ok(Transport::Grpc(client))
            }
            Protocol::Http => HttpClient::new(config, tls, timeout).map(Transport::Http),
        }
    }

    /// Sends `request`, which stays the caller's for a retry (gRPC sends
    /// a copy; HTTP encodes it in place).
    pub(super) async fn export(&mut self, request: &ExportLogsServiceRequest) -> Outcome {
        match self {
            Transport::Grpc(client) => match client.export(request.clone()).await {
                Ok(response) => accepted(response.into_inner()),
                Err(status) => grpc_outcome(&status),
            },
            Transport::Http(client) => client.export(request).await,
        }
    }
}

fn accepted(response: ExportLogsServiceResponse) -> Outcome {
    let partial = response.partial_success.unwrap_or_default();
    Outcome::Accepted { rejected: partial.rejected_log_records.max(0) as u64, message: partial.error_message }
}

/// The gRPC codes OTLP says to retry (the collector's own exporter agrees).
fn grpc_outcome(status: &tonic::Status) -> Outcome {
    let what = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss
        | Code::Unknown => Outcome::Retry(what),
        // Tonic answers an oversized message with this code; a receiver
        // that is merely busy says so with retry info, which is rare.
        Code::ResourceExhausted if status.message().contains("larger than max") => Outcome::TooLarge(what),
        Code::ResourceExhausted => Outcome::Retry(what),
        _ => Outcome::Refused(what),
    }
}

/// OTLP/HTTP with binary protobuf: `POST <endpoint>/v1/logs`.
pub(super) struct HttpClient {
    host: String,
    port: u16,
    authority: String,
    path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    gzip: bool,
    timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl HttpClient {
    fn new(config: &OtlpConfig, tls: Option<TlsFiles>, timeout: Duration) -> Result<Self, String> {
        let uri: hyper::Uri = config.endpoint.parse().map_err(|e| format!("endpoint {}: {e}", config.endpoint))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("endpoint {}: needs http:// or https://", config.endpoint)),
        };
        let host = uri.host().ok_or_else(|| format!("endpoint {}: no host", config.endpoint))?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let base = uri.path().trim_end_matches('/');
        // The standard path is appended unless the endpoint names its own.
        let path = if base.ends_with("/v1/logs") { base.to_owned() } else { format!("{base}/v1/logs") };
        let tls = match (https, tls) {
            (false, None) => None,
            (false, Some(_)) => return Err("[tls] given for an http:// endpoint; use https://".into()),
            (true, None) => return Err("an https endpoint needs [tls] with at least `ca`".into()),
            (true, Some(files)) => {
                let name = files.server_name.clone().unwrap_or_else(|| host.trim_matches(['[', ']']).to_owned());
                let name = ServerName::try_from(name).map_err(|e| format!("TLS server name: {e}"))?;
                Some((TlsConnector::from(Arc::new(files.rustls()?)), name))
            }
        };
        let authority = uri.authority().map_or_else(|| host.clone(), |a| a.as_str().to_owned());
        Ok(Self {
            host,
            port,
            authority,
            path,
            tls,
            gzip: config.compression == Compression::Gzip,
            timeout,
            conn: None,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect((self.host.trim_matches(['[', ']']), self.port))
            .await
            .map_err(|e| format!("connect {}:{}: {e}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        macro_rules! handshake {
            ($io:expr) => {{
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new($io))
                    .await
                    .map_err(|e| format!("HTTP handshake: {e}"))?;
                tokio::spawn(conn);
                send
            }};
        }
        Ok(match &self.tls {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.map_err(|e| format!("TLS: {e}"))?;
                handshake!(tls)
            }
            None => handshake!(tcp),
        })
    }

    async fn export(&mut self, request: &ExportLogsServiceRequest) -> Outcome {
        let mut body = request.encode_to_vec();
        if self.gzip {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
            if gz.write_all(&body).is_ok() {
                if let Ok(zipped) = gz.finish() {
                    body = zipped;
                }
            }
        }
        match tokio::time::timeout(self.timeout, self.post(body)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.conn = None;
                Outcome::Retry(format!("no answer within {:?}", self.timeout))
            }
        }
    }

    async fn post(&mut self, body: Vec<u8>) -> Outcome {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            match self.connect().await {
                Ok(c) => self.conn = Some(c),
                Err(e) => return Outcome::Retry(e),
            }
        }
        let Some(conn) = self.conn.as_mut() else { return Outcome::Retry("not connected".into()) };
        let mut builder = hyper::Request::post(&self.path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
        if self.gzip {
            builder = builder.header(hyper::header::CONTENT_ENCODING, "gzip");
        }
        let request = match builder.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return Outcome::Refused(format!("request: {e}")),
        };
        if conn.ready().await.is_err() {
            self.conn = None;
            return Outcome::Retry("connection closed".into());
        }
        let response = match conn.send_request(request).await {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Outcome::Retry(format!("HTTP: {e}"));
            }
        };
        let status = response.status();
        let body = match response.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.conn = None;
                return Outcome::Retry(format!("HTTP body: {e}"));
            }
        };
        let what = || format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]).trim());
        match status.as_u16() {
            200..=299 => accepted(ExportLogsServiceResponse::decode(body.as_ref()).unwrap_or_default()),
            413 => Outcome::TooLarge(what()),
            429 | 502 | 503 | 504 => Outcome::Retry(what()),
            _ => Outcome::Refused(what()),
        }
    }
}
