//! A scripted in-memory runtime for the unit tests of the inventory and
//! the capture engine.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::model::{Container, ContainerId, ContainerState, RuntimeEvent, RuntimeEventKind, RuntimeName};
use crate::runtime::{ContainerRuntime, RuntimeInfo};

pub(crate) const DOCKER: RuntimeName = RuntimeName::from_static("docker");
pub(crate) const CONTAINERD: RuntimeName = RuntimeName::from_static("containerd");
pub(crate) const CRI: RuntimeName = RuntimeName::from_static("cri");

/// A runtime whose containers, events and failures the test scripts.
pub(crate) struct FakeRuntime {
    kind: RuntimeName,
    endpoint: PathBuf,
    pub(crate) containers: Mutex<HashMap<ContainerId, Container>>,
    events: Mutex<Option<mpsc::UnboundedSender<Result<RuntimeEvent>>>>,
    pub(crate) broken_inspect: Mutex<HashSet<ContainerId>>,
    down: Mutex<bool>,
}

impl FakeRuntime {
    pub(crate) fn new(kind: RuntimeName) -> Arc<Self> {
        Arc::new(Self {
            endpoint: PathBuf::from(format!("/fake/{kind}.sock")),
            kind,
            containers: Mutex::default(),
            events: Mutex::default(),
            broken_inspect: Mutex::default(),
            down: Mutex::new(false),
        })
    }

    pub(crate) fn put(&self, c: Container) {
        self.containers.lock().unwrap().insert(c.id.clone(), c);
    }

    pub(crate) fn emit(&self, id: &str, kind: RuntimeEventKind) {
        let event = RuntimeEvent { id: ContainerId::new(id), kind, time: SystemTime::now() };
        let tx = self.events.lock().unwrap();
        tx.as_ref().expect("subscribed").send(Ok(event)).expect("inventory listening");
    }

    /// Simulates the daemon dying: the event stream ends, calls fail.
    pub(crate) fn kill(&self) {
        *self.down.lock().unwrap() = true;
        self.events.lock().unwrap().take();
    }

    pub(crate) fn revive(&self) {
        *self.down.lock().unwrap() = false;
    }

    fn check_up(&self) -> Result<()> {
        if *self.down.lock().unwrap() {
            return Err(Error::unavailable("fake", "connection refused"));
        }
        Ok(())
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    fn name(&self) -> RuntimeName {
        self.kind.clone()
    }
    fn merge_priority(&self) -> u8 {
        // As the built-in providers rank themselves.
        match self.kind.as_str() {
            "cri" => 30,
            "docker" => 20,
            _ => 10,
        }
    }
    fn endpoint(&self) -> &Path {
        &self.endpoint
    }
    async fn info(&self) -> Result<RuntimeInfo> {
        self.check_up()?;
        Ok(RuntimeInfo { runtime: self.kind.clone(), name: "fake".into(), version: "1".into(), api_version: None })
    }
    async fn list(&self) -> Result<Vec<Container>> {
        self.check_up()?;
        Ok(self.containers.lock().unwrap().values().cloned().collect())
    }
    async fn inspect(&self, id: &ContainerId) -> Result<Container> {
        self.check_up()?;
        if self.broken_inspect.lock().unwrap().contains(id) {
            return Err(Error::protocol("inspect", "truncated JSON"));
        }
        let found = self.containers.lock().unwrap().get(id).cloned();
        found.ok_or_else(|| Error::NotFound { what: id.to_string() })
    }
    async fn events(&self, _cancel: CancellationToken) -> Result<BoxStream<'static, Result<RuntimeEvent>>> {
        self.check_up()?;
        let (tx, rx) = mpsc::unbounded_channel();
        *self.events.lock().unwrap() = Some(tx);
        Ok(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed())
    }
}

pub(crate) fn container(id: &str, runtime: RuntimeName, state: ContainerState) -> Container {
    Container {
        name: format!("{id}-{runtime}"),
        image: "busybox".into(),
        state,
        pid: state.is_alive().then_some(100),
        ..Container::new(runtime, ContainerId::new(id))
    }
}
