//! `portwarden alerts`: intrusion alerts as they happen, from the running
//! daemon, or from detection run here when none runs.

use std::process::ExitCode;

use portwarden_proto::{AgentClient, v1};

use super::logs::text_line;
use crate::api::status_error;
use crate::config::Config;

pub(crate) async fn alerts(config: &Config, daemon: Option<AgentClient>, json: bool) -> anyhow::Result<ExitCode> {
    let Some(mut daemon) = daemon else {
        if !config.nids.active() {
            anyhow::bail!(
                "detection is off: no rules at {} (give --rules PATH, or --suricata external)",
                config.nids.rules.display()
            );
        }
        return super::run(config, crate::agent::RunMode::Alerts { json }).await;
    };
    let alerts = daemon.stream_alerts(v1::StreamAlertsRequest::default()).await.map_err(status_error)?.into_inner();
    super::print_stream(
        alerts,
        "alerts",
        |a| a.missed,
        |a| {
            Some(if json {
                format!("{}\n", a.json)
            } else {
                text_line(a.time_unix_nano, super::wire_name(a.container.as_ref()), "-", &a.message)
            })
        },
    )
    .await
}
