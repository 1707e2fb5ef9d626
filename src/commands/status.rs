//! `portwarden status`: the mode this host puts the agent in, and why.
//!
//! Computed on its own from detection and the effective capabilities, the
//! same way `portwarden run` decides at startup; a running agent's counters
//! (logs, mirror, Suricata) are read from the status file it keeps in its
//! run directory, until its API (issue #7).

use std::io::Write;
use std::process::ExitCode;

use portwarden_core::{Cap, Capabilities, Registry, RuntimeKind};
use serde::Serialize;

use crate::config::Config;
use crate::mode::{self, CapturePlan, Mode};

#[derive(Serialize)]
struct Status {
    mode: Mode,
    capture: &'static str,
    reason: String,
    runtimes: Vec<RuntimeRow>,
    capabilities: Vec<CapRow>,
    /// What a running agent last reported (log and detection counters),
    /// when one runs with the same `nids.run_dir`.
    daemon: Option<serde_json::Value>,
}

/// A running agent's status file, when it is fresh (written every 5 s).
fn daemon_status(config: &Config) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(config.nids.run_dir.join("status.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    (now.saturating_sub(value["written"].as_u64()?) < 30).then_some(value)
}

#[derive(Serialize)]
struct RuntimeRow {
    runtime: RuntimeKind,
    socket: String,
    version: String,
}

#[derive(Serialize)]
struct CapRow {
    capability: &'static str,
    effective: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    switches_off: Option<&'static str>,
}

pub(crate) async fn status(config: &Config, registry: &Registry, json: bool) -> anyhow::Result<ExitCode> {
    let detection = registry.detect(&config.detect_options()).await;
    let caps = Capabilities::current();
    let (mode, plan, reason) = mode::decide(detection.runtimes.len(), caps, config.capture.enabled);
    let status = Status {
        mode,
        capture: match plan {
            CapturePlan::PerContainer => "per_container",
            CapturePlan::OwnNamespace => "own_namespace",
            CapturePlan::Off => "off",
        },
        reason,
        runtimes: detection
            .runtimes
            .iter()
            .map(|d| RuntimeRow {
                runtime: d.info.kind,
                socket: d.socket.display().to_string(),
                version: d.info.version.clone(),
            })
            .collect(),
        capabilities: Cap::ALL
            .into_iter()
            .map(|c| CapRow {
                capability: c.name(),
                effective: caps.has(c),
                switches_off: (!caps.has(c)).then(|| c.switches_off()),
            })
            .collect(),
        daemon: daemon_status(config),
    };
    if json {
        super::print_json(&status)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "mode:     {}", status.mode.as_str())?;
    writeln!(out, "capture:  {} ({})", status.capture, status.reason)?;
    for r in &status.runtimes {
        writeln!(out, "runtime:  {} {} at {}", r.runtime, r.version, r.socket)?;
    }
    if status.runtimes.is_empty() {
        writeln!(out, "runtime:  none detected (`portwarden runtimes` says why)")?;
    }
    for c in status.capabilities.iter().filter(|c| !c.effective) {
        writeln!(out, "missing:  {}: {} is off", c.capability, c.switches_off.unwrap_or(""))?;
    }
    match &status.daemon {
        Some(d) => {
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
                if let Some(s) = n["suricata"].as_object() {
                    writeln!(
                        out,
                        "suricata: {} packets, {} kernel drops, {} invalid",
                        s["kernel_packets"], s["kernel_drops"], s["decoder_invalid"]
                    )?;
                }
            }
        }
        None => writeln!(out, "daemon:   not running here (no fresh status in {})", config.nids.run_dir.display())?,
    }
    Ok(ExitCode::SUCCESS)
}
