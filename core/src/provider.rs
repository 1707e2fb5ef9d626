//! The [`RuntimeProvider`] trait: how a runtime adapter is found and connected.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::RuntimeKind;
use crate::runtime::{ContainerRuntime, RuntimeInfo};

/// Host facts every runtime adapter needs to describe containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeEnv {
    /// Where the host's `/proc` is visible to the agent (`/host/proc` in a
    /// container, `/proc` on the host). Network namespace paths are built
    /// under it.
    pub proc_root: PathBuf,
}

impl Default for RuntimeEnv {
    fn default() -> Self {
        Self { proc_root: PathBuf::from("/proc") }
    }
}

/// A runtime adapter's entry point, registered once in a
/// [`Registry`](crate::Registry).
#[async_trait]
pub trait RuntimeProvider: Send + Sync {
    /// The kind of runtime this provider connects to.
    fn kind(&self) -> RuntimeKind;

    /// Where this runtime's socket usually is, as absolute paths on the host.
    /// The registry looks for each under the configured host root.
    fn default_sockets(&self) -> &[&'static str];

    /// Checks that `socket` speaks this runtime's protocol: one cheap,
    /// side-effect-free version call. The registry applies the timeout and
    /// has already checked that something listens on the socket.
    async fn probe(&self, socket: &Path) -> Result<RuntimeInfo>;

    /// Builds a client for `socket`. Called only after a successful probe.
    async fn connect(&self, socket: &Path, env: &RuntimeEnv) -> Result<Arc<dyn ContainerRuntime>>;
}
