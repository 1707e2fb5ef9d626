//! The [`RuntimeProvider`] trait: how a runtime adapter is found and connected.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::bundle::OciBundle;
use crate::error::Result;
use crate::log::{LogSource, LogSourceOptions};
use crate::model::{Container, RuntimeName};
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
    /// The runtime's name: unique in a [`Registry`](crate::Registry), and
    /// the key of its config section (`[runtimes.<name>]`), the value of
    /// `--runtime` and of every container's `runtime` field.
    fn name(&self) -> RuntimeName;

    /// Where this runtime's socket usually is, as absolute paths on the host.
    /// The registry looks for each under the configured host root.
    fn default_sockets(&self) -> &[&'static str];

    /// True (the default) when the runtime's endpoint is a unix socket, so
    /// the registry checks that something listens on it before the probe.
    /// A provider whose endpoint is something else (a state file, a
    /// directory) says false, and its probe does all the checking.
    fn endpoint_is_socket(&self) -> bool {
        true
    }

    /// Checks that `socket` speaks this runtime's protocol: one cheap,
    /// side-effect-free version call. The registry applies the timeout and
    /// has already checked that something listens on the socket.
    async fn probe(&self, socket: &Path) -> Result<RuntimeInfo>;

    /// Builds a client for `socket`. Called only after a successful probe.
    async fn connect(&self, socket: &Path, env: &RuntimeEnv) -> Result<Arc<dyn ContainerRuntime>>;

    /// A source for the output of this runtime's containers, read through
    /// the runtime at `socket` (one that passed its probe), when the runtime
    /// offers one. Runtimes whose containers write CRI log files need none:
    /// the collector's CRI source reads every container with a `log_path`.
    fn log_source(&self, socket: &Path, options: &LogSourceOptions) -> Option<Arc<dyn LogSource>> {
        let _ = (socket, options);
        None
    }

    /// Recognises a container this runtime is about to start from its OCI
    /// bundle (pre-start attach): the container as far as the bundle tells
    /// (id, name, pod, sandbox), or `None` when it is not this runtime's.
    /// Called on the hook's thread while a runtime waits: no I/O.
    fn identify_bundle(&self, bundle: &OciBundle) -> Option<Container> {
        let _ = bundle;
        None
    }
}
