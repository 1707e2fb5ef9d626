//! [`PodmanRuntime`]: [`ContainerRuntime`] over Podman's `libpod` API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use portwarden_core::{
    Container, ContainerId, ContainerRuntime, Error, ErrorChain, Result, RuntimeEvent, RuntimeInfo, RuntimeName,
    detached_subscription,
};
use portwarden_runtime_docker::compat::{self, DockerClient, Engine};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{PODMAN, PODMAN_PRIORITY, api, convert};

/// The `libpod` API version asked for: Podman 4.0 and later serve it.
const LIBPOD: &str = "/v4.0.0/libpod";

/// Inspect calls in flight at once while listing.
const INSPECT_CONCURRENCY: usize = 8;

/// How long a new event subscription gets to be refused before it counts
/// as accepted.
const SUBSCRIBE_SETTLE: Duration = Duration::from_millis(200);

/// The lifecycle events the inventory acts on, in libpod's names.
const WATCHED_ACTIONS: &str = r#"["create","start","died","pause","unpause","rename","remove"]"#;

/// A connected Podman service.
pub struct PodmanRuntime {
    client: DockerClient,
    proc_root: PathBuf,
    /// Pod names by pod id: a pod's name never changes.
    pods: Mutex<HashMap<String, String>>,
}

impl PodmanRuntime {
    /// A client for the service at `socket`. Every call but the event
    /// stream is bounded by `request_timeout`; `proc_root` is where the
    /// host's `/proc` is mounted, for network namespace paths.
    pub fn new(socket: &Path, proc_root: &Path, request_timeout: Duration) -> Self {
        Self {
            client: DockerClient::new(socket, request_timeout),
            proc_root: proc_root.to_path_buf(),
            pods: Mutex::default(),
        }
    }

    /// Who answers: Podman, or a Docker Engine, refused naming it.
    pub(crate) async fn version(&self) -> Result<RuntimeInfo> {
        match compat::engine(&self.client).await? {
            Engine::Podman { version } => {
                Ok(RuntimeInfo { runtime: PODMAN, name: "Podman".into(), api_version: Some(version.clone()), version })
            }
            Engine::Docker { name, version, .. } => Err(Error::protocol(
                "GET /version",
                format!("this is {name} {version}, not Podman; the `docker` runtime reads it"),
            )),
        }
    }

    /// A pod's name by id, asked once.
    async fn pod_name(&self, pod: &str) -> Option<String> {
        if pod.is_empty() || !compat::is_safe_id(pod) {
            return None;
        }
        if let Some(name) = self.pods.lock().unwrap_or_else(|e| e.into_inner()).get(pod) {
            return Some(name.clone());
        }
        match self.client.get_json::<api::Pod>(&format!("{LIBPOD}/pods/{pod}/json")).await {
            Ok(p) => {
                self.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(pod.to_owned(), p.name.clone());
                Some(p.name)
            }
            Err(e) => {
                warn!(pod, error = %ErrorChain(&e), "could not look up a Podman pod's name");
                None
            }
        }
    }

    /// Inspects a listed container that is alive (for its PID and
    /// addresses); the list entry does for one that is not.
    async fn describe(&self, entry: api::ListEntry) -> Option<Container> {
        if !matches!(entry.state.as_str(), "running" | "paused" | "stopping") {
            return Some(convert::from_list(entry));
        }
        match self.inspect(&ContainerId::new(entry.id.clone())).await {
            Ok(c) => Some(c),
            Err(Error::NotFound { .. }) => None,
            Err(e) => {
                warn!(container = %entry.id, error = %ErrorChain(&e),
                    "could not inspect container; using the list entry, which has no PID");
                Some(convert::from_list(entry))
            }
        }
    }
}

#[async_trait]
impl ContainerRuntime for PodmanRuntime {
    fn name(&self) -> RuntimeName {
        PODMAN
    }

    fn merge_priority(&self) -> u8 {
        PODMAN_PRIORITY
    }

    fn endpoint(&self) -> &Path {
        self.client.socket()
    }

    async fn info(&self) -> Result<RuntimeInfo> {
        self.version().await
    }

    async fn list(&self) -> Result<Vec<Container>> {
        let entries: Vec<api::ListEntry> = self.client.get_json(&format!("{LIBPOD}/containers/json?all=true")).await?;
        let described: Vec<Option<Container>> =
            futures::stream::iter(entries).map(|e| self.describe(e)).buffered(INSPECT_CONCURRENCY).collect().await;
        // Forget pods that are gone with their last container.
        let live: std::collections::HashSet<String> =
            described.iter().flatten().filter_map(|c| c.pod.as_ref()).map(|p| p.uid.clone()).collect();
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).retain(|id, _| live.contains(id));
        Ok(described.into_iter().flatten().collect())
    }

    async fn inspect(&self, id: &ContainerId) -> Result<Container> {
        if !compat::is_safe_id(id.as_str()) {
            return Err(Error::NotFound { what: format!("container {id}") });
        }
        let inspect: api::Inspect = self.client.get_json(&format!("{LIBPOD}/containers/{id}/json")).await?;
        let pod_name = self.pod_name(&inspect.pod).await;
        Ok(convert::from_inspect(inspect, pod_name, &self.proc_root))
    }

    async fn events(&self, cancel: CancellationToken) -> Result<BoxStream<'static, Result<RuntimeEvent>>> {
        let filters = format!(r#"{{"type":["container"],"event":{WATCHED_ACTIONS}}}"#);
        let path = format!("{LIBPOD}/events?stream=true&filters={}", compat::percent_encode(&filters));
        // Podman sends the response headers only with the first event: the
        // call runs detached, and counts as accepted unless refused at once.
        let client = self.client.clone();
        let call = async move { client.get_stream_unbounded(&path).await.map(compat::decode_events) };
        let events = detached_subscription(call, SUBSCRIBE_SETTLE, cancel.clone()).await?;
        Ok(events.take_until(cancel.cancelled_owned()).boxed())
    }
}
