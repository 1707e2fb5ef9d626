//! The capture engine: attaches a capture to each network namespace as
//! containers come and go, and feeds every batch to the sinks.
//!
//! One capture per namespace, reference-counted by the running containers
//! in it: a pod's containers share one, and containers on the host network
//! share the host's. The capture opens when the first member starts and
//! closes (draining the kernel ring) when the last one stops. Each capture
//! runs its sinks on its own thread, each with per-capture state from
//! [`PacketSink::open`](crate::PacketSink::open); sinks that share an output (one pcapng file) lock
//! it once per ring block.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::error::ErrorChain;
use crate::inventory::{Inventory, InventoryEvent};
use crate::model::{Container, ContainerId, ContainerState};
use crate::netns::NetnsId;
use crate::packet::{CaptureFeed, CaptureGroup, CaptureOptions, CaptureTarget, GroupSink, PacketSink, PacketSource};

/// How long shutdown waits for captures to drain and close their sinks.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(4);
/// How long a member attached before it ran may go unreported by its
/// runtime (a start that failed, a runtime the agent does not watch).
const PROVISIONAL_TTL: Duration = Duration::from_secs(60);
/// How often such members are checked (is their process still there?).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Which containers to capture.
pub type Selector = Arc<dyn Fn(&Container) -> bool + Send + Sync>;

/// Drives captures from inventory changes. Clones share state.
#[derive(Clone)]
pub struct CaptureEngine {
    source: Arc<dyn PacketSource>,
    sinks: Vec<Arc<dyn PacketSink>>,
    options: CaptureOptions,
    selector: Option<Selector>,
    next_key: Arc<AtomicU64>,
    /// Captures currently attached, for status and leak checks.
    attached: Arc<AtomicU64>,
    /// Attaches that did not happen, by why.
    misses: Arc<AttachMisses>,
    /// Each attached capture's label, attributed container and live counters.
    live: Arc<std::sync::Mutex<HashMap<u64, LiveCapture>>>,
    /// Pre-start requests, taken by [`CaptureEngine::run`].
    early_tx: mpsc::UnboundedSender<EarlyRequest>,
    early_rx: Arc<std::sync::Mutex<Option<mpsc::UnboundedReceiver<EarlyRequest>>>>,
}

/// Captures that were wanted but did not attach.
#[derive(Debug, Default)]
pub struct AttachMisses {
    /// The container's network namespace was gone first: it exited while
    /// the capture was being set up.
    pub vanished: AtomicU64,
    /// Attaching failed for another reason (logged with the error).
    pub failed: AtomicU64,
}

/// A request to capture a container's network namespace before the
/// container runs (pre-start attach).
pub struct EarlyRequest {
    /// The container, with `pid` and `netns` of its parked init process.
    pub container: Container,
    /// Called once, as soon as the outcome is known.
    pub done: Box<dyn FnOnce(EarlyOutcome) + Send>,
}

/// What became of an [`EarlyRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EarlyOutcome {
    /// A capture was opened in the container's namespace.
    Attached,
    /// The namespace was captured already (a pod's sandbox, the host's
    /// network); the container joined that capture.
    Joined,
    /// Not captured, and why (not selected, no namespace, stopping).
    Skipped(String),
    /// The capture could not be opened.
    Failed(String),
}

/// Sends [`EarlyRequest`]s to a [`CaptureEngine`]; clones share it.
#[derive(Clone)]
pub struct EarlyAttach(mpsc::UnboundedSender<EarlyRequest>);

impl EarlyAttach {
    /// Asks for a capture; when the engine is gone the request is answered
    /// at once.
    pub fn request(&self, request: EarlyRequest) {
        if let Err(unsent) = self.0.send(request) {
            (unsent.0.done)(EarlyOutcome::Skipped("the capture engine is not running".into()));
        }
    }
}

/// The next pre-start request, or never when there is no receiver.
async fn next_early(rx: &mut Option<mpsc::UnboundedReceiver<EarlyRequest>>) -> Option<EarlyRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The engine's attachments while it runs.
#[derive(Default)]
struct State {
    attached: HashMap<NetnsId, Attachment>,
    tasks: JoinSet<(NetnsId, u64)>,
    /// Members attached before they ran, not yet reported by their runtime.
    provisional: HashMap<ContainerId, Instant>,
}

