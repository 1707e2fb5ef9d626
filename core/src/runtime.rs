//! The [`ContainerRuntime`] trait: one connected runtime endpoint.

use std::path::Path;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::model::{Container, ContainerId, RuntimeEvent, RuntimeKind};

/// What a runtime says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuntimeInfo {
    /// The runtime's kind.
    pub kind: RuntimeKind,
    /// Its product name (`Docker Engine`, `containerd`, `cri-o`, ...).
    pub name: String,
    /// Its version.
    pub version: String,
    /// The API version it speaks, when it has one.
    pub api_version: Option<String>,
}

/// A connected container runtime.
///
/// Implementations are cheap to share (`Arc<dyn ContainerRuntime>`) and
/// reconnect internally: after the daemon restarts, the next call simply
/// works again. The inventory drives them with `events` + `list` and calls
/// `inspect` for every container an event mentions.
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// The runtime's kind.
    fn kind(&self) -> RuntimeKind;

    /// The socket this runtime was reached at, for logs and `portwarden runtimes`.
    fn endpoint(&self) -> &Path;

    /// Asks the runtime who it is. Also serves as a liveness check.
    async fn info(&self) -> Result<RuntimeInfo>;

    /// Every container the runtime knows, stopped ones included.
    ///
    /// A container the runtime lists but cannot describe is skipped with a
    /// warning naming it, never returned half-filled.
    async fn list(&self) -> Result<Vec<Container>>;

    /// One container, by full id.
    async fn inspect(&self, id: &ContainerId) -> Result<Container>;

    /// Subscribes to lifecycle events.
    ///
    /// The subscription is active when this returns, so a caller that
    /// subscribes and then lists misses nothing. The stream ends when `cancel`
    /// fires or the runtime goes away. An `Err` item reports one event that
    /// could not be decoded ([`Error::Protocol`](crate::Error::Protocol)), or,
    /// as the last item, why the connection ended.
    async fn events(&self, cancel: CancellationToken) -> Result<BoxStream<'static, Result<RuntimeEvent>>>;
}
