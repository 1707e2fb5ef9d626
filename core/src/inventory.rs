//! The live container inventory: one merged view over every connected runtime.
//!
//! Each runtime gets a watcher task that subscribes to its events, then lists
//! (so nothing between the two is missed), then applies events as they come,
//! inspecting each container an event names. If the runtime goes away, the
//! watcher retries with exponential backoff, and on reconnect it re-lists and
//! reconciles: containers that vanished meanwhile are removed, changed ones
//! updated. While a runtime is away its containers are *kept*: their
//! processes usually outlive a daemon restart, and capture should not blink.
//!
//! Containers are keyed by full id. When several runtimes report the same
//! container (Docker's containers also live in containerd's `moby`
//! namespace), each report is kept and the richest one is shown
//! ([`ContainerRuntime::merge_priority`]). Changes are broadcast as
//! [`InventoryEvent`]s; a subscriber that lags behind gets
//! `RecvError::Lagged` and should re-read [`Inventory::snapshot`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Error, ErrorChain, Result};
use crate::model::{Container, ContainerId, ContainerState, RuntimeEvent, RuntimeEventKind, RuntimeName};
use crate::runtime::ContainerRuntime;

/// Tuning for [`Inventory`].
#[derive(Clone, Debug)]
pub struct InventoryOptions {
    /// Re-list every runtime this often to repair anything events missed.
    /// `None` relies on events alone. Default: 5 minutes.
    pub resync_interval: Option<Duration>,
    /// First wait before reconnecting to a lost runtime. Default: 250 ms.
    pub backoff_initial: Duration,
    /// Longest wait between reconnect attempts. Default: 30 s.
    pub backoff_max: Duration,
    /// Events buffered per subscriber before it lags. Default: 1024.
    pub event_capacity: usize,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        Self {
            resync_interval: Some(Duration::from_secs(300)),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            event_capacity: 1024,
        }
    }
}

/// What made the inventory change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A runtime event.
    Event,
    /// A full list: the first one, a periodic resync, or a reconnect.
    Resync,
}

/// One container's change: `before` is `None` when it was added, `after` is
/// `None` when it was removed.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerChange {
    /// The merged view before the change.
    pub before: Option<Container>,
    /// The merged view after the change.
    pub after: Option<Container>,
    /// What caused it.
    pub origin: Origin,
}

impl ContainerChange {
    /// The container as it is now, or as it was last seen if removed.
    pub fn container(&self) -> &Container {
        self.after.as_ref().or(self.before.as_ref()).expect("a change has a before or an after")
    }

    /// True when the container's processes came alive with this change.
    pub fn started(&self) -> bool {
        let was = self.before.as_ref().is_some_and(|c| c.state.is_alive());
        let is = self.after.as_ref().is_some_and(|c| c.state.is_alive());
        is && !was
    }

    /// True when the container's processes went away with this change.
    pub fn stopped(&self) -> bool {
        let was = self.before.as_ref().is_some_and(|c| c.state.is_alive());
        let is = self.after.as_ref().is_some_and(|c| c.state.is_alive());
        was && !is
    }
}

/// Everything [`Inventory::subscribe`] reports.
#[derive(Clone, Debug, PartialEq)]
pub enum InventoryEvent {
    /// A container was added, changed or removed. Shared, because every
    /// subscriber receives its own clone of each event.
    Container(Arc<ContainerChange>),
    /// A runtime stopped answering; its containers are kept meanwhile.
    RuntimeLost {
        /// Its name.
        runtime: RuntimeName,
        /// Its socket.
        endpoint: PathBuf,
        /// Why, with causes.
        error: String,
    },
    /// A runtime was listed: for the first time (`restored` false) or after
    /// being lost (`restored` true).
    RuntimeSynced {
        /// Its name.
        runtime: RuntimeName,
        /// Its socket.
        endpoint: PathBuf,
        /// Containers it reported.
        containers: usize,
        /// True when it had been lost before.
        restored: bool,
    },
}

/// The live, merged container map. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Inventory {
    shared: Arc<Shared>,
}

