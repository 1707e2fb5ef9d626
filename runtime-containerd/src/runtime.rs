//! [`ContainerdRuntime`]: [`ContainerRuntime`] over containerd's native API.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{CONTAINERD, CONTAINERD_PRIORITY};
use async_trait::async_trait;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    GetContainerRequest, GetRequest, ListContainersRequest, ListNamespacesRequest, ListTasksRequest, SubscribeRequest,
};
use containerd_client::types::v1::Process;
use futures::stream::{BoxStream, StreamExt};
use portwarden_core::{
    Container, ContainerId, ContainerRuntime, Error, Result, RuntimeEvent, RuntimeInfo, RuntimeName,
    detached_subscription,
};
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::transport::Channel;
use tracing::debug;

use crate::events::{self, Decoded};
use crate::{convert, status};

/// How long to wait for containerd to refuse the event subscription before
/// taking it as accepted (containerd answers only with the first event).
const SUBSCRIBE_SETTLE: Duration = Duration::from_millis(200);

/// The gRPC metadata key containerd reads the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Which containerd namespaces to watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Namespaces {
    /// Every namespace, including ones created later.
    #[default]
    All,
    /// Only these.
    Only(BTreeSet<String>),
}

impl Namespaces {
    fn admits(&self, namespace: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Only(set) => set.contains(namespace),
        }
    }
}

/// A connected containerd.
pub struct ContainerdRuntime {
    channel: Channel,
    socket: PathBuf,
    proc_root: PathBuf,
    namespaces: Namespaces,
    timeout: Duration,
    /// Where each container was last seen, since the API needs the namespace
    /// and core's `inspect` has only the id.
    homes: Arc<Mutex<HashMap<ContainerId, String>>>,
    ignored_events: Arc<AtomicU64>,
}

impl ContainerdRuntime {
    /// Connects to the containerd at `socket`. Every call but the event
    /// stream is bounded by `timeout`.
    pub async fn connect(socket: &Path, proc_root: &Path, namespaces: Namespaces, timeout: Duration) -> Result<Self> {
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|e| Error::unavailable(socket.display().to_string(), e))?;
        Ok(Self {
            channel,
            socket: socket.to_path_buf(),
            proc_root: proc_root.to_path_buf(),
            namespaces,
            timeout,
            homes: Arc::default(),
            ignored_events: Arc::default(),
        })
    }

    /// Events received and ignored: topics the inventory does not act on,
    /// exec processes, and payloads that did not decode.
    pub fn ignored_events(&self) -> u64 {
        self.ignored_events.load(Ordering::Relaxed)
    }

    /// Runs one unary call under the timeout, mapping failures.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status::error(what, &self.socket, status)),
            Err(_) => Err(Error::Timeout { what: what.to_owned(), after: self.timeout }),
        }
    }

    fn in_namespace<T>(namespace: &str, message: T) -> Result<Request<T>> {
        let mut request = Request::new(message);
        let value = namespace.parse().map_err(|_| {
            Error::protocol("namespace", format!("namespace {namespace:?} is not a valid header value"))
        })?;
        request.metadata_mut().insert(NAMESPACE_HEADER, value);
        Ok(request)
    }

    async fn namespaces(&self) -> Result<Vec<String>> {
        let mut client = NamespacesClient::new(self.channel.clone());
        let list = self.call("list namespaces", client.list(ListNamespacesRequest { filter: String::new() })).await?;
        Ok(list.namespaces.into_iter().map(|n| n.name).filter(|n| self.namespaces.admits(n)).collect())
    }

    /// Every container of one namespace with its task.
    async fn list_namespace(&self, namespace: &str) -> Result<Vec<Container>> {
        let mut containers = ContainersClient::new(self.channel.clone());
        let mut tasks = TasksClient::new(self.channel.clone());
        let records = self
            .call("list containers", containers.list(Self::in_namespace(namespace, ListContainersRequest::default())?))
            .await?;
        let running =
            self.call("list tasks", tasks.list(Self::in_namespace(namespace, ListTasksRequest::default())?)).await?;
        let by_container: HashMap<&str, &Process> =
            running.tasks.iter().map(|t| (convert::task_container(t), t)).collect();
        Ok(records
            .containers
            .into_iter()
            .map(|c| {
                let task = by_container.get(c.id.as_str()).copied();
                convert::container(namespace, c, task, &self.proc_root)
            })
            .collect())
    }

    async fn inspect_in(&self, namespace: &str, id: &ContainerId) -> Result<Container> {
        let mut containers = ContainersClient::new(self.channel.clone());
        let mut tasks = TasksClient::new(self.channel.clone());
        let request = Self::in_namespace(namespace, GetContainerRequest { id: id.to_string() })?;
        let record = self.call("get container", containers.get(request)).await?.container;
        let record = record.ok_or_else(|| Error::protocol("get container", "response without a container"))?;
        let request =
            Self::in_namespace(namespace, GetRequest { container_id: id.to_string(), exec_id: String::new() })?;
        let task = match self.call("get task", tasks.get(request)).await {
            Ok(response) => response.process,
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(convert::container(namespace, record, task.as_ref(), &self.proc_root))
    }

    fn remember(&self, containers: &[Container]) {
        let mut homes = self.homes.lock().unwrap_or_else(|p| p.into_inner());
        for c in containers {
            if let Some(ns) = &c.namespace {
                homes.insert(c.id.clone(), ns.clone());
            }
        }
    }
}

