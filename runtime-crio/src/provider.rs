//! [`CriProvider`]: finds and connects to CRI endpoints.

use std::path::Path;
use std::sync::Arc;

use crate::CRI;
use async_trait::async_trait;
use portwarden_core::{ContainerRuntime, Error, Result, RuntimeEnv, RuntimeInfo, RuntimeName, RuntimeProvider};

use crate::{CriOptions, CriRuntime};

/// Registers the CRI with a [`Registry`](portwarden_core::Registry).
#[derive(Clone, Debug, Default)]
pub struct CriProvider {
    options: CriOptions,
}

impl CriProvider {
    /// CRI-O's sockets, then containerd's (whose CRI plugin serves the same
    /// socket, and is the only source of pod names and IPs there).
    pub const DEFAULT_SOCKETS: &'static [&'static str] = &[
        "/run/crio/crio.sock",
        "/var/run/crio/crio.sock",
        "/run/containerd/containerd.sock",
        "/run/k3s/containerd/containerd.sock",
        "/var/snap/microk8s/common/run/containerd.sock",
        "/run/dockershim.sock",
    ];

    /// A provider whose runtimes use `options`.
    pub fn new(options: CriOptions) -> Self {
        Self { options }
    }
}

#[async_trait]
impl RuntimeProvider for CriProvider {
    fn name(&self) -> RuntimeName {
        CRI
    }

    fn default_sockets(&self) -> &[&'static str] {
        Self::DEFAULT_SOCKETS
    }

    async fn probe(&self, socket: &Path) -> Result<RuntimeInfo> {
        let runtime = CriRuntime::connect(socket, Path::new("/proc"), self.options.clone()).await?;
        runtime.info().await.map_err(|e| match e {
            Error::Api { status, message, .. } if status == tonic::Code::Unimplemented as u16 => {
                Error::protocol("CRI Version", format!("does not serve CRI runtime.v1 ({message})"))
            }
            Error::Api { message, .. } => Error::protocol("CRI Version", message),
            other => other,
        })
    }

    async fn connect(&self, socket: &Path, env: &RuntimeEnv) -> Result<Arc<dyn ContainerRuntime>> {
        Ok(Arc::new(CriRuntime::connect(socket, &env.proc_root, self.options.clone()).await?))
    }

    fn identify_bundle(&self, bundle: &portwarden_core::OciBundle) -> Option<portwarden_core::Container> {
        crate::bundle::identify(bundle)
    }
}
