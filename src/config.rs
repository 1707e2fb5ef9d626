//! The agent's configuration file (TOML), merged under environment
//! variables and flags.
//!
//! Every table denies unknown keys, so a typo is an error naming the key and
//! its line, never a silently ignored setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use portwarden_core::{DetectOptions, InventoryOptions, RuntimeEnv, RuntimeKind};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the host's filesystem is visible. Runtime sockets are looked for
    /// under it. Default: `/`. Example: `host_root = "/host"`.
    pub host_root: Option<PathBuf>,
    /// Where the host's `/proc` is visible. Default: `/host/proc` when it
    /// exists, else `/proc`.
    pub proc_root: Option<PathBuf>,
    /// The agent's own logs.
    pub log: LogConfig,
    /// Container runtime detection.
    pub runtimes: RuntimesConfig,
}

/// `[log]`: the agent's own diagnostics.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`. Default: `text`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `portwarden_core=debug`. Default: `info`.
    /// The `RUST_LOG` environment variable overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// How the agent writes its own logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[runtimes]`: which runtimes to use and how to talk to them.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimesConfig {
    /// Deadline for connecting to one socket and getting its version.
    /// Default: `2s`.
    #[serde(with = "crate::duration")]
    pub probe_timeout: Duration,
    /// Deadline for one API call (the event stream excepted). Default: `10s`.
    #[serde(with = "crate::duration")]
    pub request_timeout: Duration,
    /// Re-list every runtime this often to repair missed events; `0s`
    /// disables it. Default: `5m`.
    #[serde(with = "crate::duration")]
    pub resync_interval: Duration,
    /// Docker Engine.
    pub docker: RuntimeConfig,
}

impl Default for RuntimesConfig {
    fn default() -> Self {
        Self {
            probe_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            resync_interval: Duration::from_secs(300),
            docker: RuntimeConfig::default(),
        }
    }
}

/// One runtime's settings, e.g. `[runtimes.docker]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Use this runtime when its socket answers. Default: `true`.
    pub enabled: bool,
    /// Sockets to use instead of the defaults, taken exactly as given (not
    /// under `host_root`). Default: empty, meaning the runtime's usual paths.
    /// Example: `sockets = ["/run/user-docker.sock"]`.
    pub sockets: Vec<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { enabled: true, sockets: Vec::new() }
    }
}

impl Config {
    /// Reads and validates a config file. Errors name the file, the line and
    /// the offending key.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Parses config text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        Ok(toml::from_str(text)?)
    }

    /// The host root, defaulted.
    pub fn host_root(&self) -> PathBuf {
        self.host_root.clone().unwrap_or_else(|| PathBuf::from("/"))
    }

    /// The proc root, defaulted: `/host/proc` when the host's `/proc` is
    /// mounted there, else the agent's own `/proc` (running on the host).
    pub fn proc_root(&self) -> PathBuf {
        self.proc_root.clone().unwrap_or_else(|| {
            let mounted = Path::new("/host/proc");
            if mounted.join("1").exists() { mounted.to_path_buf() } else { PathBuf::from("/proc") }
        })
    }

    /// The settings of one runtime.
    pub fn runtime(&self, kind: RuntimeKind) -> Option<&RuntimeConfig> {
        match kind {
            RuntimeKind::Docker => Some(&self.runtimes.docker),
            RuntimeKind::Containerd | RuntimeKind::Cri => None,
        }
    }

    /// What [`Registry::detect`](portwarden_core::Registry::detect) needs.
    pub fn detect_options(&self) -> DetectOptions {
        let mut opts = DetectOptions {
            host_root: self.host_root(),
            env: RuntimeEnv { proc_root: self.proc_root() },
            probe_timeout: self.runtimes.probe_timeout,
            ..DetectOptions::default()
        };
        for kind in RuntimeKind::ALL {
            let Some(rt) = self.runtime(kind) else { continue };
            if !rt.enabled {
                opts.disabled.insert(kind);
            }
            if !rt.sockets.is_empty() {
                opts.pinned.insert(kind, rt.sockets.clone());
            }
        }
        opts
    }

    /// What the [`Inventory`](portwarden_core::Inventory) needs.
    pub fn inventory_options(&self) -> InventoryOptions {
        let every = self.runtimes.resync_interval;
        InventoryOptions { resync_interval: (!every.is_zero()).then_some(every), ..InventoryOptions::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_names_the_key_and_the_line() {
        let err =
            Config::parse("[runtimes]\nprobe_timeout = \"1s\"\n\n[runtimes.docker]\nsocket = []\n").expect_err("typo");
        let text = format!("{err:#}");
        assert!(text.contains("socket"), "{text}");
        assert!(text.contains("line 5"), "{text}");
    }

    #[test]
    fn bad_values_are_errors_too() {
        let err = Config::parse("[runtimes]\nprobe_timeout = \"fast\"\n").expect_err("bad duration");
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(Config::parse("[log]\nformat = \"xml\"\n").is_err());
    }

    #[test]
    fn sockets_pin_and_enabled_false_disables() {
        let cfg =
            Config::parse("host_root = \"/host\"\n[runtimes.docker]\nenabled = false\nsockets = [\"/tmp/d.sock\"]\n")
                .expect("valid");
        let opts = cfg.detect_options();
        assert_eq!(opts.host_root, PathBuf::from("/host"));
        assert!(opts.disabled.contains(&RuntimeKind::Docker));
        assert_eq!(opts.pinned[&RuntimeKind::Docker], [PathBuf::from("/tmp/d.sock")]);
    }

    #[test]
    fn the_default_config_round_trips() {
        let text = toml::to_string(&Config::default()).expect("serialize");
        assert_eq!(Config::parse(&text).expect("parse"), Config::default());
    }
}
