//! Records as OTLP log records, with OpenTelemetry's semantic-convention
//! attribute names, so a collector's processors and backends understand
//! them without mapping.

use std::time::UNIX_EPOCH;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as OtlpRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use portwarden_core::LogRecord;

/// Who is sending: the resource every record of a request belongs to
/// unless it names another host (a syslog sender's `HOSTNAME`).
#[derive(Clone, Debug, Default)]
pub(super) struct Sender {
    /// `host.name`: the node the agent runs on.
    pub host: String,
    /// `k8s.node.name`, when the agent runs under Kubernetes.
    pub node: Option<String>,
}

/// One record, and the host it belongs to when that is not the agent's.
pub(super) struct Encoded {
    pub host: Option<String>,
    pub record: OtlpRecord,
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }) }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

/// A record in OTLP's shape. The body is the message (an EVE event's whole
/// JSON); the container's identity and the stream are attributes.
pub(super) fn record(r: &LogRecord, observed: u64) -> Encoded {
    let mut attributes = Vec::with_capacity(10);
    if let Some(c) = r.container.as_deref() {
        attributes.push(text("container.id", c.id.as_str()));
        attributes.push(text("container.name", c.display_name()));
        if !c.image.is_empty() {
            attributes.push(text("container.image.name", &c.image));
        }
        attributes.push(text("container.runtime", c.runtime.as_str()));
        if let Some(p) = &c.pod {
            attributes.push(text("k8s.pod.name", &p.name));
            attributes.push(text("k8s.namespace.name", &p.namespace));
            if !p.uid.is_empty() {
                attributes.push(text("k8s.pod.uid", &p.uid));
            }
        }
    } else if let Some(claimed) = &r.claimed {
        // What an unmatched sender said it was: kept, but not as the
        // verified identity.
        if let Some(id) = &claimed.id {
            attributes.push(text("portwarden.claimed.container.id", id));
        }
        if let Some(name) = &claimed.name {
            attributes.push(text("portwarden.claimed.container.name", name));
        }
    }
    if let Some(s) = r.stream {
        attributes.push(text("log.iostream", s.as_str()));
    }
    attributes.push(text("portwarden.source", r.origin.as_str()));
    if r.truncated {
        attributes.push(kv("portwarden.truncated", any_value::Value::BoolValue(true)));
    }
    for (k, v) in &r.fields {
        if k != "severity" && k != "alert_severity" {
            attributes.push(text(&format!("portwarden.{k}"), v));
        }
    }
    let (severity, severity_text) = severity(r);
    let body = r.raw.clone().unwrap_or_else(|| r.message.clone());
    let record = OtlpRecord {
        time_unix_nano: r.timestamp.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
        observed_time_unix_nano: observed,
        severity_number: severity as i32,
        severity_text: severity_text.to_owned(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
        attributes,
        ..Default::default()
    };
    Encoded { host: r.host.clone(), record }
}

/// The record's severity: a syslog sender's (RFC 5424 section 6.2.1, as
/// OpenTelemetry's syslog mapping has it) or a Suricata alert's (1 is the
/// gravest). Container output has none: a line on stderr is not an error.
fn severity(r: &LogRecord) -> (SeverityNumber, &'static str) {
    let field = |name: &str| r.fields.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse::<u8>().ok());
    if let Some(s) = field("severity") {
        return match s {
            0 => (SeverityNumber::Fatal, "emerg"),
            1 => (SeverityNumber::Error3, "alert"),
            2 => (SeverityNumber::Error2, "crit"),
            3 => (SeverityNumber::Error, "err"),
            4 => (SeverityNumber::Warn, "warning"),
            5 => (SeverityNumber::Info2, "notice"),
            6 => (SeverityNumber::Info, "info"),
            _ => (SeverityNumber::Debug, "debug"),
        };
    }
    match field("alert_severity") {
        Some(1) => (SeverityNumber::Error, "high"),
        Some(2) => (SeverityNumber::Warn, "medium"),
        Some(_) => (SeverityNumber::Info, "low"),
        None => (SeverityNumber::Unspecified, ""),
    }
}

/// The records grouped under their resources (one per sending host), in
/// the order they came.
pub(super) fn resource_logs(sender: &Sender, records: Vec<Encoded>) -> Vec<ResourceLogs> {
    let mut groups: Vec<(Option<String>, Vec<OtlpRecord>)> = Vec::new();
    for e in records {
        let host = e.host.filter(|h| *h != sender.host);
        match groups.iter_mut().find(|(h, _)| *h == host) {
            Some((_, rs)) => rs.push(e.record),
            None => groups.push((host, vec![e.record])),
        }
    }
    groups
        .into_iter()
        .map(|(host, log_records)| {
            let mut attributes = vec![text("host.name", host.as_deref().unwrap_or(&sender.host))];
            // The node only describes records of this node.
            if let (None, Some(node)) = (&host, &sender.node) {
                attributes.push(text("k8s.node.name", node));
            }
            ResourceLogs {
                resource: Some(Resource { attributes, ..Default::default() }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "portwarden".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..Default::default()
                    }),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect()
}

/// The records of a request built by [`resource_logs`], given back (to be
/// kept for a retry, or split), each with its host as it came.
pub(super) fn records_of(sender: &Sender, request: ExportLogsServiceRequest) -> Vec<Encoded> {
    let mut out = Vec::new();
    for rl in request.resource_logs {
        let host = rl
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "host.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(h) => Some(h.clone()),
                _ => None,
            })
            .filter(|h| *h != sender.host);
        for sl in rl.scope_logs {
            out.extend(sl.log_records.into_iter().map(|record| Encoded { host: host.clone(), record }));
        }
    }
    out
}
