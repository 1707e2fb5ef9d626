//! `portwarden status`: the mode the agent runs in, and why.
//!
//! From the running daemon's API when one runs: its mode, runtimes and
//! capabilities as it decided them, and its counters (captures, logs,
//! mirror, Suricata). Without one, computed here from detection and the
//! effective capabilities, the same way `portwarden run` decides.

use std::io::Write;
use std::process::ExitCode;

use portwarden_core::{Cap, Capabilities, Registry};
use portwarden_proto::{AgentClient, v1};
use serde::Serialize;

use crate::api::status_error;
use crate::config::Config;
use crate::mode;

#[derive(Serialize)]
struct Status {
    mode: String,
    capture: String,
    reason: String,
    runtimes: Vec<RuntimeRow>,
    capabilities: Vec<CapRow>,
    /// The running daemon's counters (captures, logs, detection), when one
    /// answers on the API socket.
    daemon: Option<serde_json::Value>,
}

/// Nests dotted counter names: `logs.records` → `{"logs": {"records": n}}`.
fn nest(counters: &std::collections::HashMap<String, u64>) -> serde_json::Map<String, serde_json::Value> {
    let mut root = serde_json::Map::new();
    let mut names: Vec<_> = counters.iter().collect();
    names.sort();
    for (name, n) in names {
        let mut node = &mut root;
        let mut parts = name.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                node.insert(part.to_owned(), (*n).into());
                break;
            }
            let child = node.entry(part.to_owned()).or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !child.is_object() {
                *child = serde_json::Value::Object(Default::default());
            }
            let Some(map) = child.as_object_mut() else { break };
            node = map;
        }
    }
    root
}

/// The daemon's status in this command's shape.
fn from_daemon(reply: v1::StatusReply) -> Status {
    let mut daemon = nest(&reply.counters);
    daemon.insert("version".into(), reply.version.clone().into());
    daemon.insert("uptime_seconds".into(), reply.uptime_seconds.into());
    daemon.insert("containers".into(), reply.containers.into());
    daemon.insert("inventory_synced".into(), reply.inventory_synced.into());
    daemon.insert("api_streams".into(), reply.api_streams.into());
    let captures: Vec<serde_json::Value> = reply
        .captures
        .iter()
        .map(|c| {
            serde_json::json!({"label": c.label, "container_id": c.container_id, "packets": c.packets,
                "bytes": c.bytes, "kernel_drops": c.kernel_drops})
        })
        .collect();
    daemon.insert("captures".into(), captures.into());
    daemon.insert("health".into(), reply.health.into());
    let sources: Vec<serde_json::Value> = reply
        .rule_sources
        .iter()
        .map(|s| serde_json::json!({"path": s.path, "builtin": s.builtin, "rules": s.rules, "rejected": s.rejected}))
        .collect();
    if let Some(nids) = daemon.get_mut("nids").and_then(serde_json::Value::as_object_mut) {
        nids.insert("rule_sources".into(), sources.into());
    }
    if !reply.prestart.is_empty() {
        let entry = daemon.entry("prestart").or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(p) = entry.as_object_mut() {
            p.insert("state".into(), reply.prestart.clone().into());
            p.insert("marked".into(), reply.prestart_marked.clone().into());
        }
    }
    Status {
        mode: reply.mode,
        capture: reply.capture,
        reason: reply.reason,
        runtimes: reply
            .runtimes
            .into_iter()
            .map(|r| RuntimeRow { runtime: r.kind, socket: r.socket, version: r.version })
            .collect(),
        capabilities: reply
            .capabilities
            .into_iter()
            .map(|c| CapRow {
                capability: c.name,
                effective: c.effective,
                switches_off: (!c.effective).then_some(c.switches_off),
            })
            .collect(),
        daemon: Some(serde_json::Value::Object(daemon)),
    }
}

#[derive(Serialize)]
struct RuntimeRow {
    runtime: String,
    socket: String,
    version: String,
}

#[derive(Serialize)]
struct CapRow {
    capability: String,
    effective: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    switches_off: Option<String>,
}

