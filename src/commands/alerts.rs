//! `portwarden alerts`: intrusion alerts as they happen, from the running
//! daemon, or from detection run here when none runs.

use std::io::Write;
use std::process::ExitCode;

use portwarden_core::Registry;
use portwarden_proto::{AgentClient, v1};

use super::Interrupt;
use super::logs::text_line;
use crate::api::status_error;
use crate::config::Config;

pub(crate) async fn alerts(
    config: &Config,
    registry: &Registry,
    daemon: Option<AgentClient>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let Some(mut daemon) = daemon else {
        if !config.nids.active() {
            anyhow::bail!(
                "detection is off: no rules at {} (give --rules PATH, or --suricata external)",
                config.nids.rules.display()
            );
        }
        return super::run(config, registry, Some(json)).await;
    };
    let mut interrupt = Interrupt::new()?;
    let mut alerts = daemon.stream_alerts(v1::StreamAlertsRequest::default()).await.map_err(status_error)?.into_inner();
    loop {
        let alert = tokio::select! {
            () = interrupt.wait() => break,
            got = alerts.message() => match got.map_err(status_error)? {
                Some(alert) => alert,
                None => break,
            },
        };
        if alert.missed > 0 {
            eprintln!("portwarden: {} alerts skipped: this terminal read too slowly", alert.missed);
        }
        let line = if json {
            format!("{}\n", alert.json)
        } else {
            let name = alert.container.as_ref().map_or("-", |c| if c.name.is_empty() { &c.id } else { &c.name });
            text_line(alert.time_unix_nano, name, "-", &alert.message)
        };
        let mut out = std::io::stdout().lock();
        if out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
