//! The config the managed Suricata runs with, in three layers that Suricata
//! itself merges, in this order:
//!
//! 1. Suricata's own default `suricata.yaml` (the one its package ships), so
//!    every parser and setting starts where Suricata users expect it;
//! 2. `portwarden.yaml`: what the agent needs (EVE to a pipe, rules) and the
//!    user's `[nids]` choices
//!    (address and port groups, runmode, threads, bounded flow timeouts);
//! 3. the user's own YAML (`nids.include`), if any.
//!
//! `nids.set` entries come last, as Suricata's `--set`, which nothing in the
//! files can override. A later layer replaces a top-level section of an
//! earlier one whole; dotted keys (`vars.address-groups.HOME_NET`) replace
//! one value.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::groups::{self, GroupKind};

/// Where Suricata packages put their default config.
pub(crate) const DEFAULT_CONFIGS: &[&str] = &["/etc/suricata/suricata.yaml", "/usr/local/etc/suricata/suricata.yaml"];

/// Seconds without a packet after which Suricata ends a flow, and so
/// inspects data that was never acknowledged. Suricata's own defaults are up
/// to 600 s for TCP; these bound how late such an alert can come.
pub(crate) const FLOW_TIMEOUT_SECS: u32 = 45;

/// Emergency flow timeouts (Suricata's, when its flow table is full) must
/// stay below the regular ones.
const EMERGENCY_TIMEOUT_SECS: u32 = 30;

/// Top-level sections Suricata 7 reads; a `set` outside them is a typo.
const SECTIONS: &[&str] = &[
    "action-order",
    "af-packet",
    "af-xdp",
    "app-layer",
    "asn1-max-frames",
    "autofp-scheduler",
    "capture",
    "classification-file",
    "coredump",
    "daemon-directory",
    "datasets",
    "decoder",
    "default-log-dir",
    "default-packet-size",
    "default-rule-path",
    "defrag",
    "detect",
    "detect-engine",
    "dpdk",
    "engine-analysis",
    "exception-policy",
    "flow",
    "flow-timeouts",
    "geoip-database",
    "host",
    "host-mode",
    "host-os-policy",
    "ippair",
    "legacy",
    "livedev",
    "logging",
    "luajit",
    "max-pending-packets",
    "mpm-algo",
    "napatech",
    "netmap",
    "nflog",
    "nfq",
    "outputs",
    "packet-alert-max",
    "pcap",
    "pcap-file",
    "pcre",
    "pfring",
    "plugins",
    "profiling",
    "reference-config-file",
    "rule-files",
    "run-as",
    "runmode",
    "security",
    "sensor-name",
    "spm-algo",
    "stats",
    "stream",
    "threading",
    "threshold-file",
    "unix-command",
    "vars",
    "vlan",
];

/// Sections the agent writes itself; changing them through `set` would cut
/// the agent off from Suricata. Each names the `[nids]` key to use instead.
const OWNED: &[(&str, &str)] = &[
    ("outputs", "nids.events"),
    ("default-log-dir", "nids.run_dir"),
    ("rule-files", "nids.rules"),
    ("runmode", "nids.runmode"),
];

/// Suricata's runmodes for reading the mirror (its pcap-file runmodes,
/// named as Suricata names them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runmode {
    /// One thread reads and hands packets to inspection threads by flow
    /// (Suricata's default).
    Autofp,
    /// One thread does everything.
    Single,
}

impl Runmode {
    /// Suricata's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Runmode::Autofp => "autofp",
            Runmode::Single => "single",
        }
    }
}

/// The user's say in Suricata's config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuricataSettings {
    /// Suricata's default config to start from; `None`: the first of
    /// `/etc/suricata/suricata.yaml` and `/usr/local/etc/suricata/suricata.yaml`
    /// that exists (none found: Suricata's built-in defaults).
    pub defaults: Option<PathBuf>,
    /// `vars.address-groups` to set (`HOME_NET`, ...); others keep Suricata's.
    pub address_groups: BTreeMap<String, String>,
    /// `vars.port-groups` to set (`HTTP_PORTS`, ...).
    pub port_groups: BTreeMap<String, String>,
    /// `key=value` overrides, passed as `--set`.
    pub set: Vec<String>,
    /// A YAML file merged over the generated config.
    pub include: Option<PathBuf>,
    /// Suricata's runmode; `None`: Suricata's default (autofp).
    pub runmode: Option<Runmode>,
    /// Inspection threads (autofp); `None`: Suricata's default, one per CPU.
    pub threads: Option<u16>,
}

/// Address groups Suricata's default config defines, which a user's group
/// may name as `$VAR`.
const DEFAULT_ADDRESS_GROUPS: &[&str] = &[
    "HOME_NET",
    "EXTERNAL_NET",
    "HTTP_SERVERS",
    "SMTP_SERVERS",
    "SQL_SERVERS",
    "DNS_SERVERS",
    "TELNET_SERVERS",
    "AIM_SERVERS",
    "DC_SERVERS",
    "DNP3_SERVER",
    "DNP3_CLIENT",
    "MODBUS_CLIENT",
    "MODBUS_SERVER",
    "ENIP_CLIENT",
    "ENIP_SERVER",
];