struct Shared {
    runtimes: Vec<Arc<dyn ContainerRuntime>>,
    options: InventoryOptions,
    state: RwLock<State>,
    events: broadcast::Sender<InventoryEvent>,
    /// How many runtimes finished their first sync attempt, ok or not.
    attempted: watch::Sender<usize>,
    /// Per runtime: ids another runtime saw start, to inspect here too.
    hints: Vec<mpsc::Sender<ContainerId>>,
    /// The receiving ends, taken by the watchers when they start.
    hint_inboxes: Mutex<Vec<Option<mpsc::Receiver<ContainerId>>>>,
    /// Containers a runtime announced and then no longer knew when asked.
    vanished: std::sync::atomic::AtomicU64,
}

/// Hints queued per runtime before new ones are dropped (resync repairs).
const HINT_CAPACITY: usize = 256;

/// Index of a runtime in `Shared::runtimes`.
type Source = usize;

struct State {
    /// Every report of every container, by the runtime that made it.
    reports: HashMap<ContainerId, BTreeMap<Source, Container>>,
    /// Each runtime's [`ContainerRuntime::merge_priority`], by source.
    priorities: Vec<u8>,
}

impl State {
    /// Every container, merged, sorted by name then id.
    fn sorted(&self) -> Vec<Container> {
        let mut all: Vec<Container> = self.reports.keys().filter_map(|id| self.merged(id)).collect();
        all.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        all
    }

    /// The merged view of a container: the report of the runtime with the
    /// highest merge priority (the first registered among equals), with
    /// fields it lacks filled in from the others, and `reported_by` listing
    /// every reporter.
    fn merged(&self, id: &ContainerId) -> Option<Container> {
        let reports = self.reports.get(id)?;
        let mut ranked: Vec<(Source, &Container)> = reports.iter().map(|(s, c)| (*s, c)).collect();
        // Stable: equal priority keeps registration order.
        ranked.sort_by_key(|(source, _)| std::cmp::Reverse(self.priorities.get(*source).copied().unwrap_or(0)));
        let (best, rest) = ranked.split_first()?;
        let mut merged = best.1.clone();
        for (_, other) in rest {
            fill(&mut merged, other);
        }
        merged.reported_by = ranked.iter().map(|(_, c)| c.runtime.clone()).collect();
        merged.reported_by.sort();
        merged.reported_by.dedup();
        Some(merged)
    }
}

