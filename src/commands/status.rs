//! `portwarden status`: the mode this host puts the agent in, and why.
//!
//! Computed on its own from detection and the effective capabilities, the
//! same way `portwarden run` decides at startup (the daemon's own status,
//! with counters, arrives with its API in issue #7).

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
    Ok(ExitCode::SUCCESS)
}
