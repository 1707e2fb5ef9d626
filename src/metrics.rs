//! Prometheus `/metrics` and `/healthz` over hyper: containers per runtime,
//! packets and kernel drops per capture, the log pipeline's counters, and
//! detection's health. Components register what they have as they start.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use portwarden_core::{CaptureEngine, Inventory};
use portwarden_logs::stats::LogStats;
use portwarden_nids::NidsStatus;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What the running agent's parts expose, filled in as each starts.
#[derive(Default)]
pub(crate) struct Telemetry {
    pub(crate) inventory: OnceLock<Inventory>,
    pub(crate) engine: OnceLock<CaptureEngine>,
    pub(crate) logs: OnceLock<Arc<LogStats>>,
    pub(crate) nids: OnceLock<Arc<dyn Fn() -> NidsStatus + Send + Sync>>,
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Every number in a serialisable counter struct, as `prefix_<field>` metrics.
fn flatten(out: &mut String, prefix: &str, value: &serde_json::Value) {
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            let name = format!("{prefix}_{k}");
            match v {
                serde_json::Value::Number(n) => {
                    let _ = writeln!(out, "{name} {n}");
                }
                serde_json::Value::Object(_) => flatten(out, &name, v),
                _ => {}
            }
        }
    }
}

impl Telemetry {
    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP portwarden_up The agent is running.\n# TYPE portwarden_up gauge\nportwarden_up 1\n");
        if let Some(inventory) = self.inventory.get() {
            let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
            for c in inventory.snapshot() {
                *counts.entry((c.runtime.as_str().to_owned(), c.state.as_str().to_owned())).or_default() += 1;
            }
            out.push_str("# HELP portwarden_containers Containers known, by runtime and state.\n# TYPE portwarden_containers gauge\n");
            for ((runtime, state), n) in counts {
                let _ = writeln!(out, "portwarden_containers{{runtime=\"{runtime}\",state=\"{state}\"}} {n}");
            }
        }
        if let Some(engine) = self.engine.get() {
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
            ] {
                let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
                for c in &live {
                    let n = match metric {
                        "portwarden_capture_packets_total" => c.counters.packets.load(Ordering::Relaxed),
                        "portwarden_capture_bytes_total" => c.counters.bytes.load(Ordering::Relaxed),
                        _ => c.counters.kernel_drops.load(Ordering::Relaxed),
                    };
                    let id = c.container().map(|id| id.as_str().to_owned()).unwrap_or_default();
                    let _ = writeln!(out, "{metric}{{container=\"{}\",id=\"{}\"}} {n}", label(&c.label()), label(&id));
                }
            }
        }
        if let Some(logs) = self.logs.get() {
            out.push_str("# HELP portwarden_logs Log pipeline counters (records, written, drops, ...).\n");
            flatten(&mut out, "portwarden_logs", &serde_json::to_value(logs.snapshot()).unwrap_or_default());
        }
        if let Some(nids) = self.nids.get() {
            out.push_str("# HELP portwarden_nids Detection: mirror, Suricata and EVE counters.\n");
            flatten(&mut out, "portwarden_nids", &serde_json::to_value(nids()).unwrap_or_default());
        }
        out
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
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics or /healthz\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}