/// Copies into `into` what it lacks and `from` knows. Conflicting values
/// keep `into`'s, the richer runtime's.
fn fill(into: &mut Container, from: &Container) {
    fn take<T: Clone>(slot: &mut Option<T>, other: &Option<T>) {
        if slot.is_none() {
            slot.clone_from(other);
        }
    }
    if into.name.is_empty() {
        into.name.clone_from(&from.name);
    }
    if into.image.is_empty() {
        into.image.clone_from(&from.image);
    }
    if into.ips.is_empty() {
        into.ips.clone_from(&from.ips);
    }
    // A report still saying "created" is behind one that saw the process
    // run (Docker's inspect at create, containerd's task start after it):
    // the container has started, and no report flips it back and forth.
    if into.state == ContainerState::Created && from.state.is_alive() {
        into.state = from.state;
    }
    // A PID is only meaningful while the richer report also says alive.
    if into.state == from.state {
        take(&mut into.pid, &from.pid);
        take(&mut into.netns, &from.netns);
    }
    take(&mut into.namespace, &from.namespace);
    take(&mut into.pod, &from.pod);
    take(&mut into.log_path, &from.log_path);
    into.host_network |= from.host_network;
    into.sandbox |= from.sandbox;
    for (k, v) in &from.labels {
        into.labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

impl Inventory {
    /// An inventory over `runtimes`, empty until [`Inventory::run`] or
    /// [`Inventory::sync_once`].
    pub fn new(runtimes: Vec<Arc<dyn ContainerRuntime>>, options: InventoryOptions) -> Self {
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let (attempted, _) = watch::channel(0);
        let (hints, inboxes): (Vec<_>, Vec<_>) =
            runtimes.iter().map(|_| mpsc::channel(HINT_CAPACITY)).map(|(tx, rx)| (tx, Some(rx))).unzip();
        let hint_inboxes = Mutex::new(inboxes);
        let state = RwLock::new(State {
            reports: HashMap::new(),
            priorities: runtimes.iter().map(|rt| rt.merge_priority()).collect(),
        });
        let vanished = std::sync::atomic::AtomicU64::new(0);
        let shared = Shared { runtimes, options, state, events, attempted, hints, hint_inboxes, vanished };
        Self { shared: Arc::new(shared) }
    }

    /// Containers a runtime announced (an event) and had removed by the
    /// time it was asked about them: counted, and dropped from the inventory.
    pub fn vanished(&self) -> u64 {
        self.shared.vanished.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every container, merged across runtimes, sorted by name then id.
    pub fn snapshot(&self) -> Vec<Container> {
        self.read().sorted()
    }

    /// Every container now, and the changes after that moment, taken at
    /// once: each change is either already in the list or in the receiver,
    /// never both. A follower that lists first and then replays changes
    /// queued meanwhile would see a running container "created" again.
    pub fn list_and_subscribe(&self) -> (Vec<Container>, broadcast::Receiver<InventoryEvent>) {
        // Changes are published under the write lock, so none can fall
        // between the list and the subscription while the read lock is held.
        let state = self.read();
        (state.sorted(), self.shared.events.subscribe())
    }

    /// One container by full id.
    pub fn get(&self, id: &ContainerId) -> Option<Container> {
        self.read().merged(id)
    }

    /// The running containers grouped by network namespace: one group per
    /// namespace, so capture opens one socket for a whole pod.
    pub fn netns_groups(&self) -> Vec<crate::NetnsGroup> {
        crate::netns::group(self.snapshot())
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<InventoryEvent> {
        self.shared.events.subscribe()
    }

    /// Resolves once every runtime has had its first sync attempt, whether it
    /// succeeded or not.
    pub async fn wait_synced(&self) {
        let want = self.shared.runtimes.len();
        let mut rx = self.shared.attempted.subscribe();
        // The sender lives in `self.shared`, so the channel cannot close.
        let _ = rx.wait_for(|n| *n >= want).await;
    }

    /// True once every runtime has had its first sync attempt.
    pub fn is_synced(&self) -> bool {
        *self.shared.attempted.borrow() >= self.shared.runtimes.len()
    }

    /// Lists every runtime once, concurrently, and reconciles. Returns the
    /// failures; the runtimes that answered are applied regardless.
    pub async fn sync_once(&self) -> Vec<(Arc<dyn ContainerRuntime>, Error)> {
        let lists = join_all(self.shared.runtimes.iter().map(|rt| rt.list())).await;
        let mut failed = Vec::new();
        for (source, result) in lists.into_iter().enumerate() {
            match result {
                Ok(list) => self.reconcile(source, list),
                Err(e) => failed.push((Arc::clone(&self.shared.runtimes[source]), e)),
            }
        }
        failed
    }

    /// Watches every runtime until `cancel` fires.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut watchers = JoinSet::new();
        for source in 0..self.shared.runtimes.len() {
            let this = self.clone();
            let cancel = cancel.child_token();
            watchers.spawn(async move { this.watch(source, cancel).await });
        }
        while watchers.join_next().await.is_some() {}
    }

    /// One runtime's watcher: sessions separated by backoff.
    async fn watch(&self, source: Source, cancel: CancellationToken) {
        let rt = Arc::clone(&self.shared.runtimes[source]);
        let (kind, endpoint) = (rt.name(), rt.endpoint().to_path_buf());
        let opts = &self.shared.options;
        let mut backoff = opts.backoff_initial;
        let mut lost = false;
        let mut first = true;
        let inbox =
            self.shared.hint_inboxes.lock().unwrap_or_else(|p| p.into_inner()).get_mut(source).and_then(Option::take);
        // A second `run` finds the inbox taken and works without hints.
        let mut hints = inbox.unwrap_or_else(|| mpsc::channel(1).1);
        loop {
            let outcome = self.session(source, &cancel, lost, &mut first, &mut hints).await;
            if cancel.is_cancelled() {
                return;
            }
            let (synced, error) = match outcome {
                Ok(()) => return,
                Err(failure) => failure,
            };
            if synced {
                backoff = opts.backoff_initial;
            }
            if synced || !lost {
                let error = ErrorChain(&error).to_string();
                warn!(runtime = %kind, endpoint = %endpoint.display(), %error, "runtime lost");
                let endpoint = endpoint.clone();
                self.publish(InventoryEvent::RuntimeLost { runtime: kind.clone(), endpoint, error });
                lost = true;
            } else {
                debug!(runtime = %kind, endpoint = %endpoint.display(), error = %ErrorChain(&error), "runtime still away");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(opts.backoff_max);
        }
    }

    /// Subscribe, list, then follow events until the runtime fails or
    /// `cancel` fires. The error says whether the list succeeded first.
    async fn session(
        &self,
        source: Source,
        cancel: &CancellationToken,
        lost: bool,
        first: &mut bool,
        hints: &mut mpsc::Receiver<ContainerId>,
    ) -> Result<(), (bool, Error)> {
        let rt = Arc::clone(&self.shared.runtimes[source]);
        let attempted = |first: &mut bool| {
            if std::mem::take(first) {
                self.shared.attempted.send_modify(|n| *n += 1);
            }
        };
        // Everything this session starts ends with it, however it ends.
        let session = cancel.child_token();
        let _end_session = session.clone().drop_guard();
        let subscribed = match rt.events(session.child_token()).await {
            Ok(stream) => rt.list().await.map(|list| (stream, list)),
            Err(e) => Err(e),
        };
        let (mut stream, list) = match subscribed {
            Ok(both) => both,
            Err(e) => {
                attempted(first);
                return Err((false, e));
            }
        };
        let containers = list.len();
        self.reconcile(source, list);
        attempted(first);
        let (runtime, endpoint) = (rt.name(), rt.endpoint().to_path_buf());
        if lost {
            info!(%runtime, endpoint = %endpoint.display(), containers, "runtime restored");
        } else {
            info!(%runtime, endpoint = %endpoint.display(), containers, "runtime synced");
        }
        self.publish(InventoryEvent::RuntimeSynced {
            runtime: runtime.clone(),
            endpoint: endpoint.clone(),
            containers,
            restored: lost,
        });

        let mut resync = self.shared.options.resync_interval.map(|every| {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        let mut last_error = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                Some(id) = hints.recv() => self.apply_hint(source, id).await,
                item = stream.next() => match item {
                    Some(Ok(event)) => self.apply(source, event).await,
                    Some(Err(e)) if e.is_transient() => last_error = Some(e),
                    Some(Err(e)) => warn!(%runtime, error = %ErrorChain(&e), "skipped an undecodable runtime event"),
                    None => {
                        let e = last_error.unwrap_or_else(|| {
                            Error::unavailable(endpoint.display().to_string(), "event stream ended")
                        });
                        return Err((true, e));
                    }
                },
                _ = async { resync.as_mut().expect("guarded").tick().await }, if resync.is_some() => {
                    match rt.list().await {
                        Ok(list) => self.reconcile(source, list),
                        Err(e) => return Err((true, e)),
                    }
                }
            }
        }
    }

    /// Applies one runtime event by re-inspecting the container it names,
    /// then asks the other runtimes to look at it too.
    async fn apply(&self, source: Source, event: RuntimeEvent) {
        let rt = &self.shared.runtimes[source];
        let id = event.id;
        if event.kind == RuntimeEventKind::Deleted {
            self.remove(source, &id, Origin::Event);
        } else {
            match rt.inspect(&id).await {
                Ok(container) => self.upsert(source, container, Origin::Event),
                Err(Error::NotFound { .. }) => {
                    self.shared.vanished.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    debug!(container = %id, runtime = %rt.name(), "container gone before it could be inspected");
                    self.remove(source, &id, Origin::Event);
                }
                Err(e) => {
                    warn!(container = %id, runtime = %rt.name(), error = %ErrorChain(&e),
                        "could not inspect container; keeping its last known state");
                    self.assume_state(source, &id, event.kind);
                }
            }
        }
        self.hint_others(source, &id);
    }

    /// Asks every other runtime to re-inspect `id`.
    ///
    /// One container is often visible through several runtimes, and not all
    /// of them have events: on containerd 1.6 the CRI is polled, so without
    /// this its report (pod IPs, log path, and the state the merged view
    /// shows) would lag a poll interval behind containerd's own events, and
    /// a container created and removed between two polls would keep a stale
    /// report. The hint is handled in the other runtime's watcher, in order
    /// with its own events; hints never cause further hints.
    fn hint_others(&self, source: Source, id: &ContainerId) {
        for (other, tx) in self.shared.hints.iter().enumerate() {
            if other != source {
                // Full means that runtime is far behind; its resync repairs it.
                let _ = tx.try_send(id.clone());
            }
        }
    }

    /// Re-inspects a container another runtime had news of.
    async fn apply_hint(&self, source: Source, id: ContainerId) {
        let rt = &self.shared.runtimes[source];
        match rt.inspect(&id).await {
            Ok(container) => self.upsert(source, container, Origin::Event),
            Err(Error::NotFound { .. }) => self.remove(source, &id, Origin::Event),
            Err(e) => debug!(container = %id, runtime = %rt.name(), error = %ErrorChain(&e), "hinted inspect failed"),
        }
    }

    /// When inspect fails, still record what the event itself tells.
    fn assume_state(&self, source: Source, id: &ContainerId, kind: RuntimeEventKind) {
        let state = match kind {
            RuntimeEventKind::Exited { .. } => ContainerState::Exited,
            RuntimeEventKind::Paused => ContainerState::Paused,
            RuntimeEventKind::Resumed => ContainerState::Running,
            _ => return,
        };
        let Some(mut container) = self.read().reports.get(id).and_then(|r| r.get(&source)).cloned() else {
            return;
        };
        container.state = state;
        if !state.is_alive() {
            container.pid = None;
            container.netns = None;
        }
        self.upsert(source, container, Origin::Event);
    }

    /// Replaces everything `source` reported with `list`.
    fn reconcile(&self, source: Source, list: Vec<Container>) {
        let mut fresh: HashMap<ContainerId, Container> = list.into_iter().map(|c| (c.id.clone(), c)).collect();
        let gone: Vec<ContainerId> = self
            .read()
            .reports
            .iter()
            .filter(|(id, reports)| reports.contains_key(&source) && !fresh.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(source, &id, Origin::Resync);
        }
        for (_, container) in fresh.drain() {
            self.upsert(source, container, Origin::Resync);
        }
    }

    fn upsert(&self, source: Source, container: Container, origin: Origin) {
        if container.state.is_alive() && container.pid.is_none() {
            warn!(container = %container.id, name = %container.name, runtime = %container.runtime,
                "running container has no PID; its network namespace is unknown");
        }
        let id = container.id.clone();
        let mut state = self.write();
        let before = state.merged(&id);
        state.reports.entry(id.clone()).or_default().insert(source, container);
        let after = state.merged(&id);
        if before != after {
            self.publish_locked(&state, ContainerChange { before, after, origin });
        }
    }

    fn remove(&self, source: Source, id: &ContainerId, origin: Origin) {
        let mut state = self.write();
        let before = state.merged(id);
        let Some(reports) = state.reports.get_mut(id) else { return };
        reports.remove(&source);
        if reports.is_empty() {
            state.reports.remove(id);
        }
        let after = state.merged(id);
        if before != after {
            self.publish_locked(&state, ContainerChange { before, after, origin });
        }
    }

    /// Sends while the state lock is held, so subscribers see changes in the
    /// order they were applied.
    fn publish_locked(&self, _state: &RwLockWriteGuard<'_, State>, change: ContainerChange) {
        self.publish(InventoryEvent::Container(Arc::new(change)));
    }

    fn publish(&self, event: InventoryEvent) {
        // No subscribers is fine: the snapshot is the source of truth.
        let _ = self.shared.events.send(event);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.shared.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests;
