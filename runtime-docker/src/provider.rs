//! [`DockerProvider`]: finds and connects to Docker Engine sockets.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portwarden_core::{ContainerRuntime, Result, RuntimeEnv, RuntimeInfo, RuntimeKind, RuntimeProvider};

use crate::DockerRuntime;

/// Registers Docker with a [`Registry`](portwarden_core::Registry).
#[derive(Clone, Debug)]
pub struct DockerProvider {
    request_timeout: Duration,
}

impl DockerProvider {
    /// The socket Docker listens on by default.
    pub const DEFAULT_SOCKETS: &'static [&'static str] = &["/var/run/docker.sock"];

    /// A provider whose runtimes bound each API call (but the event stream)
    /// by `request_timeout`.
    pub fn new(request_timeout: Duration) -> Self {
        Self { request_timeout }
    }
}

impl Default for DockerProvider {
    /// Calls time out after 10 s: long enough for a loaded dockerd, short
    /// enough that a wedged one is noticed.
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

#[async_trait]
impl RuntimeProvider for DockerProvider {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    fn default_sockets(&self) -> &[&'static str] {
        Self::DEFAULT_SOCKETS
    }

    async fn probe(&self, socket: &Path) -> Result<RuntimeInfo> {
        // The registry bounds the probe; the runtime's own timeout is a backstop.
        DockerRuntime::new(socket, Path::new("/proc"), self.request_timeout).version().await
    }

    async fn connect(&self, socket: &Path, env: &RuntimeEnv) -> Result<Arc<dyn ContainerRuntime>> {
        Ok(Arc::new(DockerRuntime::new(socket, &env.proc_root, self.request_timeout)))
    }
}
