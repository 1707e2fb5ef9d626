//! OpenTelemetry (OTLP) logs, over gRPC or HTTP/protobuf, with the official
//! `opentelemetry-proto` messages.
//!
//! Records are cut into requests of at most `max_batch` records and
//! `max_request_bytes`, and sent as soon as the pipeline's queue for this
//! output is drained: under load requests are full, when idle they leave at
//! once. A request the receiver cannot take now (down, busy, timed out) is
//! kept and sent again with backoff; one it refuses for good, or the part
//! of it a partial success rejects, is counted and warned about. Requests
//! too large for the receiver are split in halves; a single record still too
//! large is refused, never retried in a loop.

mod encode;
mod transport;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use portwarden_core::{LogRecord, LogStats};
use prost::Message;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use self::encode::{Encoded, Sender};
use self::transport::{Outcome, Transport};
use super::tls::{TlsConfig, TlsFiles};
use super::{Output, WhenFull};

/// The wire protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OTLP/gRPC (the collector listens on 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP with binary protobuf (the collector listens on 4318).
    Http,
}

/// Request compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// None.
    #[default]
    None,
    /// gzip.
    Gzip,
}

/// `type = "otlp"` in `[[logs.outputs]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// `http://host:4317` (gRPC) or `http://host:4318` (HTTP; `/v1/logs` is
    /// appended unless the path already ends with it). `https://` with `[tls]`.
    pub endpoint: String,
    /// `grpc` (default) or `http`.
    #[serde(default)]
    pub protocol: Protocol,
    /// `none` (default) or `gzip`.
    #[serde(default)]
    pub compression: Compression,
    /// Records per request at most. Default: 1000.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Encoded bytes per request at most (the collector's gRPC receiver takes
    /// 4 MiB by default). Default: 4000000.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Seconds to wait for the receiver's answer. Default: 10.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// TLS, for `https://` endpoints.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// When its queue (or disk buffer) is full: `block` (default) or
    /// `drop_newest`.
    #[serde(default)]
    pub when_full: WhenFull,
    /// A disk buffer of this many bytes in `logs.state_dir`; 0 (the
    /// default) keeps the in-memory queue only.
    #[serde(default)]
    pub buffer_max_bytes: u64,
}

fn default_max_batch() -> usize {
    1000
}

fn default_max_request_bytes() -> usize {
    4_000_000
}

fn default_timeout() -> u64 {
    10
}

impl OtlpConfig {
    /// Checks what can be checked before the first send.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch == 0 {
            return Err("max_batch must be at least 1".into());
        }
        if self.max_request_bytes < 1024 {
            return Err("max_request_bytes must be at least 1024".into());
        }
        transport::check(self)
    }
}

/// Sends records to an OpenTelemetry collector (or any OTLP receiver).
pub struct OtlpOutput {
    config: OtlpConfig,
    sender: Sender,
    transport: Option<Transport>,
    /// Requests waiting to be sent, oldest first: each a list of records.
    pending: VecDeque<Vec<Encoded>>,
    /// Encoded size of the last pending request.
    last_bytes: usize,
    stats: Arc<LogStats>,
}

impl OtlpOutput {
    /// Sends to `config.endpoint`; `host` and `node` describe this node.
    pub fn new(config: OtlpConfig, host: String, node: Option<String>, stats: Arc<LogStats>) -> Result<Self, String> {
        config.validate()?;
        // Read now, so a missing or bad file stops the agent at start.
        if let Some(tls) = &config.tls {
            TlsFiles::load(tls)?.rustls()?;
        }
        Ok(Self {
            config,
            sender: Sender { host, node },
            transport: None,
            pending: VecDeque::new(),
            last_bytes: 0,
            stats,
        })
    }

    /// Adds one record to the last request, starting a new one when it is
    /// full. A record larger than a request alone has its body cut.
    fn push(&mut self, mut e: Encoded) {
        // A record's share of the request: itself and its framing.
        let mut size = e.record.encoded_len() + 8;
        let room = self.config.max_request_bytes.saturating_sub(1024);
        if size > room {
            if let Some(any_value::Value::StringValue(s)) = e.record.body.as_mut().and_then(|b| b.value.as_mut()) {
                let over = size - room;
                let mut keep = s.len().saturating_sub(over + 16);
                while !s.is_char_boundary(keep) {
                    keep -= 1;
                }
                s.truncate(keep);
            }
            self.stats.output_truncated.fetch_add(1, Ordering::Relaxed);
            size = e.record.encoded_len() + 8;
        }
        let full = self.pending.back().is_none_or(|last| {
            last.len() >= self.config.max_batch || self.last_bytes + size > self.config.max_request_bytes
        });
        if full {
            self.pending.push_back(Vec::new());
            self.last_bytes = 0;
        }
        self.last_bytes += size;
        if let Some(last) = self.pending.back_mut() {
            last.push(e);
        }
    }

