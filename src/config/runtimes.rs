//! `[runtimes]`: which runtimes to use and how to talk to them. Each runtime
//! has a section named after it (`[runtimes.docker]`, `[runtimes.podman]`,
//! or an embedder's `[runtimes.<name>]`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use portwarden_runtime_docker::DockerProvider;
use portwarden_runtime_podman::PodmanProvider;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// `[runtimes]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
    /// `[runtimes.docker]`: Docker Engine.
    pub docker: DockerConfig,
    /// `[runtimes.containerd]`: containerd's native API.
    pub containerd: ContainerdConfig,
    /// `[runtimes.cri]`: the Kubernetes CRI (CRI-O, or containerd's CRI plugin).
    pub cri: CriConfig,
    /// `[runtimes.podman]`: Podman's REST API.
    pub podman: PodmanConfig,
    /// The sections of runtimes an embedder registers, by name.
    #[serde(flatten)]
    pub other: BTreeMap<String, RuntimeConfig>,
    /// Only these runtimes, when set (`--runtime`); not a file setting.
    #[serde(skip)]
    pub only: Option<Vec<String>>,
}

impl Default for RuntimesConfig {
    fn default() -> Self {
        Self {
            probe_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            resync_interval: Duration::from_secs(300),
            docker: DockerConfig::default(),
            containerd: ContainerdConfig::default(),
            cri: CriConfig::default(),
            podman: PodmanConfig::default(),
            other: BTreeMap::new(),
            only: None,
        }
    }
}

impl RuntimesConfig {
    /// Whether the runtime called `name` is enabled, and its pinned sockets.
    pub fn get(&self, name: &str) -> (bool, &[PathBuf]) {
        match name {
            "docker" => (self.docker.enabled, &self.docker.sockets),
            "containerd" => (self.containerd.enabled, &self.containerd.sockets),
            "cri" => (self.cri.enabled, &self.cri.sockets),
            "podman" => (self.podman.enabled, &self.podman.sockets),
            other => self.other.get(other).map_or((true, &[][..]), |r| (r.enabled, &r.sockets[..])),
        }
    }

    /// Pins `sockets` for the runtime called `name`.
    pub fn pin(&mut self, name: &str, sockets: Vec<PathBuf>) {
        match name {
            "docker" => self.docker.sockets = sockets,
            "containerd" => self.containerd.sockets = sockets,
            "cri" => self.cri.sockets = sockets,
            "podman" => self.podman.sockets = sockets,
            other => self.other.entry(other.to_owned()).or_default().sockets = sockets,
        }
    }

    /// Every runtime name the config mentions: its sections and `--runtime`.
    pub fn named(&self) -> impl Iterator<Item = &str> {
        self.other.keys().map(String::as_str).chain(self.only.iter().flatten().map(String::as_str))
    }
}

/// A runtime section with only the common settings; an embedder's runtime
/// reads its own from `options`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Use this runtime when its socket answers. Default: `true`.
    pub enabled: bool,
    /// Sockets to use instead of the defaults, taken exactly as given (not
    /// under `host_root`). Default: empty, meaning the runtime's usual paths.
    /// Example: `sockets = ["/run/user-docker.sock"]`.
    pub sockets: Vec<PathBuf>,
    /// The runtime's own settings, as its provider defines them.
    pub options: toml::Table,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { enabled: true, sockets: Vec::new(), options: toml::Table::new() }
    }
}

/// `[runtimes.docker]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Use Docker when its socket answers. Default: `true`.
    pub enabled: bool,
    /// Sockets to use instead of the defaults, taken exactly as given.
    pub sockets: Vec<PathBuf>,
    /// Collect containers' output through Docker's logs API. Default: `true`.
    pub logs: bool,
    /// Log drivers whose containers are not read through the logs API:
    /// they send to the agent's listeners, and reading Docker's copy too
    /// would duplicate. Default: `["syslog", "fluentd"]`.
    pub skip_log_drivers: Vec<String>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sockets: Vec::new(),
            logs: true,
            skip_log_drivers: DockerProvider::SKIP_LOG_DRIVERS.iter().map(|d| (*d).to_owned()).collect(),
        }
    }
}

/// `[runtimes.podman]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PodmanConfig {
    /// Use Podman when its socket answers. Default: `true`.
    pub enabled: bool,
    /// Sockets to use instead of the defaults, taken exactly as given.
    pub sockets: Vec<PathBuf>,
    /// Collect containers' output through Podman's logs API. Default: `true`.
    pub logs: bool,
    /// As Docker's: log drivers whose containers are not read. Default:
    /// `["none", "passthrough"]`, which cannot be read back.
    pub skip_log_drivers: Vec<String>,
}

impl Default for PodmanConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sockets: Vec::new(),
            logs: true,
            skip_log_drivers: PodmanProvider::SKIP_LOG_DRIVERS.iter().map(|d| (*d).to_owned()).collect(),
        }
    }
}

/// `[runtimes.containerd]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerdConfig {
    /// Use containerd when its socket answers. Default: `true`.
    pub enabled: bool,
    /// Sockets to use instead of the defaults, taken exactly as given.
    pub sockets: Vec<PathBuf>,
    /// Namespaces to watch. Default: empty, meaning all, including ones
    /// created later. Example: `namespaces = ["default", "moby"]`.
    pub namespaces: Vec<String>,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        Self { enabled: true, sockets: Vec::new(), namespaces: Vec::new() }
    }
}

/// `[runtimes.cri]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriConfig {
    /// Use the CRI when its socket answers. Default: `true`.
    pub enabled: bool,
    /// Sockets to use instead of the defaults, taken exactly as given.
    pub sockets: Vec<PathBuf>,
    /// `auto` uses `GetContainerEvents` where the runtime has it and polls
    /// otherwise; `poll` always polls. Default: `auto`.
    pub events: CriEvents,
    /// How often the polling fallback lists containers. Default: `1s`.
    #[serde(with = "crate::duration")]
    pub poll_interval: Duration,
}

impl Default for CriConfig {
    fn default() -> Self {
        Self { enabled: true, sockets: Vec::new(), events: CriEvents::Auto, poll_interval: Duration::from_secs(1) }
    }
}

/// How the CRI runtime learns about changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CriEvents {
    /// Stream events when supported, else poll.
    Auto,
    /// Always poll.
    Poll,
}

/// A duration field read on its own.
#[derive(Deserialize)]
#[serde(transparent)]
struct Dur(#[serde(with = "crate::duration")] Duration);

/// By hand rather than derived: the built-in sections are typed (so a typo
/// in them is an error naming its line), and any other key is the section
/// of a runtime an embedder registers, checked against the registry when
/// the agent starts.
impl<'de> Deserialize<'de> for RuntimesConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Sections;
        impl<'de> Visitor<'de> for Sections {
            type Value = RuntimesConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("runtime settings and [runtimes.<name>] sections")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RuntimesConfig, A::Error> {
                let mut c = RuntimesConfig::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "probe_timeout" => c.probe_timeout = map.next_value::<Dur>()?.0,
                        "request_timeout" => c.request_timeout = map.next_value::<Dur>()?.0,
                        "resync_interval" => c.resync_interval = map.next_value::<Dur>()?.0,
                        "docker" => c.docker = map.next_value()?,
                        "containerd" => c.containerd = map.next_value()?,
                        "cri" => c.cri = map.next_value()?,
                        "podman" => c.podman = map.next_value()?,
                        _ => {
                            let section = map.next_value()?;
                            c.other.insert(key, section);
                        }
                    }
                }
                Ok(c)
            }
        }
        deserializer.deserialize_map(Sections)
    }
}
