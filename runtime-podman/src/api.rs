//! The parts of Podman's `libpod` API responses the adapter reads.

use std::collections::BTreeMap;

use portwarden_runtime_docker::compat::NetworkSettings;
use serde::Deserialize;

/// One entry of `GET /libpod/containers/json?all=true`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListEntry {
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
    pub(crate) pod_name: String,
    #[serde(default)]
    pub(crate) is_infra: bool,
}

/// `GET /libpod/containers/{id}/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Inspect {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) image_name: String,
    pub(crate) state: State,
    /// The pod's id; empty outside a pod.
    #[serde(default)]
    pub(crate) pod: String,
    /// True for a pod's infra container, which holds its namespaces.
    #[serde(default)]
    pub(crate) is_infra: bool,
    #[serde(default)]
    pub(crate) config: Option<Config>,
    #[serde(default)]
    pub(crate) network_settings: Option<NetworkSettings>,
    #[serde(default)]
    pub(crate) host_config: Option<HostConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct State {
    #[serde(default)]
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) pid: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Config {
    #[serde(default)]
    pub(crate) labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HostConfig {
    #[serde(default)]
    pub(crate) network_mode: String,
}

/// `GET /libpod/pods/{id}/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Pod {
    #[serde(default)]
    pub(crate) name: String,
}
