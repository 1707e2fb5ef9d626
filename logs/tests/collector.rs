//! The collector against a scripted runtime and fake sources: which source
//! follows which container, when followers stop, and that a source that
//! panics ends only its own container's collection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use portwarden_core::{
    Container, ContainerId, ContainerRuntime, ContainerState, Error, Inventory, InventoryOptions, LogOrigin, LogRecord,
    LogSender, LogSource, LogStats, Result, ResumeLookup, ResumePoints, RuntimeEvent, RuntimeEventKind, RuntimeInfo,
    RuntimeName,
};
use portwarden_logs::LogCollector;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const FAKE: RuntimeName = RuntimeName::from_static("fake");

/// Containers and events the test scripts.
#[derive(Default)]
struct Scripted {
    containers: Mutex<HashMap<ContainerId, Container>>,
    events: Mutex<Option<mpsc::UnboundedSender<Result<RuntimeEvent>>>>,
    endpoint: PathBuf,
}

impl Scripted {
    fn set(&self, name: &str, state: ContainerState) {
        let c = Container { name: name.into(), state, ..Container::new(FAKE, ContainerId::new(name)) };
        self.containers.lock().unwrap().insert(c.id.clone(), c);
    }

    fn emit(&self, name: &str, kind: RuntimeEventKind) {
        let event = RuntimeEvent { id: ContainerId::new(name), kind, time: SystemTime::now() };
        self.events.lock().unwrap().as_ref().expect("subscribed").send(Ok(event)).expect("listening");
    }
}

#[async_trait]
impl ContainerRuntime for Scripted {
    fn name(&self) -> RuntimeName {
        FAKE
    }
    fn endpoint(&self) -> &Path {
        &self.endpoint
    }
    async fn info(&self) -> Result<RuntimeInfo> {
        Ok(RuntimeInfo { runtime: FAKE, name: "fake".into(), version: "1".into(), api_version: None })
    }
    async fn list(&self) -> Result<Vec<Container>> {
        Ok(self.containers.lock().unwrap().values().cloned().collect())
    }
    async fn inspect(&self, id: &ContainerId) -> Result<Container> {
        let found = self.containers.lock().unwrap().get(id).cloned();
        found.ok_or_else(|| Error::NotFound { what: id.to_string() })
    }
    async fn events(&self, _cancel: CancellationToken) -> Result<BoxStream<'static, Result<RuntimeEvent>>> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.events.lock().unwrap() = Some(tx);
        Ok(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed())
    }
}

/// Follows containers whose name starts with its prefix: one record, then
/// waits for its stop. A container named `*panic*` makes it panic.
struct Fake {
    prefix: &'static str,
    /// Names followed, and names whose follower returned.
    log: Arc<Mutex<(Vec<String>, Vec<String>)>>,
}

#[async_trait]
impl LogSource for Fake {
    fn name(&self) -> &'static str {
        self.prefix
    }
    fn accepts(&self, c: &Container) -> bool {
        c.name.starts_with(self.prefix)
    }
    fn resume_key(&self, c: &Container) -> String {
        format!("fake/{}", c.id)
    }
    async fn follow(
        &self,
        c: Arc<Container>,
        _resume: ResumeLookup,
        out: LogSender,
        cancel: CancellationToken,
    ) -> Result<()> {
        self.log.lock().unwrap().0.push(c.name.clone());
        assert!(!c.name.contains("panic"), "a buggy source");
        let mut r = LogRecord::new(SystemTime::now(), LogOrigin::Runtime("fake"), None, format!("from {}", c.name));
        r.container = Some(Arc::clone(&c));
        let _ = out.send(vec![r]).await;
        cancel.cancelled().await;
        self.log.lock().unwrap().1.push(c.name.clone());
        Ok(())
    }
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let wait = async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap_or_else(|_| panic!("timed out: {what}"));
}

#[tokio::test]
async fn sources_follow_their_containers_from_start_to_stop_and_a_panic_stays_with_its_container() {
    let rt = Arc::new(Scripted::default());
    rt.set("app-before", ContainerState::Running);
    rt.set("other", ContainerState::Running);
    let inventory = Inventory::new(vec![rt.clone()], InventoryOptions { resync_interval: None, ..Default::default() });
    let cancel = CancellationToken::new();
    tokio::spawn({
        let (inventory, cancel) = (inventory.clone(), cancel.clone());
        async move { inventory.run(cancel).await }
    });

    let log = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let source: Arc<dyn LogSource> = Arc::new(Fake { prefix: "app", log: Arc::clone(&log) });
    let (tx, mut records) = mpsc::channel(16);
    let stats = Arc::new(LogStats::default());
    let collector = LogCollector::new(
        vec![source],
        LogSender::new(tx, ResumePoints::default()),
        Arc::new(|_: &str| None),
        Arc::new(|_: &str| {}),
    )
    .counting(Arc::clone(&stats));
    let stop = CancellationToken::new();
    let running = tokio::spawn(collector.run(inventory.clone(), stop.clone()));

    // Running before the collector: followed at once. No source: left alone.
    let first = records.recv().await.expect("a record");
    assert_eq!(first[0].message, "from app-before");
    // Started later; one that panics.
    rt.set("app-panic", ContainerState::Running);
    rt.emit("app-panic", RuntimeEventKind::Started);
    rt.set("app-after", ContainerState::Running);
    rt.emit("app-after", RuntimeEventKind::Started);
    let next = records.recv().await.expect("a record");
    assert_eq!(next[0].message, "from app-after", "the panicking source sent nothing, the next one went on");
    until("the panic counted", || stats.snapshot().panics == 1).await;

    // Stopped: its follower is told, and returns.
    rt.set("app-before", ContainerState::Exited);
    rt.emit("app-before", RuntimeEventKind::Exited { exit_code: Some(0) });
    until("app-before's follower returned", || log.lock().unwrap().1 == ["app-before"]).await;
    let followed = log.lock().unwrap().0.clone();
    assert_eq!(followed, ["app-before", "app-panic", "app-after"], "`other` has no source");

    // Shutdown: every follower returns.
    stop.cancel();
    running.await.expect("collector stops");
    assert!(log.lock().unwrap().1.contains(&"app-after".to_owned()));
    cancel.cancel();
}