#[async_trait]
impl ContainerRuntime for ContainerdRuntime {
    fn name(&self) -> RuntimeName {
        CONTAINERD
    }

    fn merge_priority(&self) -> u8 {
        CONTAINERD_PRIORITY
    }

    fn endpoint(&self) -> &Path {
        &self.socket
    }

    async fn info(&self) -> Result<RuntimeInfo> {
        let mut client = VersionClient::new(self.channel.clone());
        let v = self.call("version", client.version(())).await?;
        Ok(RuntimeInfo { runtime: CONTAINERD, name: "containerd".into(), version: v.version, api_version: None })
    }

    async fn list(&self) -> Result<Vec<Container>> {
        let mut all = Vec::new();
        for namespace in self.namespaces().await? {
            match self.list_namespace(&namespace).await {
                Ok(list) => all.extend(list),
                // Deleted between the namespace list and now.
                Err(Error::NotFound { .. }) => debug!(%namespace, "namespace vanished while listing"),
                Err(e) => return Err(e),
            }
        }
        let mut homes = self.homes.lock().unwrap_or_else(|p| p.into_inner());
        homes.clear();
        drop(homes);
        self.remember(&all);
        Ok(all)
    }

    async fn inspect(&self, id: &ContainerId) -> Result<Container> {
        let home = self.homes.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned();
        let candidates = match home {
            Some(ns) => vec![ns],
            None => self.namespaces().await?,
        };
        for namespace in candidates {
            match self.inspect_in(&namespace, id).await {
                Ok(container) => {
                    self.remember(std::slice::from_ref(&container));
                    return Ok(container);
                }
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NotFound { what: format!("container {id}") })
    }

    async fn events(&self, cancel: CancellationToken) -> Result<BoxStream<'static, Result<RuntimeEvent>>> {
        let mut client = EventsClient::new(self.channel.clone());
        let filters = events::FILTERS.iter().map(|f| (*f).to_owned()).collect();
        let (namespaces, ignored) = (self.namespaces.clone(), Arc::clone(&self.ignored_events));
        let (homes, socket) = (Arc::clone(&self.homes), self.socket.clone());
        let endpoint = socket.display().to_string();
        let call = async move {
            let stream = client
                .subscribe(SubscribeRequest { filters })
                .await
                .map_err(|status| status::error("subscribe", &socket, status))?
                .into_inner();
            let mapped = stream.filter_map(move |item| {
                let out = match item {
                    Ok(envelope) => match events::decode(&envelope) {
                        Decoded::Event { namespace, event } if namespaces.admits(&namespace) => {
                            homes.lock().unwrap_or_else(|p| p.into_inner()).insert(event.id.clone(), namespace);
                            Some(Ok(event))
                        }
                        Decoded::Event { .. } => None,
                        Decoded::Ignored => {
                            ignored.fetch_add(1, Ordering::Relaxed);
                            debug!(topic = %envelope.topic, namespace = %envelope.namespace, "ignored containerd event");
                            None
                        }
                    },
                    // Whatever the status, a failed event stream means the daemon went away.
                    Err(status) => Some(Err(Error::unavailable(socket.display().to_string(), status))),
                };
                futures::future::ready(out)
            });
            Ok(mapped.boxed())
        };
        let stream = detached_subscription(call, SUBSCRIBE_SETTLE, cancel.clone()).await?;
        debug!(endpoint = %endpoint, "subscribed to containerd events");
        Ok(stream.take_until(cancel.cancelled_owned()).boxed())
    }
}
