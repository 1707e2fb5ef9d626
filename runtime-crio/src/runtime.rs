//! [`CriRuntime`]: [`ContainerRuntime`] over the CRI `runtime.v1` API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{CRI, CRI_PRIORITY};
use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    Container as CriContainer, ContainerFilter, ContainerStatusRequest, GetEventsRequest, ListContainersRequest,
    PodSandboxStatus, PodSandboxStatusRequest, VersionRequest,
};
use portwarden_core::{
    Container, ContainerId, ContainerRuntime, Error, ErrorChain, Result, RuntimeEvent, RuntimeInfo, RuntimeName,
    detached_subscription,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::convert::{self, Parts};
use crate::{channel, events};

/// How long to wait for the runtime to refuse `GetContainerEvents` before
/// taking the stream as accepted (servers answer only with the first event).
const SUBSCRIBE_SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Status calls in flight at once while listing.
const STATUS_CONCURRENCY: usize = 8;

/// How to learn about container changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventMode {
    /// `GetContainerEvents` when the runtime has it, else polling.
    Auto,
    /// Always poll, even when the runtime streams events.
    Poll,
}

/// Tuning for [`CriRuntime`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriOptions {
    /// Deadline for each call but the event stream. Default: 10 s.
    pub request_timeout: Duration,
    /// How often the polling fallback lists containers. Default: 1 s.
    pub poll_interval: Duration,
    /// Events or polling. Default: [`EventMode::Auto`].
    pub event_mode: EventMode,
}

impl Default for CriOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            event_mode: EventMode::Auto,
        }
    }
}

/// A connected CRI runtime (CRI-O, containerd's CRI plugin, ...).
pub struct CriRuntime {
    client: RuntimeServiceClient<Channel>,
    socket: PathBuf,
    proc_root: PathBuf,
    options: CriOptions,
    polls: Arc<AtomicU64>,
}

impl CriRuntime {
    /// Connects to the CRI endpoint at `socket`.
    pub async fn connect(socket: &Path, proc_root: &Path, options: CriOptions) -> Result<Self> {
        let client = RuntimeServiceClient::new(channel::connect(socket).await?);
        Ok(Self {
            client,
            socket: socket.to_path_buf(),
            proc_root: proc_root.to_path_buf(),
            options,
            polls: Arc::default(),
        })
    }

    /// Polls completed by the polling fallback since connecting; zero while
    /// the runtime streams events.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    async fn call<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        let timeout = self.options.request_timeout;
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(channel::error(what, &self.socket, status)),
            Err(_) => Err(Error::Timeout { what: what.to_owned(), after: timeout }),
        }
    }

    async fn list_containers(&self, filter: Option<ContainerFilter>) -> Result<Vec<CriContainer>> {
        let mut client = self.client.clone();
        let list = self.call("ListContainers", client.list_containers(ListContainersRequest { filter })).await?;
        Ok(list.containers)
    }

    async fn sandbox(&self, id: &str) -> Result<PodSandboxStatus> {
        let mut client = self.client.clone();
        let request = PodSandboxStatusRequest { pod_sandbox_id: id.to_owned(), verbose: false };
        let response = self.call("PodSandboxStatus", client.pod_sandbox_status(request)).await?;
        response.status.ok_or_else(|| Error::protocol("PodSandboxStatus", "response without a status"))
    }

    /// A listed container with its verbose status (PID, log path) and pod.
    /// A failed status call falls back to the list entry, with a warning.
    async fn describe(&self, listed: CriContainer, sandbox: Option<&PodSandboxStatus>) -> Result<Container> {
        let mut client = self.client.clone();
        let request = ContainerStatusRequest { container_id: listed.id.clone(), verbose: true };
        let name = listed.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let image = listed.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        let status = match self.call("ContainerStatus", client.container_status(request)).await {
            Ok(response) => Some(response),
            Err(e @ Error::NotFound { .. }) => return Err(e),
            Err(e) => {
                warn!(container = %listed.id, %name, error = %ErrorChain(&e),
                    "CRI container status failed; using the list entry, which has no PID");
                None
            }
        };
        let (state, log_path, labels) = match status.as_ref().and_then(|s| s.status.as_ref()) {
            Some(s) => (s.state, s.log_path.clone(), s.labels.clone()),
            None => (listed.state, String::new(), listed.labels.clone()),
        };
        let parts = Parts {
            id: listed.id,
            name,
            image,
            state,
            labels,
            log_path,
            info: status.as_ref().map(|s| &s.info),
            sandbox,
        };
        Ok(convert::container(parts, &self.proc_root))
    }

    /// Sandbox statuses for the given ids; one that fails is left out.
    async fn sandboxes<'a>(&self, ids: impl Iterator<Item = &'a str>) -> HashMap<String, PodSandboxStatus> {
        let mut unique: Vec<String> = ids.map(str::to_owned).collect();
        unique.sort_unstable();
        unique.dedup();
        let lookups = unique.into_iter().map(|id| async move {
            let result = self.sandbox(&id).await;
            (id, result)
        });
        let found: Vec<(String, Result<PodSandboxStatus>)> =
            futures::stream::iter(lookups).buffer_unordered(STATUS_CONCURRENCY).collect().await;
        found
            .into_iter()
            .filter_map(|(id, result)| match result {
                Ok(status) => Some((id, status)),
                Err(e) => {
                    warn!(sandbox = %id, error = %ErrorChain(&e), "CRI pod sandbox status failed; pod metadata from labels");
                    None
                }
            })
            .collect()
    }

    async fn snapshot(&self) -> Result<events::Snapshot> {
        Ok(self.list_containers(None).await?.into_iter().map(|c| (c.id, c.state)).collect())
    }
}