pub(crate) async fn status(
    config: &Config,
    registry: &Registry,
    daemon: Option<AgentClient>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let status = match daemon {
        Some(mut daemon) => from_daemon(daemon.status(v1::StatusRequest {}).await.map_err(status_error)?.into_inner()),
        None => here(config, registry).await,
    };
    if json {
        super::print_json(&status)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "mode:     {}", status.mode)?;
    writeln!(out, "capture:  {} ({})", status.capture, status.reason)?;
    for r in &status.runtimes {
        writeln!(out, "runtime:  {} {} at {}", r.runtime, r.version, r.socket)?;
    }
    if status.runtimes.is_empty() {
        writeln!(out, "runtime:  none detected (`portwarden runtimes` says why)")?;
    }
    for c in status.capabilities.iter().filter(|c| !c.effective) {
        writeln!(out, "missing:  {}: {} is off", c.capability, c.switches_off.as_deref().unwrap_or(""))?;
    }
    match &status.daemon {
        Some(d) => {
            writeln!(
                out,
                "daemon:   {} up {}s, {} containers{}, {} captures, {} API streams",
                d["version"].as_str().unwrap_or("?"),
                d["uptime_seconds"],
                d["containers"],
                if d["inventory_synced"] == true { "" } else { " (first sync not done)" },
                d["captures"].as_array().map_or(0, Vec::len),
                d["api_streams"]
            )?;
            writeln!(out, "health:   {}", d["health"].as_str().unwrap_or("?"))?;
            let p = &d["prestart"];
            match p["state"].as_str() {
                Some("on") => writeln!(
                    out,
                    "prestart: on ({}); {} attached before start, {} joined, {} late, held p50 {} us p99 {} us; \
                     event path for {} unknown, {} rootless, {} bad pid files, {} expired",
                    p["marked"].as_array().map_or(String::new(), |m| {
                        m.iter().filter_map(serde_json::Value::as_str).collect::<Vec<_>>().join(", ")
                    }),
                    p["attached"],
                    p["joined"],
                    p["late"],
                    p["answer_p50_us"],
                    p["answer_p99_us"],
                    p["unknown_args"],
                    p["rootless"],
                    p["bad_pid_file"],
                    p["pending_expired"]
                )?,
                Some(state) => writeln!(out, "prestart: {state} (containers are attached from runtime events)")?,
                None => {}
            }
            let l = &d["logs"];
            writeln!(
                out,
                "logs:     {} records, {} written, {} udp dropped",
                l["records"], l["written"], l["udp_dropped"]
            )?;
            let n = &d["nids"];
            if !n.is_null() {
                writeln!(
                    out,
                    "nids:     {} alerts, {} captures tagged, mirror {} sent / {} dropped, Suricata started {}x ({} crashes), rules {} loaded / {} rejected",
                    n["alerts"],
                    n["tagged_captures"],
                    n["mirror"]["sent"],
                    n["mirror"]["dropped"],
                    n["suricata_starts"],
                    n["suricata_crashes"],
                    n["rules_loaded"],
                    n["rules_rejected"]
                )?;
                writeln!(
                    out,
                    "          Suricata {}; down {} ms after crashes, {} frames mirrored while down (not inspected)",
                    if n["suricata_running"] == 1 || n["suricata_running"] == true { "running" } else { "not running" },
                    n["suricata_gap_ms"],
                    n["mirror"]["gap_frames"]
                )?;
                for s in n["rule_sources"].as_array().into_iter().flatten() {
                    let rules = s["rules"].as_u64().unwrap_or(0);
                    let rejected = s["rejected"].as_u64().unwrap_or(0);
                    writeln!(
                        out,
                        "rules:    {} loaded, {} rejected from {} ({})",
                        rules.saturating_sub(rejected),
                        rejected,
                        s["path"].as_str().unwrap_or("?"),
                        if s["builtin"] == true { "built-in" } else { "user" }
                    )?;
                }
                if let Some(s) = n["suricata"].as_object() {
                    writeln!(
                        out,
                        "suricata: {} packets read, {} invalid, {} alerts",
                        s["packets"], s["decoder_invalid"], s["alerts"]
                    )?;
                }
            }
        }
        None => writeln!(out, "daemon:   not running (no answer at {})", config.api.socket.display())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The status computed here: what `run` would decide on this host.
async fn here(config: &Config, registry: &Registry) -> Status {
    let detection = registry.detect(&config.detect_options(registry)).await;
    let caps = Capabilities::current();
    let (mode, plan, reason) = mode::decide(detection.runtimes.len(), caps, config.capture.enabled);
    Status {
        mode: mode.as_str().to_owned(),
        capture: plan.as_str().to_owned(),
        reason,
        runtimes: detection
            .runtimes
            .iter()
            .map(|d| RuntimeRow {
                runtime: d.info.runtime.as_str().to_owned(),
                socket: d.socket.display().to_string(),
                version: d.info.version.clone(),
            })
            .collect(),
        capabilities: Cap::ALL
            .into_iter()
            .map(|c| CapRow {
                capability: c.name().to_owned(),
                effective: caps.has(c),
                switches_off: (!caps.has(c)).then(|| c.switches_off().to_owned()),
            })
            .collect(),
        daemon: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_counters_nest() {
        let counters = [("logs.records".to_owned(), 3), ("nids.mirror.sent".to_owned(), 5), ("x".to_owned(), 1)];
        let nested = serde_json::Value::Object(nest(&counters.into_iter().collect()));
        assert_eq!(nested, serde_json::json!({"logs": {"records": 3}, "nids": {"mirror": {"sent": 5}}, "x": 1}));
    }
}
