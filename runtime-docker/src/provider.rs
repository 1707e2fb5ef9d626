//! [`DockerProvider`]: finds and connects to Docker Engine sockets.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portwarden_core::{
    ContainerRuntime, LogSource, LogSourceOptions, Result, RuntimeEnv, RuntimeInfo, RuntimeName, RuntimeProvider,
};

use crate::{DOCKER, DockerLogSource, DockerLogs, DockerRuntime};

/// Registers Docker with a [`Registry`](portwarden_core::Registry).
#[derive(Clone, Debug)]
pub struct DockerProvider {
    request_timeout: Duration,
    /// Collect containers' output through the logs API, except for these
    /// log drivers; `None`: no log source.
    logs: Option<Vec<String>>,
}

impl DockerProvider {
    /// The socket Docker listens on by default.
    pub const DEFAULT_SOCKETS: &'static [&'static str] = &["/var/run/docker.sock"];

    /// The log drivers the log source skips unless told otherwise: they
    /// usually send to the agent's own listeners.
    pub const SKIP_LOG_DRIVERS: &'static [&'static str] = &["syslog", "fluentd"];

    /// A provider whose runtimes bound each API call (but the event stream)
    /// by `request_timeout`, with a log source that skips
    /// [`DockerProvider::SKIP_LOG_DRIVERS`] (see [`DockerProvider::logs`]).
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

impl Default for DockerProvider {
    /// Calls time out after 10 s: long enough for a loaded dockerd, short
    /// enough that a wedged one is noticed.
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

#[async_trait]
impl RuntimeProvider for DockerProvider {
    fn name(&self) -> RuntimeName {
        DOCKER
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

    fn log_source(&self, socket: &Path, options: &LogSourceOptions) -> Option<Arc<dyn LogSource>> {
        let skip = self.logs.clone()?;
        let logs = DockerLogs::new(socket, self.request_timeout);
        Some(Arc::new(DockerLogSource::new(logs, options, skip)))
    }

    fn identify_bundle(&self, bundle: &portwarden_core::OciBundle) -> Option<portwarden_core::Container> {
        crate::bundle::identify(bundle)
    }
}
