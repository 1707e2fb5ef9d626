//! Prometheus `/metrics` and `/healthz` over hyper: containers per runtime,
//! packets and kernel drops per capture, the log pipeline's counters, and
//! detection's health, read through the handles the agent gives when it
//! has started its parts.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use portwarden_core::LogStats;
use portwarden_core::{Capabilities, CaptureEngine, Inventory, RuntimeName};
use portwarden_logs::{QueueGauges, RecordTap};
use portwarden_nids::{NidsStatus, RuleReloader};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::mode::{CapturePlan, Mode};

/// Handles on the running agent's parts, given by the agent once it has
/// made them (before the metrics endpoint and the API start); `None` where
/// a part is off. The metrics endpoint and the API read them.
pub(crate) struct Telemetry {
    pub(crate) facts: Facts,
    /// The inventory, when a runtime is watched.
    pub(crate) inventory: Option<Inventory>,
    /// The capture engine, when capture is on.
    pub(crate) engine: Option<CaptureEngine>,
    /// The record pipeline, when logs or detection are on.
    pub(crate) records: Option<RecordHandles>,
    /// Detection, when it is on.
    pub(crate) nids: Option<NidsHandles>,
    /// Why detection is off, when it is.
    pub(crate) detection_off: Option<String>,
    /// Pre-start attach, when capture is per container.
    pub(crate) prestart: Option<Prestart>,
    /// API streams being served now.
    pub(crate) api_streams: AtomicU64,
    /// Runtimes that stopped answering: `name at socket` → the error.
    lost_runtimes: Mutex<BTreeMap<String, String>>,
}

/// The record pipeline's handles.
pub(crate) struct RecordHandles {
    pub(crate) stats: Arc<LogStats>,
    pub(crate) queues: QueueGauges,
    pub(crate) tap: RecordTap,
    /// The names of the container log sources attached (`cri`, `docker`, ...).
    pub(crate) sources: Vec<&'static str>,
}

/// Detection's handles.
pub(crate) struct NidsHandles {
    pub(crate) status: Arc<dyn Fn() -> NidsStatus + Send + Sync>,
    pub(crate) reload: RuleReloader,
}

/// Pre-start attach as the agent runs it.
pub(crate) enum Prestart {
    /// Running: the binaries marked, and the hook's counters.
    On { marked: Vec<std::path::PathBuf>, stats: Arc<portwarden_prestart::Stats> },
    /// Off, and why (containers are attached from runtime events).
    Off(String),
}

impl Prestart {
    /// `on`, or `off: ` and the reason.
    pub(crate) fn state(&self) -> String {
        match self {
            Prestart::On { .. } => "on".to_owned(),
            Prestart::Off(why) => format!("off: {why}"),
        }
    }
}

/// What `/healthz` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// Not ready yet: the first inventory sync, or Suricata's engine, is
    /// still to come (HTTP 503).
    Starting(String),
    /// Ready; notes such as detection being off (HTTP 200).
    Ok(Vec<String>),
    /// Ready, but a part is down: a runtime lost, Suricata crashing (HTTP
    /// 200: restarting the agent would not fix either, so liveness holds).
    Degraded(Vec<String>),
}

impl Health {
    /// The HTTP status and the one-line body.
    pub(crate) fn http(&self) -> (StatusCode, String) {
        match self {
            Health::Starting(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("starting: {why}\n")),
            Health::Ok(notes) if notes.is_empty() => (StatusCode::OK, "ok\n".to_owned()),
            Health::Ok(notes) => (StatusCode::OK, format!("ok ({})\n", notes.join("; "))),
            Health::Degraded(why) => (StatusCode::OK, format!("degraded: {}\n", why.join("; "))),
        }
    }
}

/// Crashes after which a Suricata that is down counts as crash-looping.
const CRASH_LOOP: u64 = 3;