#[async_trait]
impl ContainerRuntime for CriRuntime {
    fn name(&self) -> RuntimeName {
        CRI
    }

    fn merge_priority(&self) -> u8 {
        CRI_PRIORITY
    }

    fn endpoint(&self) -> &Path {
        &self.socket
    }

    async fn info(&self) -> Result<RuntimeInfo> {
        let mut client = self.client.clone();
        let v = self.call("Version", client.version(VersionRequest { version: "v1".into() })).await?;
        Ok(RuntimeInfo {
            runtime: CRI,
            name: v.runtime_name,
            version: v.runtime_version,
            api_version: Some(v.runtime_api_version),
        })
    }

    async fn list(&self) -> Result<Vec<Container>> {
        let listed = self.list_containers(None).await?;
        let sandboxes = self.sandboxes(listed.iter().map(|c| c.pod_sandbox_id.as_str())).await;
        let described: Vec<Result<Container>> = futures::stream::iter(listed)
            .map(|c| {
                let sandbox = sandboxes.get(&c.pod_sandbox_id);
                self.describe(c, sandbox)
            })
            .buffered(STATUS_CONCURRENCY)
            .collect()
            .await;
        let mut all = Vec::with_capacity(described.len());
        for result in described {
            match result {
                Ok(c) => all.push(c),
                Err(Error::NotFound { .. }) => {} // removed while listing
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }

    async fn inspect(&self, id: &ContainerId) -> Result<Container> {
        let filter = ContainerFilter { id: id.to_string(), ..Default::default() };
        let listed = self.list_containers(Some(filter)).await?;
        // CRI-O and containerd match the filter id as a prefix; insist on the whole id.
        let Some(listed) = listed.into_iter().find(|c| c.id == id.as_str()) else {
            return Err(Error::NotFound { what: format!("container {id}") });
        };
        let sandbox = self.sandboxes(std::iter::once(listed.pod_sandbox_id.as_str())).await;
        let sandbox = sandbox.get(&listed.pod_sandbox_id);
        self.describe(listed, sandbox).await
    }

    async fn events(&self, cancel: CancellationToken) -> Result<BoxStream<'static, Result<RuntimeEvent>>> {
        let endpoint = self.socket.display().to_string();
        if self.options.event_mode == EventMode::Auto {
            let (mut client, socket, endpoint) = (self.client.clone(), self.socket.clone(), endpoint.clone());
            let call = async move {
                let response = client.get_container_events(GetEventsRequest {}).await;
                let stream = response.map_err(|status| channel::error("GetContainerEvents", &socket, status))?;
                Ok(events::from_stream(stream.into_inner(), endpoint))
            };
            match detached_subscription(call, SUBSCRIBE_SETTLE, cancel.clone()).await {
                Ok(mut stream) => {
                    // CRI-O with pod events disabled (its default) accepts the
                    // call and ends the stream at once: that means "poll".
                    match tokio::time::timeout(SUBSCRIBE_SETTLE, stream.next()).await {
                        Ok(None) => {}
                        Ok(Some(first)) => {
                            info!(endpoint = %self.socket.display(), "CRI event source: GetContainerEvents stream");
                            let stream = futures::stream::once(async move { first }).chain(stream);
                            return Ok(stream.take_until(cancel.cancelled_owned()).boxed());
                        }
                        Err(_) => {
                            info!(endpoint = %self.socket.display(), "CRI event source: GetContainerEvents stream");
                            return Ok(stream.take_until(cancel.cancelled_owned()).boxed());
                        }
                    }
                }
                Err(Error::Api { status, .. }) if status == tonic::Code::Unimplemented as u16 => {}
                Err(e) => return Err(e),
            }
        }
        let interval = self.options.poll_interval;
        info!(endpoint = %endpoint, interval = ?interval, mode = ?self.options.event_mode,
            "CRI event source: polling ListContainers (GetContainerEvents unimplemented, ended at once, or disabled)");
        let baseline = self.snapshot().await?;
        let lister = Arc::new(self.shallow());
        let list = move || {
            let lister = Arc::clone(&lister);
            async move { lister.snapshot().await }
        };
        let stream = events::poll(baseline, interval, Arc::clone(&self.polls), list);
        Ok(stream.take_until(cancel.cancelled_owned()).boxed())
    }
}

impl CriRuntime {
    /// A copy sharing the channel and counters, for the poller task.
    fn shallow(&self) -> Self {
        Self {
            client: self.client.clone(),
            socket: self.socket.clone(),
            proc_root: self.proc_root.clone(),
            options: self.options.clone(),
            polls: Arc::clone(&self.polls),
        }
    }
}
