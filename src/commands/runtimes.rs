//! `portwarden runtimes`: what detection found, and why.

use std::io::Write;
use std::process::ExitCode;

use portwarden_core::{Detection, Registry};
use serde::Serialize;

use crate::config::Config;

#[derive(Serialize)]
struct Report<'a> {
    host_root: String,
    proc_root: String,
    detected: Vec<DetectedRow<'a>>,
    rejected: &'a [portwarden_core::Rejected],
}

#[derive(Serialize)]
struct DetectedRow<'a> {
    runtime: portwarden_core::RuntimeName,
    socket: &'a std::path::Path,
    name: &'a str,
    version: &'a str,
    api_version: Option<&'a str>,
}

pub(crate) async fn runtimes(config: &Config, registry: &Registry, json: bool) -> anyhow::Result<ExitCode> {
    let opts = config.detect_options(registry);
    let detection = registry.detect(&opts).await;
    if json {
        super::print_json(&report(config, &detection))?;
    } else {
        print(&mut std::io::stdout().lock(), &detection)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn report<'a>(config: &Config, detection: &'a Detection) -> Report<'a> {
    Report {
        host_root: config.host_root().display().to_string(),
        proc_root: config.proc_root().display().to_string(),
        detected: detection
            .runtimes
            .iter()
            .map(|d| DetectedRow {
                runtime: d.info.runtime.clone(),
                socket: &d.socket,
                name: &d.info.name,
                version: &d.info.version,
                api_version: d.info.api_version.as_deref(),
            })
            .collect(),
        rejected: &detection.rejected,
    }
}

fn print(out: &mut impl Write, detection: &Detection) -> std::io::Result<()> {
    let mut rows = Vec::new();
    for d in &detection.runtimes {
        let api = d.info.api_version.as_deref().map(|v| format!(", API {v}")).unwrap_or_default();
        let status = format!("detected: {} {}{api}", d.info.name, d.info.version);
        rows.push(vec![d.info.runtime.to_string(), d.socket.display().to_string(), status]);
    }
    for r in &detection.rejected {
        rows.push(vec![r.runtime.to_string(), r.socket.display().to_string(), r.reason.to_string()]);
    }
    super::print_table(out, &["RUNTIME", "SOCKET", "STATUS"], &rows)
}