/// What the agent decided at startup.
pub(crate) struct Facts {
    pub(crate) started: std::time::Instant,
    pub(crate) mode: Mode,
    pub(crate) plan: CapturePlan,
    pub(crate) reason: String,
    pub(crate) runtimes: Vec<RuntimeInfo>,
    pub(crate) capabilities: Capabilities,
}

/// A runtime the agent uses.
pub(crate) struct RuntimeInfo {
    pub(crate) kind: RuntimeName,
    pub(crate) socket: std::path::PathBuf,
    pub(crate) name: String,
    pub(crate) version: String,
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Every whole number in a serialisable counter struct, as
/// `prefix<sep>field` (nested objects add their keys).
fn flatten(out: &mut BTreeMap<String, u64>, prefix: &str, sep: char, value: &serde_json::Value) {
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            let name = format!("{prefix}{sep}{k}");
            match v {
                serde_json::Value::Number(n) => {
                    if let Some(n) = n.as_u64() {
                        out.insert(name, n);
                    }
                }
                serde_json::Value::Bool(b) => {
                    out.insert(name, u64::from(*b));
                }
                serde_json::Value::Object(_) => flatten(out, &name, sep, v),
                _ => {}
            }
        }
    }
}

impl Telemetry {
    /// Handles on an agent that has decided its mode, with every part off
    /// until set.
    pub(crate) fn new(facts: Facts) -> Self {
        Self {
            facts,
            inventory: None,
            engine: None,
            records: None,
            nids: None,
            detection_off: None,
            prestart: None,
            api_streams: AtomicU64::new(0),
            lost_runtimes: Mutex::default(),
        }
    }

    /// The current detection status, when detection is on.
    pub(crate) fn nids_status(&self) -> Option<NidsStatus> {
        self.nids.as_ref().map(|n| (n.status)())
    }