/// Port groups Suricata's default config defines.
const DEFAULT_PORT_GROUPS: &[&str] = &[
    "HTTP_PORTS",
    "SHELLCODE_PORTS",
    "ORACLE_PORTS",
    "SSH_PORTS",
    "DNP3_PORTS",
    "MODBUS_PORTS",
    "FILE_DATA_PORTS",
    "FTP_PORTS",
    "GENEVE_PORTS",
    "VXLAN_PORTS",
    "TEREDO_PORTS",
];

impl SuricataSettings {
    /// Checks everything that can be checked without running Suricata. The
    /// error names the `[nids]` key and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        groups::validate(&self.address_groups, GroupKind::Address, DEFAULT_ADDRESS_GROUPS)
            .map_err(|e| format!("nids.address_groups: {e}"))?;
        groups::validate(&self.port_groups, GroupKind::Port, DEFAULT_PORT_GROUPS)
            .map_err(|e| format!("nids.port_groups: {e}"))?;
        for entry in &self.set {
            let (key, _) = split_set(entry).map_err(|e| format!("nids.set: `{entry}`: {e}"))?;
            let section = key.split('.').next().unwrap_or_default();
            if !SECTIONS.contains(&section) {
                return Err(format!("nids.set: `{entry}`: Suricata has no setting `{section}`"));
            }
            if let Some((_, instead)) = OWNED.iter().find(|(s, _)| *s == section) {
                return Err(format!("nids.set: `{entry}`: the agent writes `{section}` itself; use {instead}"));
            }
        }
        if let Some(include) = &self.include {
            std::fs::metadata(include).map_err(|e| format!("nids.include: {}: {e}", include.display()))?;
        }
        if self.threads == Some(0) {
            return Err("nids.threads: must be at least 1".into());
        }
        if let Some(path) = &self.defaults {
            std::fs::metadata(path).map_err(|e| format!("nids.suricata_config: {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// The default config to include, if one is found.
    pub fn defaults_file(&self) -> Option<PathBuf> {
        self.defaults.clone().or_else(|| DEFAULT_CONFIGS.iter().map(PathBuf::from).find(|p| p.is_file()))
    }

    /// `--set key=value` for each entry.
    pub fn set_args(&self) -> Vec<OsString> {
        self.set.iter().flat_map(|s| [OsString::from("--set"), OsString::from(s.trim())]).collect()
    }
}

/// `key=value` → (key, value), with a key of Suricata's shape.
fn split_set(entry: &str) -> Result<(&str, &str), String> {
    let (key, value) = entry.split_once('=').ok_or("not `key=value`")?;
    let key = key.trim();
    let ok = !key.is_empty()
        && key
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    if !ok {
        return Err(format!("`{key}` is not a Suricata key (dotted names: `stream.midstream`)"));
    }
    Ok((key, value.trim()))
}

/// What the agent's layer needs besides the settings.
#[derive(Clone, Debug)]
pub(crate) struct AgentLayer<'a> {
    /// The rule files to load.
    pub rule_files: &'a [PathBuf],
    /// The directory relative rule references (`filemd5:`, datasets) resolve in.
    pub rule_dir: &'a Path,
    /// Suricata's log directory.
    pub log_dir: &'a Path,
    /// The named pipe EVE goes to (see `eve::serve_fifo`).
    pub eve_pipe: &'a Path,
    /// EVE types besides alerts and stats.
    pub extra_types: &'a [String],
    /// Seconds between stats events.
    pub stats_interval: u32,
}

/// Quotes a string for YAML (double-quoted style).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The agent's layer, `portwarden.yaml`.
pub(crate) fn agent_layer(settings: &SuricataSettings, a: &AgentLayer<'_>) -> String {
    let mut y = String::from(HEADER);
    let p = |p: &Path| quoted(&p.display().to_string());
    let _ = writeln!(y, "default-log-dir: {}", p(a.log_dir));
    let _ = writeln!(y, "default-rule-path: {}", p(a.rule_dir));
    y.push_str("rule-files:\n");
    for f in a.rule_files {
        let _ = writeln!(y, "  - {}", p(f));
    }
    for (name, value) in &settings.address_groups {
        let _ = writeln!(y, "vars.address-groups.{name}: {}", quoted(value));
    }
    for (name, value) in &settings.port_groups {
        let _ = writeln!(y, "vars.port-groups.{name}: {}", quoted(value));
    }
    y.push_str("outputs:\n  - eve-log:\n      enabled: yes\n      filetype: regular\n");
    let _ = writeln!(y, "      filename: {}", p(a.eve_pipe));
    // Suricata's Community ID on every event: the key other tools (Zeek,
    // Arkime, a SIEM) join flows and alerts on.
    y.push_str("      community-id: yes\n      community-id-seed: 0\n");
    y.push_str(
        "      types:\n        - alert:\n            tagged-packets: no\n        - stats:\n            totals: yes\n            threads: no\n            deltas: no\n",
    );
    for t in a.extra_types {
        let _ = writeln!(y, "        - {t}");
    }
    let _ = writeln!(y, "stats.enabled: yes\nstats.interval: {}", a.stats_interval.max(1));
    y.push_str("logging:\n  default-log-level: info\n  outputs:\n    - console:\n        enabled: yes\n");
    if let Some(runmode) = settings.runmode {
        let _ = writeln!(y, "runmode: {}", runmode.as_str());
    }
    if let Some(threads) = settings.threads {
        // Suricata sizes autofp's inspection threads as CPUs × this ratio
        // (rounded down): aim between two counts so it lands on `threads`.
        let cpus = online_cpus().max(1);
        let _ = writeln!(y, "threading.detect-thread-ratio: {:.4}", (f64::from(threads) + 0.5) / cpus as f64);
    }
    y.push_str("vlan.use-for-tracking: true\n");
    // A bad checksum does not keep a segment out of the stream (as `-k
    // none`): a sensor sees what the receiver may still accept. Checksum
    // keywords still work: the mirror fills in checksums left to offload.
    y.push_str("stream.checksum-validation: no\n");
    y.push_str("host-mode: sniffer-only\n");
    y.push_str("detect-engine:\n  - rule-reload: true\n");
    for proto in ["default", "tcp", "udp", "icmp"] {
        let (t, e) = (FLOW_TIMEOUT_SECS, EMERGENCY_TIMEOUT_SECS);
        let _ = writeln!(
            y,
            "flow-timeouts.{proto}.new: {t}\nflow-timeouts.{proto}.established: {t}\nflow-timeouts.{proto}.emergency-new: {e}\nflow-timeouts.{proto}.emergency-established: {e}"
        );
        if proto != "udp" && proto != "icmp" {
            let closed = if proto == "tcp" { 10 } else { 0 };
            let _ = writeln!(
                y,
                "flow-timeouts.{proto}.closed: {closed}\nflow-timeouts.{proto}.emergency-closed: {}",
                closed.min(5)
            );
        }
    }
    y
}

/// The CPUs online, counted as Suricata counts them.
fn online_cpus() -> u32 {
    // SAFETY: sysconf has no preconditions.
    u32::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).unwrap_or(1)
}

/// The config Suricata is started with: the three layers, by `include`.
pub(crate) fn main_config(defaults: Option<&Path>, agent: &Path, user: Option<&Path>) -> String {
    let mut y = format!("{HEADER}include:\n");
    for layer in [defaults, Some(agent), user].into_iter().flatten() {
        let _ = writeln!(y, "  - {}", quoted(&layer.display().to_string()));
    }
    y
}

/// The header Suricata insists on at the top of every YAML file.
const HEADER: &str = "%YAML 1.1\n---\n";

/// Lines [`stage_include`] puts before the user's own (its header, when the
/// file lacks one).
pub(crate) fn header_lines_added(include: &Path) -> usize {
    let text = std::fs::read_to_string(include).unwrap_or_default();
    if text.trim_start().starts_with("%YAML") { 0 } else { HEADER.lines().count() }
}

/// Copies the user's include into `dir`, adding the `%YAML 1.1` header
/// Suricata insists on when the file lacks it.
pub(crate) fn stage_include(include: &Path, dir: &Path) -> crate::Result<PathBuf> {
    let text = std::fs::read_to_string(include)
        .map_err(|source| crate::Error::Include { path: include.to_path_buf(), source })?;
    let staged = dir.join("include.yaml");
    let body = if text.trim_start().starts_with("%YAML") { text } else { format!("{HEADER}{text}") };
    std::fs::write(&staged, body).map_err(|source| crate::Error::Config { path: staged.clone(), source })?;
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_entries_are_checked() {
        let ok = |s: &str| SuricataSettings { set: vec![s.into()], ..Default::default() }.validate();
        assert_eq!(ok("stream.midstream=true"), Ok(()));
        assert_eq!(ok("app-layer.protocols.modbus.enabled = yes"), Ok(()));
        assert!(ok("streams.midstream=true").unwrap_err().contains("no setting `streams`"));
        assert!(ok("stream.midstream").unwrap_err().contains("key=value"));
        assert!(ok("outputs.0.fast.enabled=yes").unwrap_err().contains("nids.events"));
        assert!(ok("stream..x=1").is_err());
    }

    #[test]
    fn layers_are_included_in_order() {
        let main = main_config(Some(Path::new("/etc/suricata/suricata.yaml")), Path::new("/r/p.yaml"), None);
        assert_eq!(main, "%YAML 1.1\n---\ninclude:\n  - \"/etc/suricata/suricata.yaml\"\n  - \"/r/p.yaml\"\n");
    }
}