    /// The request of `records`, which move into it (no copy).
    fn request(&self, records: Vec<Encoded>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest { resource_logs: encode::resource_logs(&self.sender, records) }
    }

    fn reject(&self, n: u64, why: &str) {
        self.stats.output_rejected.fetch_add(n, Ordering::Relaxed);
        warn!(output = %self.name(), records = n, reason = why, "OTLP receiver refused records; they are not sent again");
    }
}

#[async_trait]
impl Output for OtlpOutput {
    fn name(&self) -> String {
        format!("otlp:{}", self.config.endpoint)
    }

    async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
        let observed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        for r in records {
            self.push(encode::record(r, observed));
        }
        Ok(())
    }

    fn when_full(&self) -> WhenFull {
        self.config.when_full
    }

    async fn flush(&mut self) -> io::Result<()> {
        while let Some(records) = self.pending.pop_front() {
            if records.is_empty() {
                continue;
            }
            let count = records.len() as u64;
            let request = self.request(records);
            let transport = match self.transport.as_mut() {
                Some(t) => t,
                None => match Transport::new(&self.config) {
                    Ok(t) => {
                        info!(output = %self.name(), "OTLP output ready");
                        self.transport.insert(t)
                    }
                    Err(e) => {
                        self.pending.push_front(encode::records_of(&self.sender, request));
                        return Err(io::Error::other(e));
                    }
                },
            };
            match transport.export(&request).await {
                Outcome::Accepted { rejected, message } => {
                    if rejected > 0 {
                        self.reject(rejected, &message);
                    }
                }
                Outcome::Retry(why) => {
                    // Kept whole; the pipeline calls again with backoff.
                    self.pending.push_front(encode::records_of(&self.sender, request));
                    return Err(io::Error::other(format!("{}: {why}", self.name())));
                }
                Outcome::TooLarge(why) => {
                    let mut records = encode::records_of(&self.sender, request);
                    if records.len() == 1 {
                        self.reject(1, &why);
                        continue;
                    }
                    let second = records.split_off(records.len() / 2);
                    self.pending.push_front(second);
                    self.pending.push_front(records);
                }
                Outcome::Refused(why) => self.reject(count, &why),
            }
        }
        self.last_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
    use portwarden_core::{Container, ContainerId, LogOrigin, LogStream, Pod, RuntimeName};

    use super::*;

    fn config() -> OtlpConfig {
        OtlpConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: Protocol::Grpc,
            compression: Compression::None,
            max_batch: 3,
            max_request_bytes: 4096,
            timeout_secs: 1,
            tls: None,
            when_full: WhenFull::Block,
            buffer_max_bytes: 0,
        }
    }

    fn record(message: &str) -> LogRecord {
        LogRecord::new(UNIX_EPOCH + Duration::from_secs(7), LogOrigin::Cri, Some(LogStream::Stderr), message.into())
    }

    fn attrs(r: &opentelemetry_proto::tonic::logs::v1::LogRecord) -> Vec<(String, String)> {
        r.attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    #[test]
    fn a_pod_container_gets_the_semantic_convention_attributes_and_the_node_its_resource() {
        let mut c = Container::new(RuntimeName::from_static("cri"), ContainerId::new("abc"));
        c.name = "web".into();
        c.image = "nginx:1".into();
        c.pod = Some(Pod { name: "web-0".into(), namespace: "shop".into(), uid: "u-1".into() });
        let mut r = record("hello");
        r.container = Some(Arc::new(c));
        let e = encode::record(&r, 9);
        assert_eq!(e.record.time_unix_nano, 7_000_000_000);
        assert_eq!(e.record.observed_time_unix_nano, 9);
        assert_eq!(e.record.severity_number, 0, "stderr is not a severity");
        let want = [
            ("container.id", "abc"),
            ("container.name", "web"),
            ("container.image.name", "nginx:1"),
            ("container.runtime", "cri"),
            ("k8s.pod.name", "web-0"),
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.uid", "u-1"),
            ("log.iostream", "stderr"),
            ("portwarden.source", "cri"),
        ];
        assert_eq!(attrs(&e.record), want.map(|(k, v)| (k.to_owned(), v.to_owned())));
        let sender = Sender { host: "node-a".into(), node: Some("node-a".into()) };
        let mut other = encode::record(&record("relayed"), 9);
        other.host = Some("sender-b".into());
        let groups = encode::resource_logs(&sender, vec![e, other]);
        let resource = |i: usize| {
            groups[i].resource.as_ref().unwrap().attributes.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>()
        };
        assert_eq!(groups.len(), 2, "a record from another host gets its own resource");
        assert_eq!(resource(0), ["host.name", "k8s.node.name"]);
        assert_eq!(resource(1), ["host.name"], "the node does not describe another host's record");
    }

    #[test]
    fn severity_comes_from_syslog_or_the_alert() {
        let with = |k: &'static str, v: &str| {
            let mut r = record("x");
            r.fields.push((k.into(), v.into()));
            let e = encode::record(&r, 0);
            (e.record.severity_number, e.record.severity_text)
        };
        assert_eq!(with("severity", "3"), (SeverityNumber::Error as i32, "err".into()));
        assert_eq!(with("severity", "6"), (SeverityNumber::Info as i32, "info".into()));
        assert_eq!(with("alert_severity", "1"), (SeverityNumber::Error as i32, "high".into()));
        assert_eq!(with("alert_severity", "3"), (SeverityNumber::Info as i32, "low".into()));
    }

    #[test]
    fn requests_are_cut_by_count_and_size_and_an_oversized_body_is_shortened() {
        let stats = Arc::new(LogStats::default());
        let mut out = OtlpOutput::new(config(), "h".into(), None, Arc::clone(&stats)).unwrap();
        for i in 0..7 {
            out.push(encode::record(&record(&format!("line {i}")), 0));
        }
        assert_eq!(out.pending.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1], "max_batch 3");
        out.push(encode::record(&record(&"y".repeat(10_000)), 0));
        let big = out.pending.back().unwrap().last().unwrap();
        assert!(big.record.encoded_len() <= 4096 - 1024, "cut to leave room for the request's framing");
        assert_eq!(stats.output_truncated.load(Ordering::Relaxed), 1);
        out.push(encode::record(&record(&"z".repeat(2_000)), 0));
        assert_eq!(out.pending.len(), 4, "what does not fit starts the next request");
        let sender = out.sender.clone();
        for records in std::mem::take(&mut out.pending) {
            let request = out.request(records);
            assert!(request.encoded_len() <= 4096, "every request within max_request_bytes");
            let back = encode::records_of(&sender, request);
            assert!(!back.is_empty(), "a request gives its records back whole");
        }
    }

    #[test]
    fn bad_endpoints_and_tls_are_refused_before_the_first_send() {
        let with = |endpoint: &str, tls: Option<TlsConfig>| OtlpConfig { endpoint: endpoint.into(), tls, ..config() };
        assert!(with("127.0.0.1:4317", None).validate().is_err(), "no scheme");
        assert!(with("ftp://x:1", None).validate().is_err());
        assert!(with("https://x:1", None).validate().unwrap_err().contains("needs [tls]"));
        let missing = TlsConfig { ca: Some("/nonexistent/ca.pem".into()), cert: None, key: None, server_name: None };
        assert!(with("https://x:1", Some(missing.clone())).validate().is_ok(), "files are read when it opens");
        let err = OtlpOutput::new(with("https://x:1", Some(missing.clone())), "h".into(), None, Arc::default());
        assert!(err.err().unwrap().contains("/nonexistent/ca.pem"));
        assert!(with("http://x:1", Some(missing.clone())).validate().unwrap_err().contains("https://"));
        let half = TlsConfig { cert: Some("/c.pem".into()), ..missing };
        assert!(with("https://x:1", Some(half)).validate().unwrap_err().contains("both `cert` and `key`"));
        assert!(OtlpConfig { max_batch: 0, ..config() }.validate().is_err());
    }
}
