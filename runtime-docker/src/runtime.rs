//! [`DockerRuntime`]: [`ContainerRuntime`] over the Docker Engine API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{DOCKER, DOCKER_PRIORITY};
use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use portwarden_core::{
    Container, ContainerId, ContainerRuntime, ContainerState, Error, ErrorChain, Result, RuntimeEvent, RuntimeInfo,
    RuntimeName,
};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::client::DockerClient;
use crate::{api, convert, events};

/// Inspect calls in flight at once while listing: enough to hide latency,
/// few enough not to load dockerd on a busy host.
const INSPECT_CONCURRENCY: usize = 8;

/// A connected Docker Engine.
pub struct DockerRuntime {
    client: DockerClient,
    proc_root: PathBuf,
}

impl DockerRuntime {
    /// A client for the engine at `socket`. Every call but the event stream
    /// is bounded by `request_timeout`; `proc_root` is where the host's
    /// `/proc` is mounted, for network namespace paths.
    pub fn new(socket: &Path, proc_root: &Path, request_timeout: Duration) -> Self {
        Self { client: DockerClient::new(socket, request_timeout), proc_root: proc_root.to_path_buf() }
    }

    /// Who answers: Docker Engine, or an engine that serves Docker's API
    /// as well (Podman), which is refused as the wrong protocol, naming it.
    pub(crate) async fn version(&self) -> Result<RuntimeInfo> {
        match crate::compat::engine(&self.client).await? {
            crate::compat::Engine::Podman { version } => Err(Error::protocol(
                "GET /version",
                format!("this is Podman {version} (its Docker-compatible API); the `podman` runtime reads it"),
            )),
            crate::compat::Engine::Docker { name, version, api_version } => {
                Ok(RuntimeInfo { runtime: DOCKER, name, version, api_version: Some(api_version) })
            }
        }
    }

    /// Inspects a listed container for its PID; falls back to the list entry.
    async fn describe(&self, summary: api::Summary) -> Option<Container> {
        let id = ContainerId::new(summary.id.clone());
        let alive = matches!(summary.state.as_str(), "running" | "paused");
        if !alive {
            return Some(convert::from_summary(summary, &self.proc_root));
        }
        match self.inspect(&id).await {
            Ok(container) => Some(container),
            // Removed between list and inspect.
            Err(Error::NotFound { .. }) => None,
            Err(e) => {
                let name = summary.names.first().map(|n| n.trim_start_matches('/').to_owned()).unwrap_or_default();
                warn!(container = %id, %name, error = %ErrorChain(&e),
                    "could not inspect container; using the list entry, which has no PID");
                Some(convert::from_summary(summary, &self.proc_root))
            }
        }
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    fn name(&self) -> RuntimeName {
        DOCKER
    }

    fn merge_priority(&self) -> u8 {
        DOCKER_PRIORITY
    }

    fn endpoint(&self) -> &Path {
        self.client.socket()
    }

    async fn info(&self) -> Result<RuntimeInfo> {
        self.version().await
    }

    async fn list(&self) -> Result<Vec<Container>> {
        let summaries: Vec<api::Summary> = self.client.get_json("/containers/json?all=1").await?;
        let described: Vec<Option<Container>> =
            futures::stream::iter(summaries).map(|s| self.describe(s)).buffered(INSPECT_CONCURRENCY).collect().await;
        Ok(described.into_iter().flatten().collect())
    }

    async fn inspect(&self, id: &ContainerId) -> Result<Container> {
        if !is_safe_id(id.as_str()) {
            return Err(Error::NotFound { what: format!("container {id}") });
        }
        let inspect: api::Inspect = self.client.get_json(&format!("/containers/{id}/json")).await?;
        let container = convert::from_inspect(inspect, &self.proc_root);
        if container.state == ContainerState::Unknown {
            warn!(container = %id, name = %container.name, "Docker reported an unknown container state");
        }
        Ok(container)
    }

    async fn events(&self, cancel: CancellationToken) -> Result<BoxStream<'static, Result<RuntimeEvent>>> {
        let filters = format!(r#"{{"type":["container"],"event":{}}}"#, json_list(convert::WATCHED_ACTIONS));
        let path = format!("/events?filters={}", percent_encode(&filters));
        let body = self.client.get_stream(&path).await?;
        Ok(events::decode(body).take_until(cancel.cancelled_owned()).boxed())
    }
}

/// Ids go into a URL path; anything but Docker's id and name characters is
/// refused rather than escaped, since no such container can exist.
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn json_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(","))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_url_safe() {
        assert_eq!(percent_encode(r#"{"a":["b c"]}"#), "%7B%22a%22%3A%5B%22b%20c%22%5D%7D");
        assert!(is_safe_id("0123abc") && is_safe_id("my_name.1-x"));
        assert!(!is_safe_id("../../version") && !is_safe_id("a?b") && !is_safe_id(""));
    }
}
