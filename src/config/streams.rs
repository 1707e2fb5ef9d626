//! `[alerts]` and `[flows]`: detection's alerts and capture's flow records
//! as streams of their own, each with its outputs.

use portwarden_logs::OutputConfig;
use serde::{Deserialize, Serialize};

/// Where alerts go, besides the log outputs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Alerts also go to `[[logs.outputs]]`, among the log records.
    /// Default: `true`.
    pub to_log_outputs: bool,
    /// `[[alerts.outputs]]` get alerts at least this grave: Suricata's
    /// severity, 1 the gravest (from the rule's classtype or `priority`).
    /// Default: `255` (every alert).
    pub min_severity: u8,
    /// Outputs for alerts only, of the same types as `[[logs.outputs]]`.
    /// Default: none.
    pub outputs: Vec<OutputConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self { to_log_outputs: true, min_severity: 255, outputs: Vec::new() }
    }
}

impl AlertsConfig {
    /// Rejects values that parse but cannot work; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.min_severity >= 1, "alerts.min_severity must be 1 (gravest) to 255");
        super::logs::validate_outputs("alerts.outputs", &self.outputs)
    }
}

/// Where flow records (`capture.flows`) go, besides the log outputs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// Flow records also go to `[[logs.outputs]]`. Default: `true`.
    pub to_log_outputs: bool,
    /// Outputs for flow records only, of the same types as
    /// `[[logs.outputs]]`. Default: none.
    pub outputs: Vec<OutputConfig>,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        Self { to_log_outputs: true, outputs: Vec::new() }
    }
}

impl FlowsConfig {
    /// Rejects values that parse but cannot work; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        super::logs::validate_outputs("flows.outputs", &self.outputs)
    }
}