impl State {
    /// The member `id`, in whichever capture holds it.
    fn member(&self, id: &ContainerId) -> Option<&Container> {
        self.attached.values().find_map(|a| a.members.get(id))
    }

    /// Takes container `id` out of every capture but the one for `keep`;
    /// a capture left without members detaches.
    fn leave(&mut self, id: &ContainerId, keep: Option<NetnsId>) {
        let previous: Vec<NetnsId> =
            self.attached.iter().filter(|(_, a)| a.members.contains_key(id)).map(|(ns, _)| *ns).collect();
        for ns in previous.into_iter().filter(|ns| Some(*ns) != keep) {
            if let Some(a) = self.attached.get_mut(&ns) {
                a.members.remove(id);
                if a.members.is_empty() {
                    a.cancel.cancel();
                    self.attached.remove(&ns);
                    debug!(container = %id, "last member stopped; capture detaching");
                } else {
                    let sorted = a.sorted();
                    a.update.send_modify(|g| g.containers = sorted);
                }
            }
        }
    }

    /// Adds (or updates) `container` in the capture of `ns`; false when
    /// that namespace has no capture yet.
    fn join(&mut self, ns: NetnsId, container: &Container) -> bool {
        let Some(a) = self.attached.get_mut(&ns) else { return false };
        // Later reports carry more (a name, a pod, IPs): pass every change on.
        if a.members.get(&container.id) != Some(container) {
            a.members.insert(container.id.clone(), container.clone());
            let sorted = a.sorted();
            a.update.send_modify(|g| g.containers = sorted);
        }
        true
    }
}

/// An attached capture, as metrics see it.
#[derive(Clone)]
pub struct LiveCapture {
    /// Who is in it now: followed, since a richer runtime report (a name
    /// instead of an id) can arrive after the capture attached.
    group: watch::Receiver<CaptureGroup>,
    /// Its counters, updated by the capture thread.
    pub counters: Arc<crate::packet::CaptureCounters>,
}

impl LiveCapture {
    /// The attributed container's name, or `host`.
    pub fn label(&self) -> String {
        self.group.borrow().label()
    }

    /// The attributed container's id, when there is one.
    pub fn container(&self) -> Option<ContainerId> {
        self.group.borrow().container().map(|c| c.id.clone())
    }
}

/// One attached capture.
struct Attachment {
    /// The capture's group key, to tell a finished capture from a newer one.
    key: u64,
    members: BTreeMap<ContainerId, Container>,
    update: watch::Sender<CaptureGroup>,
    cancel: CancellationToken,
}

impl Attachment {
    /// The members sorted by name, as [`CaptureGroup::containers`] promises.
    fn sorted(&self) -> Vec<Container> {
        let mut all: Vec<Container> = self.members.values().cloned().collect();
        all.sort_by(|a, b| a.member_order().cmp(&b.member_order()));
        all
    }
}

impl CaptureEngine {
    /// An engine capturing with `source` into `sinks`.
    pub fn new(source: Arc<dyn PacketSource>, sinks: Vec<Arc<dyn PacketSink>>, options: CaptureOptions) -> Self {
        let (early_tx, early_rx) = mpsc::unbounded_channel();
        Self {
            early_tx,
            early_rx: Arc::new(std::sync::Mutex::new(Some(early_rx))),
            source,
            sinks,
            options,
            selector: None,
            next_key: Arc::new(AtomicU64::new(1)),
            attached: Arc::default(),
            misses: Arc::default(),
            live: Arc::default(),
        }
    }

    /// Captures only the containers `selector` accepts (all by default).
    pub fn with_selector(mut self, selector: Selector) -> Self {
        self.selector = Some(selector);
        self
    }

