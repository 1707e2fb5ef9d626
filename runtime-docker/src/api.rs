//! The parts of Docker Engine API responses Portwarden reads.
//!
//! Fields Docker may omit or send as `null` are optional, so an older or
//! newer daemon still decodes; a response missing an id is malformed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::Deserialize;

/// `GET /version`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Version {
    pub(crate) version: String,
    pub(crate) api_version: String,
    #[serde(default)]
    pub(crate) platform: Option<Platform>,
    #[serde(default)]
    pub(crate) components: Vec<Component>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Component {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) version: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Platform {
    #[serde(default)]
    pub(crate) name: String,
}

/// One entry of `GET /containers/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Summary {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) names: Vec<String>,
    #[serde(default)]
    pub(crate) image: String,
    #[serde(default)]
    pub(crate) state: String,
    #[serde(default)]
    pub(crate) labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub(crate) host_config: Option<SummaryHostConfig>,
    #[serde(default)]
    pub(crate) network_settings: Option<NetworkSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SummaryHostConfig {
    #[serde(default)]
    pub(crate) network_mode: String,
    /// Only in inspect.
    #[serde(default)]
    pub(crate) log_config: Option<LogConfig>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogConfig {
    #[serde(rename = "Type", default)]
    pub(crate) kind: String,
}

/// `GET /containers/{id}/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Inspect {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) state: Option<State>,
    #[serde(default)]
    pub(crate) config: Option<Config>,
    #[serde(default)]
    pub(crate) host_config: Option<SummaryHostConfig>,
    #[serde(default)]
    pub(crate) network_settings: Option<NetworkSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct State {
    #[serde(default)]
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) pid: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Config {
    #[serde(default)]
    pub(crate) image: String,
    #[serde(default)]
    pub(crate) tty: bool,
    #[serde(default)]
    pub(crate) labels: Option<BTreeMap<String, String>>,
}

/// A container's `NetworkSettings`, as Docker's inspect and list give it,
/// and Podman's libpod inspect too.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    #[serde(default)]
    networks: Option<HashMap<String, Endpoint>>,
    /// The default network's address (Podman, Docker's default bridge).
    #[serde(default, rename = "IPAddress")]
    ip_address: String,
    #[serde(default, rename = "GlobalIPv6Address")]
    global_ipv6_address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Endpoint {
    #[serde(default, rename = "IPAddress")]
    ip_address: String,
    #[serde(default, rename = "GlobalIPv6Address")]
    global_ipv6_address: String,
}

impl NetworkSettings {
    /// Every address the container has, on every network, sorted and
    /// without repeats.
    pub fn addresses(self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .networks
            .unwrap_or_default()
            .into_values()
            .flat_map(|ep| [ep.ip_address, ep.global_ipv6_address])
            .chain([self.ip_address, self.global_ipv6_address])
            .filter_map(|ip| ip.parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }
}

/// One line of `GET /events`.
#[derive(Debug, Deserialize)]
pub(crate) struct Event {
    #[serde(rename = "Type", default)]
    pub(crate) kind: String,
    #[serde(rename = "Action", default)]
    pub(crate) action: String,
    #[serde(rename = "Actor")]
    pub(crate) actor: Actor,
    #[serde(rename = "timeNano", default)]
    pub(crate) time_nano: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Actor {
    #[serde(rename = "ID")]
    pub(crate) id: String,
    #[serde(rename = "Attributes", default)]
    pub(crate) attributes: Option<HashMap<String, String>>,
}