    fn lost(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.lost_runtimes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A runtime stopped answering.
    pub(crate) fn runtime_lost(&self, kind: &RuntimeName, socket: &std::path::Path, error: String) {
        self.lost().insert(format!("{kind} at {}", socket.display()), error);
    }

    /// A runtime answered (again).
    pub(crate) fn runtime_synced(&self, kind: &RuntimeName, socket: &std::path::Path) {
        self.lost().remove(&format!("{kind} at {}", socket.display()));
    }

    /// Ready once the inventory has synced and, with a managed Suricata,
    /// its engine has started; degraded while a runtime is lost or
    /// Suricata is down after crashing.
    pub(crate) fn health(&self) -> Health {
        if self.inventory.as_ref().is_some_and(|i| !i.is_synced()) {
            return Health::Starting("the first inventory sync is not done".into());
        }
        let mut problems: Vec<String> =
            self.lost().iter().map(|(runtime, error)| format!("runtime {runtime} lost: {error}")).collect();
        let mut notes = Vec::new();
        if let Some(off) = &self.detection_off {
            notes.push(format!("detection off: {off}"));
        }
        if let Some(Prestart::Off(why)) = &self.prestart {
            notes.push(format!("pre-start attach off: {why}"));
        }
        if let Some(n) = self.nids_status() {
            if let Some(off) = n.suricata_off {
                notes.push(format!("detection off: {off}"));
            } else if n.managed && !n.suricata_running {
                match n.suricata_crashes {
                    0 => return Health::Starting("Suricata's engine has not started yet".into()),
                    c if c >= CRASH_LOOP => {
                        problems.push(format!("Suricata keeps crashing ({c} crashes; restarting with backoff)"));
                    }
                    _ => problems.push("Suricata crashed; restarting".into()),
                }
            }
        }
        if problems.is_empty() {
            Health::Ok(notes)
        } else {
            problems.extend(notes);
            Health::Degraded(problems)
        }
    }

    /// The log pipeline's and detection's counters, by name joined with
    /// `sep` (`logs.records`, `nids.mirror.sent`).
    pub(crate) fn counters(&self, sep: char) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        if let Some(records) = &self.records {
            flatten(&mut out, "logs", sep, &serde_json::to_value(records.stats.snapshot()).unwrap_or_default());
        }
        if let Some(nids) = self.nids_status() {
            flatten(&mut out, "nids", sep, &serde_json::to_value(nids).unwrap_or_default());
        }
        if let Some(Prestart::On { stats, .. }) = &self.prestart {
            flatten(&mut out, "prestart", sep, &serde_json::to_value(stats.snapshot()).unwrap_or_default());
        }
        if let Some(engine) = &self.engine {
            let misses = engine.misses();
            out.insert(format!("capture{sep}vanished_before_attach"), misses.vanished.load(Ordering::Relaxed));
            out.insert(format!("capture{sep}attach_failures"), misses.failed.load(Ordering::Relaxed));
        }
        if let Some(inventory) = &self.inventory {
            out.insert(format!("inventory{sep}gone_before_inspect"), inventory.vanished());
        }
        out
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP portwarden_up The agent is running.\n# TYPE portwarden_up gauge\nportwarden_up 1\n");
        if let Some(inventory) = &self.inventory {
            let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
            for c in inventory.snapshot() {
                *counts.entry((c.runtime.as_str().to_owned(), c.state.as_str().to_owned())).or_default() += 1;
            }
            out.push_str("# HELP portwarden_containers Containers known, by runtime and state.\n# TYPE portwarden_containers gauge\n");
            for ((runtime, state), n) in counts {
                let _ = writeln!(out, "portwarden_containers{{runtime=\"{runtime}\",state=\"{state}\"}} {n}");
            }
        }
        if let Some(engine) = &self.engine {
            let live = engine.live();
            let _ = writeln!(
                out,
                "# HELP portwarden_captures Captures attached.\n# TYPE portwarden_captures gauge\nportwarden_captures {}",
                live.len()
            );
            for (metric, help) in [
                ("portwarden_capture_packets_total", "Frames captured, per capture."),
                ("portwarden_capture_bytes_total", "Bytes captured, per capture."),
                ("portwarden_capture_kernel_drops_total", "Frames the kernel dropped (ring full), per capture."),
                ("portwarden_capture_ring_reads_total", "Wake-ups that read ring blocks, per capture."),
                ("portwarden_capture_sink_panics_total", "Sinks that panicked and were dropped, per capture."),
            ] {
                let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
                for c in &live {
                    let n = match metric {
                        "portwarden_capture_packets_total" => c.counters.packets.load(Ordering::Relaxed),
                        "portwarden_capture_bytes_total" => c.counters.bytes.load(Ordering::Relaxed),
                        "portwarden_capture_ring_reads_total" => c.counters.ring_reads.load(Ordering::Relaxed),
                        "portwarden_capture_sink_panics_total" => c.counters.sink_panics.load(Ordering::Relaxed),
                        _ => c.counters.kernel_drops.load(Ordering::Relaxed),
                    };
                    let id = c.container().map(|id| id.as_str().to_owned()).unwrap_or_default();
                    let _ = writeln!(out, "{metric}{{container=\"{}\",id=\"{}\"}} {n}", label(&c.label()), label(&id));
                }
            }
        }
        for (name, n) in self.counters('_') {
            render_figure(&mut out, &name, n);
        }
        if let Some(queues) = self.records.as_ref().map(|r| &r.queues) {
            out.push_str("# HELP portwarden_log_queue_batches Batches waiting in the log pipeline's queues.\n# TYPE portwarden_log_queue_batches gauge\n");
            let _ = writeln!(out, "portwarden_log_queue_batches{{queue=\"intake\"}} {}", queues.intake());
            for (name, n) in queues.outputs() {
                let _ =
                    writeln!(out, "portwarden_log_queue_batches{{queue=\"output\",output=\"{}\"}} {n}", label(&name));
            }
            let counters = queues.counters();
            for (metric, help, pick) in [
                ("portwarden_log_output_records_total", "Records each output wrote (delivered).", 0),
                ("portwarden_log_output_retries_total", "Failed writes or sends each output retried.", 1),
                (
                    "portwarden_log_output_dropped_total",
                    "Records each output dropped at its full queue (when_full = drop_newest).",
                    2,
                ),
            ] {
                let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
                for (name, c) in &counters {
                    let n = [&c.sent, &c.retries, &c.dropped][pick].load(Ordering::Relaxed);
                    let _ = writeln!(out, "{metric}{{output=\"{}\"}} {n}", label(name));
                }
            }
            let buffered: Vec<_> = counters.iter().filter_map(|(name, c)| Some((name, c.buffer.as_ref()?))).collect();
            for (metric, kind, help, pick) in [
                ("portwarden_log_output_buffer_bytes", "gauge", "Bytes waiting in each output's disk buffer.", 0),
                ("portwarden_log_output_buffer_delivered_total", "counter", "Records each disk buffer delivered.", 1),
                (
                    "portwarden_log_output_buffer_retries_total",
                    "counter",
                    "Failed deliveries each disk buffer retried.",
                    2,
                ),
                (
                    "portwarden_log_output_buffer_dropped_total",
                    "counter",
                    "Records each full disk buffer dropped (drop_newest).",
                    3,
                ),
                (
                    "portwarden_log_output_buffer_corrupt_total",
                    "counter",
                    "Damaged frames each disk buffer found and skipped.",
                    4,
                ),
            ] {
                if buffered.is_empty() {
                    break;
                }
                let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
                for (name, b) in &buffered {
                    let n = [&b.bytes, &b.delivered, &b.retries, &b.dropped, &b.corrupt][pick].load(Ordering::Relaxed);
                    let _ = writeln!(out, "{metric}{{output=\"{}\"}} {n}", label(name));
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP portwarden_api_streams API streams being served.\n# TYPE portwarden_api_streams gauge\nportwarden_api_streams {}",
            self.api_streams.load(Ordering::Relaxed)
        );
        out
    }
}

/// Figures of the log pipeline and detection that are levels, not counts,
/// with their metric names in base units and the divisor that converts the
/// figure to that unit (Prometheus wants seconds, not microseconds).
const GAUGES: &[(&str, &str, f64)] = &[
    ("nids_managed", "nids_managed", 1.0),
    ("nids_tagged_captures", "nids_tagged_captures", 1.0),
    ("nids_mirror_untagged_captures", "nids_mirror_untagged_captures", 1.0),
    ("nids_suricata_running", "nids_suricata_running", 1.0),
    ("nids_rules_loaded", "nids_rules_loaded", 1.0),
    ("nids_rules_rejected", "nids_rules_rejected", 1.0),
    ("nids_suricata_uptime", "nids_suricata_uptime_seconds", 1.0),
    ("prestart_answer_p50_us", "prestart_answer_p50_seconds", 1e6),
    ("prestart_answer_p99_us", "prestart_answer_p99_seconds", 1e6),
    ("prestart_answer_max_us", "prestart_answer_max_seconds", 1e6),
];

/// One figure of [`Telemetry::counters`] in Prometheus' conventions: a
/// counter gets `_total`, milliseconds become seconds, each family its
/// HELP and TYPE.
fn render_figure(out: &mut String, name: &str, n: u64) {
    let (component, field) = name.split_once('_').unwrap_or(("agent", name));
    let what = match component {
        "logs" => "Log pipeline",
        "nids" => "Detection (mirror, Suricata, EVE)",
        "prestart" => "Pre-start attach",
        "capture" => "Capture",
        "inventory" => "Inventory",
        _ => "Agent",
    };
    let field = field.replace('_', " ");
    if let Some((_, gauge, divisor)) = GAUGES.iter().find(|(figure, ..)| *figure == name) {
        let metric = format!("portwarden_{gauge}");
        let value = n as f64 / divisor;
        let _ = writeln!(out, "# HELP {metric} {what}: {field}.\n# TYPE {metric} gauge\n{metric} {value}");
    } else if let Some(base) = name.strip_suffix("_ms") {
        let metric = format!("portwarden_{base}_seconds_total");
        let _ = writeln!(
            out,
            "# HELP {metric} {what}: {field} (seconds).\n# TYPE {metric} counter\n{metric} {}",
            n as f64 / 1000.0
        );
    } else {
        let metric = format!("portwarden_{name}_total");
        let _ = writeln!(out, "# HELP {metric} {what}: {field}.\n# TYPE {metric} counter\n{metric} {n}");
    }
}

/// Serves `/metrics` and `/healthz` on `listen` until `cancel`.
pub(crate) async fn serve(listen: SocketAddr, telemetry: Arc<Telemetry>, cancel: CancellationToken) {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%listen, error = %e, "metrics endpoint off");
            return;
        }
    };
    info!(%listen, "metrics on /metrics, health on /healthz");
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            () = cancel.cancelled() => return,
        };
        let telemetry = Arc::clone(&telemetry);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let telemetry = Arc::clone(&telemetry);
                async move { Ok::<_, Infallible>(respond(&req, &telemetry)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn respond(req: &Request<hyper::body::Incoming>, telemetry: &Telemetry) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", telemetry.render()),
        "/healthz" => {
            let (status, body) = telemetry.health().http();
            (status, "text/plain", body)
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics or /healthz\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwarden_nids::NidsStatus;

    /// A started agent without detection.
    fn started() -> Telemetry {
        Telemetry::new(Facts {
            started: std::time::Instant::now(),
            mode: Mode::Full,
            plan: CapturePlan::PerContainer,
            reason: String::new(),
            runtimes: Vec::new(),
            capabilities: Capabilities(0),
        })
    }

    fn telemetry(nids: NidsStatus) -> Telemetry {
        let mut t = started();
        let reload = RuleReloader::unmanaged();
        t.nids = Some(NidsHandles { status: Arc::new(move || nids.clone()), reload });
        t
    }

    #[test]
    fn ready_only_once_suricatas_engine_runs() {
        let starting = telemetry(NidsStatus { managed: true, ..Default::default() });
        assert_eq!(starting.health().http().0, StatusCode::SERVICE_UNAVAILABLE);
        let running = telemetry(NidsStatus { managed: true, suricata_running: true, ..Default::default() });
        assert_eq!(running.health().http(), (StatusCode::OK, "ok\n".to_owned()));
        // An external Suricata is the user's: the agent is ready without it.
        assert_eq!(telemetry(NidsStatus::default()).health(), Health::Ok(Vec::new()));
    }

    #[test]
    fn a_lost_runtime_or_a_crashing_suricata_is_degraded_and_says_why() {
        let t = telemetry(NidsStatus { managed: true, suricata_running: true, ..Default::default() });
        let docker = RuntimeName::from_static("docker");
        t.runtime_lost(&docker, std::path::Path::new("/var/run/docker.sock"), "refused".into());
        let (code, body) = t.health().http();
        assert_eq!(code, StatusCode::OK);
        assert!(body.starts_with("degraded: runtime docker at /var/run/docker.sock lost: refused"), "{body}");
        t.runtime_synced(&docker, std::path::Path::new("/var/run/docker.sock"));
        assert_eq!(t.health(), Health::Ok(Vec::new()));
        let crashing = telemetry(NidsStatus { managed: true, suricata_crashes: 3, ..Default::default() });
        assert!(crashing.health().http().1.contains("Suricata keeps crashing (3 crashes"));
    }

    #[test]
    fn detection_off_is_ready_with_the_reason() {
        let mut t = started();
        t.detection_off = Some("no rules".into());
        assert_eq!(t.health().http(), (StatusCode::OK, "ok (detection off: no rules)\n".to_owned()));
        let missing = telemetry(NidsStatus {
            managed: true,
            suricata_off: Some("Suricata is not installed".into()),
            ..Default::default()
        });
        assert_eq!(missing.health().http().1, "ok (detection off: Suricata is not installed)\n");
    }
}
