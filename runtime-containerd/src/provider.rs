//! [`ContainerdProvider`]: finds and connects to containerd sockets.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::CONTAINERD;
use async_trait::async_trait;
use portwarden_core::{ContainerRuntime, Error, Result, RuntimeEnv, RuntimeInfo, RuntimeName, RuntimeProvider};

use crate::{ContainerdRuntime, Namespaces};

/// Registers containerd with a [`Registry`](portwarden_core::Registry).
#[derive(Clone, Debug)]
pub struct ContainerdProvider {
    namespaces: Namespaces,
    request_timeout: Duration,
}

impl ContainerdProvider {
    /// Where containerd listens: upstream, k3s, MicroK8s, Bottlerocket's
    /// host containerd, and Bottlerocket's dockershim path.
    pub const DEFAULT_SOCKETS: &'static [&'static str] = &[
        "/run/containerd/containerd.sock",
        "/run/k3s/containerd/containerd.sock",
        "/var/snap/microk8s/common/run/containerd.sock",
        "/run/host-containerd/containerd.sock",
        "/run/dockershim.sock",
    ];

    /// A provider watching `namespaces`, bounding each call by `request_timeout`.
    pub fn new(namespaces: Namespaces, request_timeout: Duration) -> Self {
        Self { namespaces, request_timeout }
    }
}

impl Default for ContainerdProvider {
    fn default() -> Self {
        Self::new(Namespaces::All, Duration::from_secs(10))
    }
}

#[async_trait]
impl RuntimeProvider for ContainerdProvider {
    fn name(&self) -> RuntimeName {
        CONTAINERD
    }

    fn default_sockets(&self) -> &[&'static str] {
        Self::DEFAULT_SOCKETS
    }

    async fn probe(&self, socket: &Path) -> Result<RuntimeInfo> {
        let runtime =
            ContainerdRuntime::connect(socket, Path::new("/proc"), Namespaces::All, self.request_timeout).await?;
        runtime.info().await.map_err(|e| match e {
            // Answered, but not as containerd's Version service.
            Error::Api { message, .. } => Error::protocol("containerd Version", message),
            other => other,
        })
    }

    async fn connect(&self, socket: &Path, env: &RuntimeEnv) -> Result<Arc<dyn ContainerRuntime>> {
        let runtime =
            ContainerdRuntime::connect(socket, &env.proc_root, self.namespaces.clone(), self.request_timeout).await?;
        Ok(Arc::new(runtime))
    }

    fn identify_bundle(&self, bundle: &portwarden_core::OciBundle) -> Option<portwarden_core::Container> {
        crate::bundle::identify(bundle)
    }
}