    /// A counter of captures currently attached.
    pub fn attached(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.attached)
    }

    /// Attaches that did not happen, for metrics.
    pub fn misses(&self) -> &AttachMisses {
        &self.misses
    }

    /// Every capture attached now, for metrics.
    pub fn live(&self) -> Vec<LiveCapture> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Captures the agent's own network namespace (host-only and sidecar
    /// modes) until `cancel` fires.
    pub async fn run_own_namespace(&self, cancel: CancellationToken) -> Result<(), Error> {
        let group =
            CaptureGroup { key: self.next_key.fetch_add(1, Ordering::Relaxed), netns: None, containers: vec![] };
        let target = CaptureTarget { netns: None, label: "self".into() };
        let (_tx, rx) = watch::channel(group);
        self.capture(target, rx, cancel, None).await
    }

    /// A handle through which the pre-start hook asks for captures before
    /// containers run (they are served while [`CaptureEngine::run`] runs).
    pub fn early_attach(&self) -> EarlyAttach {
        EarlyAttach(self.early_tx.clone())
    }

    /// Follows `inventory` until `cancel` fires, attaching and detaching
    /// captures, and serves [early](CaptureEngine::early_attach) requests.
    /// Lists and subscribes [at once](Inventory::list_and_subscribe), so no start is
    /// missed and none is replayed.
    pub async fn run(&self, inventory: &Inventory, cancel: CancellationToken) {
        let (now, mut changes) = inventory.list_and_subscribe();
        let mut early = self.early_rx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut state = State::default();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.reconcile(now, &mut state, &cancel).await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(request) = next_early(&mut early) => self.attach_early(request, inventory, &mut state, &cancel),
                _ = sweep.tick(), if !state.provisional.is_empty() => self.sweep(&mut state, &cancel).await,
                Some(ended) = state.tasks.join_next(), if !state.tasks.is_empty() => {
                    // A capture that ended on its own (failed to open, or its
                    // namespace went away) frees its slot, so the next change
                    // of a member attaches afresh instead of finding it taken.
                    if let Ok((ns, key)) = ended {
                        if state.attached.get(&ns).is_some_and(|a| a.key == key) {
                            state.attached.remove(&ns);
                        }
                    }
                }
                change = changes.recv() => match change {
                    Ok(InventoryEvent::Container(change)) => {
                        let c = change.container().clone();
                        let alive = change.after.as_ref().is_some_and(|a| a.state.is_alive());
                        // A container attached before it ran is still
                        // `created` to a runtime that has not seen it start.
                        let not_yet = change.after.as_ref().is_some_and(|a| a.state == ContainerState::Created);
                        if not_yet && state.provisional.contains_key(&c.id) {
                            continue;
                        }
                        let latest = if alive { change.after.clone() } else { None };
                        self.apply(&c.id, latest, &mut state, &cancel).await;
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        warn!(missed, "capture engine fell behind the inventory; reconciling");
                        self.reconcile(inventory.snapshot(), &mut state, &cancel).await;
                    }
                    Err(RecvError::Closed) => break,
                },
            }
        }
        // Requests that came too late are answered, never left waiting.
        if let Some(rx) = early.as_mut() {
            rx.close();
            while let Ok(request) = rx.try_recv() {
                (request.done)(EarlyOutcome::Skipped("the capture engine is stopping".into()));
            }
        }
        for attachment in state.attached.values() {
            attachment.cancel.cancel();
        }
        // Let every capture drain and close its sinks, but do not let an
        // output that stopped accepting writes hold shutdown hostage.
        let tasks = &mut state.tasks;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(left = state.tasks.len(), "captures still blocked on their outputs at shutdown; leaving them");
        }
    }

    /// Brings the attachments in line with a full snapshot. Members
    /// attached before they ran, and not reported yet, stay.
    async fn reconcile(&self, snapshot: Vec<Container>, state: &mut State, cancel: &CancellationToken) {
        let alive: HashMap<ContainerId, Container> =
            snapshot.into_iter().filter(|c| c.state.is_alive()).map(|c| (c.id.clone(), c)).collect();
        let gone: Vec<ContainerId> = state
            .attached
            .values()
            .flat_map(|a| a.members.keys())
            .filter(|id| !alive.contains_key(*id) && !state.provisional.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.apply(&id, None, state, cancel).await;
        }
        // In member order, so a namespace's capture opens named after the
        // member it will be attributed to (not a pod's sandbox).
        let mut alive: Vec<(ContainerId, Container)> = alive.into_iter().collect();
        alive.sort_by(|(_, a), (_, b)| a.member_order().cmp(&b.member_order()));
        for (id, c) in alive {
            self.apply(&id, Some(c), state, cancel).await;
        }
    }

    /// Records that container `id` is now `latest` (alive) or gone (`None`).
    async fn apply(&self, id: &ContainerId, latest: Option<Container>, state: &mut State, cancel: &CancellationToken) {
        // The runtime has spoken: a member attached before it ran is
        // confirmed (or gone).
        state.provisional.remove(id);
        let wanted = latest.filter(|c| self.selector.as_ref().is_none_or(|s| s(c)));
        let target = wanted.as_ref().and_then(|c| {
            let path = c.netns.as_ref()?;
            match NetnsId::of(path) {
                Ok(ns) => Some((ns, c.clone())),
                // Captured from before it ran, and done before the report came.
                Err(_) if state.member(id).is_some() => {
                    debug!(container = %c.id, "exited before its runtime reported it running; detaching");
                    None
                }
                Err(e) => {
                    self.misses.vanished.fetch_add(1, Ordering::Relaxed);
                    warn!(container = %c.id, name = %c.name, netns = %path.display(), error = %e,
                        "network namespace vanished before capture could attach");
                    None
                }
            }
        });
        state.leave(id, target.as_ref().map(|(ns, _)| *ns));
        let Some((ns, container)) = target else { return };
        if !state.join(ns, &container) {
            self.attach(ns, container, None, state, cancel);
        }
    }

    /// Serves a pre-start request: the container's namespace gets its
    /// capture now, before its first instruction; the inventory confirms
    /// the member later (or the sweep drops it).
    fn attach_early(
        &self,
        request: EarlyRequest,
        inventory: &Inventory,
        state: &mut State,
        cancel: &CancellationToken,
    ) {
        let EarlyRequest { container: early, done } = request;
        // What the runtime already said of it (`docker create` names it)
        // and what the hook knows now (its process) make the member.
        let container = match inventory.get(&early.id) {
            Some(known) => {
                Container { pid: early.pid, netns: early.netns.clone(), state: ContainerState::Running, ..known }
            }
            None => early,
        };
        if self.selector.as_ref().is_some_and(|s| !s(&container)) {
            return done(EarlyOutcome::Skipped("not selected for capture".into()));
        }
        let Some(path) = container.netns.clone() else {
            return done(EarlyOutcome::Skipped("no network namespace".into()));
        };
        let ns = match NetnsId::of(&path) {
            Ok(ns) => ns,
            Err(e) => return done(EarlyOutcome::Skipped(format!("network namespace {}: {e}", path.display()))),
        };
        let confirmed = state.attached.get(&ns).is_some_and(|a| a.members.contains_key(&container.id));
        if !confirmed {
            state.provisional.insert(container.id.clone(), Instant::now());
        }
        state.leave(&container.id, Some(ns));
        if state.join(ns, &container) {
            debug!(container = %container.id, "namespace already captured; joined before start");
            return done(EarlyOutcome::Joined);
        }
        self.attach(ns, container, Some(done), state, cancel);
    }

    /// Drops members attached before they ran that the runtime never
    /// confirmed: their process is gone, or they waited too long.
    async fn sweep(&self, state: &mut State, cancel: &CancellationToken) {
        let stale: Vec<ContainerId> = state
            .provisional
            .iter()
            .filter(|(id, since)| {
                since.elapsed() > PROVISIONAL_TTL
                    || state.member(id).and_then(|c| c.netns.as_ref()).is_none_or(|path| !path.exists())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            debug!(container = %id, "attached before start but never reported running; detaching");
            self.apply(&id, None, state, cancel).await;
        }
    }

    /// Opens a capture for namespace `ns`, its first member `container`;
    /// `ready` hears when the socket is open (or could not be).
    fn attach(
        &self,
        ns: NetnsId,
        container: Container,
        ready: Option<Box<dyn FnOnce(EarlyOutcome) + Send>>,
        state: &mut State,
        cancel: &CancellationToken,
    ) {
        let members = BTreeMap::from([(container.id.clone(), container.clone())]);
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let group = CaptureGroup { key, netns: Some(ns), containers: vec![container.clone()] };
        let target = CaptureTarget { netns: container.netns.clone(), label: group.label() };
        let (update, rx) = watch::channel(group);
        let capture_cancel = cancel.child_token();
        state.attached.insert(ns, Attachment { key, members, update, cancel: capture_cancel.clone() });
        let this = self.clone();
        state.tasks.spawn(async move {
            let ended = (ns, key);
            if let Err(e) = this.capture(target, rx, capture_cancel, ready).await {
                match e {
                    Error::NotFound { .. } => {
                        this.misses.vanished.fetch_add(1, Ordering::Relaxed);
                        warn!(container = %container.id, name = %container.name, error = %ErrorChain(&e),
                            "network namespace vanished before capture could attach");
                    }
                    _ => {
                        this.misses.failed.fetch_add(1, Ordering::Relaxed);
                        warn!(container = %container.id, name = %container.name, error = %ErrorChain(&e),
                            "capture could not attach");
                    }
                }
            }
            ended
        });
    }

    /// Runs one capture to its end, feeding the sinks.
    async fn capture(
        &self,
        target: CaptureTarget,
        group: watch::Receiver<CaptureGroup>,
        cancel: CancellationToken,
        ready: Option<Box<dyn FnOnce(EarlyOutcome) + Send>>,
    ) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let first = group.borrow().clone();
        let watcher = group.clone();
        let sinks: Vec<Box<dyn GroupSink>> = self.sinks.iter().map(|s| s.open(&first)).collect();
        let feed = CaptureFeed { group, sinks };
        let before_start = ready.is_some();
        let capture = match self.source.open(&target, &self.options, feed, cancel).await {
            Ok(capture) => {
                if let Some(ready) = ready {
                    ready(EarlyOutcome::Attached);
                }
                capture
            }
            Err(e) => {
                if let Some(ready) = ready {
                    ready(EarlyOutcome::Failed(ErrorChain(&e).to_string()));
                }
                return Err(e);
            }
        };
        self.attached.fetch_add(1, Ordering::Relaxed);
        let latest = watcher.clone();
        let live = LiveCapture { group: watcher, counters: Arc::clone(&capture.counters) };
        self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(first.key, live);
        let container = first.container().map(|c| c.id.as_str().to_owned());
        info!(capture = first.key, label = %first.label(), container, attach_ms = started.elapsed().as_millis() as u64,
            before_start, "capture attached");
        // The sender lives in the capture thread until it has closed the sinks.
        if capture.done.await.is_err() {
            warn!(capture = first.key, label = %first.label(), "capture thread ended abnormally");
        }
        let stats = capture.counters.snapshot();
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&first.key);
        self.attached.fetch_sub(1, Ordering::Relaxed);
        // Named as the group is now: an early capture attached under the
        // container's id learns its name from the runtime's report.
        let label = latest.borrow().label();
        info!(capture = first.key, label = %label, packets = stats.packets, kernel_drops = stats.kernel_drops,
            "capture detached");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The engine against a fake packet source and a scripted runtime: which
    //! captures it opens, who they are attributed to, and when they close.

    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::inventory::InventoryOptions;
    use crate::model::{ContainerState, RuntimeEventKind};
    use crate::packet::{Capture, CaptureCounters, CaptureFeed, CaptureStats, GroupSink, PacketBatch};
    use crate::testing::{DOCKER, FakeRuntime, container};

    /// What the fake source saw: opened captures' labels, and for each
    /// closed capture the member names its sinks saw last.
    #[derive(Default)]
    struct Seen {
        opened: Vec<String>,
        closed: Vec<Vec<String>>,
    }

    /// Opens nothing real: runs the sinks' `started`, waits for cancel,
    /// then runs `close` with the group as it stands.
    struct FakeSource(Arc<Mutex<Seen>>);

    #[async_trait]
    impl PacketSource for FakeSource {
        fn name(&self) -> &'static str {
            "fake"
        }

        async fn open(
            &self,
            target: &CaptureTarget,
            _options: &CaptureOptions,
            mut feed: CaptureFeed,
            cancel: CancellationToken,
        ) -> crate::Result<Capture> {
            self.0.lock().unwrap().opened.push(target.label.clone());
            let (done, rx) = tokio::sync::oneshot::channel();
            let seen = Arc::clone(&self.0);
            tokio::spawn(async move {
                let group = feed.group.borrow().clone();
                for s in &mut feed.sinks {
                    s.started(&group);
                }
                cancel.cancelled().await;
                let group = feed.group.borrow().clone();
                for s in &mut feed.sinks {
                    s.close(&group, CaptureStats::default());
                }
                seen.lock().unwrap().closed.push(group.containers.iter().map(|c| c.name.clone()).collect());
                let _ = done.send(());
            });
            Ok(Capture { counters: Arc::new(CaptureCounters::default()), done: rx })
        }
    }

    /// Counts the sinks opened and closed.
    #[derive(Default)]
    struct CountingSink {
        opened: AtomicU64,
        closed: Arc<AtomicU64>,
    }

    struct CountingGroup(Arc<AtomicU64>);

    impl GroupSink for CountingGroup {
        fn batch(&mut self, _group: &CaptureGroup, _batch: &PacketBatch<'_>) {}
        fn close(&mut self, _group: &CaptureGroup, _stats: CaptureStats) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl PacketSink for CountingSink {
        fn open(&self, _group: &CaptureGroup) -> Box<dyn GroupSink> {
            self.opened.fetch_add(1, Ordering::Relaxed);
            Box::new(CountingGroup(Arc::clone(&self.closed)))
        }
    }

    /// A running container in the test process's own network namespace.
    fn member(id: &str) -> Container {
        Container { netns: Some("/proc/self/ns/net".into()), ..container(id, DOCKER, ContainerState::Running) }
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        let wait = async {
            while !check() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap_or_else(|_| panic!("{what}"));
    }

    #[tokio::test]
    async fn a_shared_namespace_is_one_capture_that_closes_with_its_last_member() {
        let rt = FakeRuntime::new(DOCKER);
        rt.put(member("a"));
        rt.put(member("b"));
        rt.put(Container {
            netns: Some("/nonexistent/ns/net".into()),
            ..container("gone", DOCKER, ContainerState::Running)
        });
        let sink = Arc::new(CountingSink::default());
        let (engine, seen, stop) = running(rt.clone(), vec![Arc::clone(&sink) as Arc<dyn PacketSink>]).await;
        until("one capture attached", || engine.attached().load(Ordering::Relaxed) == 1).await;
        let opened = seen.lock().unwrap().opened.clone();
        assert_eq!(opened, ["a-docker"], "one capture for the shared namespace, named after its first member");
        assert_eq!(sink.opened.load(Ordering::Relaxed), 1, "each sink opened once per capture");
        assert_eq!(engine.live().len(), 1);

        // One member leaves: the capture stays, attributed to the other.
        rt.put(container("a", DOCKER, ContainerState::Exited));
        rt.emit("a", RuntimeEventKind::Exited { exit_code: Some(0) });
        until("the capture attributed to b", || engine.live().first().is_some_and(|c| c.label() == "b-docker")).await;
        assert_eq!(engine.attached().load(Ordering::Relaxed), 1);
        assert!(seen.lock().unwrap().closed.is_empty());

        // The last one leaves: the capture closes, its sinks with it.
        rt.put(container("b", DOCKER, ContainerState::Exited));
        rt.emit("b", RuntimeEventKind::Exited { exit_code: Some(0) });
        until("the capture detached", || engine.attached().load(Ordering::Relaxed) == 0).await;
        assert_eq!(seen.lock().unwrap().closed, [vec!["b-docker".to_owned()]], "b was the last member");
        assert_eq!(sink.closed.load(Ordering::Relaxed), 1);
        assert!(engine.live().is_empty());
        stop.cancel();
    }

    /// An engine over a fake source and `sinks`, running against a fresh
    /// inventory of `rt`; returns it, what the source saw, and the stop token.
    async fn running(
        rt: Arc<FakeRuntime>,
        sinks: Vec<Arc<dyn PacketSink>>,
    ) -> (CaptureEngine, Arc<Mutex<Seen>>, CancellationToken) {
        let options = InventoryOptions { resync_interval: None, ..InventoryOptions::default() };
        let inventory = Inventory::new(vec![rt], options);
        let stop = CancellationToken::new();
        tokio::spawn({
            let (inventory, stop) = (inventory.clone(), stop.clone());
            async move { inventory.run(stop).await }
        });
        inventory.wait_synced().await;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let engine = CaptureEngine::new(Arc::new(FakeSource(Arc::clone(&seen))), sinks, CaptureOptions::default());
        tokio::spawn({
            let (engine, stop) = (engine.clone(), stop.clone());
            async move { engine.run(&inventory, stop).await }
        });
        (engine, seen, stop)
    }

    /// Asks for an early capture of `c` and returns the outcome.
    async fn early(engine: &CaptureEngine, c: Container) -> EarlyOutcome {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = Box::new(move |outcome| {
            let _ = tx.send(outcome);
        });
        engine.early_attach().request(EarlyRequest { container: c, done });
        tokio::time::timeout(Duration::from_secs(10), rx).await.expect("answered").expect("answered once")
    }

    #[tokio::test]
    async fn a_container_attached_before_it_runs_stays_until_its_runtime_says_otherwise() {
        let rt = FakeRuntime::new(DOCKER);
        let (engine, seen, stop) = running(rt.clone(), vec![]).await;

        assert_eq!(early(&engine, member("a")).await, EarlyOutcome::Attached);
        assert_eq!(seen.lock().unwrap().opened, ["a-docker"]);
        // A second container in that namespace joins the capture.
        assert_eq!(early(&engine, member("b")).await, EarlyOutcome::Joined);
        assert_eq!(engine.attached().load(Ordering::Relaxed), 1);
        let gone = Container { netns: Some("/nonexistent/ns/net".into()), ..member("gone") };
        assert!(matches!(early(&engine, gone).await, EarlyOutcome::Skipped(_)));

        // The runtime saw `a` created but not started yet: it stays.
        rt.put(container("a", DOCKER, ContainerState::Created));
        rt.emit("a", RuntimeEventKind::Created);
        assert_quiet("a stays attached", || engine.attached().load(Ordering::Relaxed) != 1).await;
        // Started, then stopped: confirmed, then gone; `b` was never
        // reported, and leaves once its (here: shared) process is swept.
        rt.put(member("a"));
        rt.emit("a", RuntimeEventKind::Started);
        rt.put(container("a", DOCKER, ContainerState::Exited));
        rt.emit("a", RuntimeEventKind::Exited { exit_code: Some(0) });
        until("attributed to b alone", || engine.live().first().is_some_and(|c| c.label() == "b-docker")).await;
        stop.cancel();
    }

    #[tokio::test]
    async fn a_member_whose_process_is_gone_before_its_runtime_reports_it_is_swept() {
        let rt = FakeRuntime::new(DOCKER);
        let (engine, seen, stop) = running(rt, vec![]).await;
        // A namespace stand-in that can vanish: a file of our own.
        let path = std::env::temp_dir().join(format!("pw-engine-ns-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        let c = Container { netns: Some(path.clone()), ..member("short") };
        assert_eq!(early(&engine, c).await, EarlyOutcome::Attached);
        std::fs::remove_file(&path).unwrap();
        until("the capture detached", || engine.attached().load(Ordering::Relaxed) == 0).await;
        assert_eq!(seen.lock().unwrap().closed, [vec!["short-docker".to_owned()]]);
        stop.cancel();
    }

    /// Checks that `broken` stays false for a while.
    async fn assert_quiet(what: &str, broken: impl Fn() -> bool) {
        for _ in 0..40 {
            assert!(!broken(), "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
