//! [`PodmanProvider`]: finds and connects to Podman's API socket.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portwarden_core::{
    ContainerRuntime, LogSource, LogSourceOptions, Result, RuntimeEnv, RuntimeInfo, RuntimeName, RuntimeProvider,
};
use portwarden_runtime_docker::{DockerLogSource, DockerLogs};

use crate::{PODMAN, PodmanRuntime};

/// Registers Podman with a [`Registry`](portwarden_core::Registry).
#[derive(Clone, Debug)]
pub struct PodmanProvider {
    request_timeout: Duration,
    /// Collect containers' output through the logs API, except for these
    /// log drivers; `None`: no log source.
    logs: Option<Vec<String>>,
}

impl PodmanProvider {
    /// Where rootful Podman's service listens (`podman system service`,
    /// or the `podman.socket` unit).
    pub const DEFAULT_SOCKETS: &'static [&'static str] = &["/run/podman/podman.sock"];

    /// The log drivers the log source skips unless told otherwise: they
    /// cannot be read back.
    pub const SKIP_LOG_DRIVERS: &'static [&'static str] = &["none", "passthrough"];

    /// A provider whose runtimes bound each API call (but the event stream)
    /// by `request_timeout`, with a log source that skips
    /// [`PodmanProvider::SKIP_LOG_DRIVERS`] (see [`PodmanProvider::logs`]).
    pub fn new(request_timeout: Duration) -> Self {
        let skip = Self::SKIP_LOG_DRIVERS.iter().map(|d| (*d).to_owned()).collect();
        Self { request_timeout, logs: Some(skip) }
    }

    /// Sets the log source: `Some(skip_drivers)` collects containers'
    /// output through the logs API, except for containers whose log driver
    /// is listed (drivers that send to the agent's own listeners, or that
    /// cannot be read back); `None` supplies no log source.
    pub fn logs(mut self, skip_drivers: Option<Vec<String>>) -> Self {
        self.logs = skip_drivers;
        self
    }
}

impl Default for PodmanProvider {
    /// Calls time out after 10 s.
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

#[async_trait]
impl RuntimeProvider for PodmanProvider {
    fn name(&self) -> RuntimeName {
        PODMAN
    }

    fn default_sockets(&self) -> &[&'static str] {
        Self::DEFAULT_SOCKETS
    }

    async fn probe(&self, socket: &Path) -> Result<RuntimeInfo> {
        PodmanRuntime::new(socket, Path::new("/proc"), self.request_timeout).version().await
    }

    async fn connect(&self, socket: &Path, env: &RuntimeEnv) -> Result<Arc<dyn ContainerRuntime>> {
        Ok(Arc::new(PodmanRuntime::new(socket, &env.proc_root, self.request_timeout)))
    }

    /// Podman serves Docker's logs API, framing and all: Docker's source
    /// reads it, under Podman's name.
    fn log_source(&self, socket: &Path, options: &LogSourceOptions) -> Option<Arc<dyn LogSource>> {
        let skip = self.logs.clone()?;
        let logs = DockerLogs::new(socket, self.request_timeout);
        Some(Arc::new(DockerLogSource::new(logs, options, skip).for_runtime("podman")))
    }

    fn identify_bundle(&self, bundle: &portwarden_core::OciBundle) -> Option<portwarden_core::Container> {
        crate::bundle::identify(bundle)
    }
}
