//! Follows every container's output with the first source that accepts it,
//! attaching on start and letting the follower finish on stop.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use portwarden_core::{
    Container, ContainerId, ErrorChain, Inventory, InventoryEvent, LogSender, LogSource, LogStats, ResumeLookup,
    Selector,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// One container's follower.
struct Follower {
    /// Fired when the container stops: the source reads what is written, then returns.
    stop: CancellationToken,
    /// The container started again while this follower was finishing.
    reattach: bool,
}

/// Attaches log sources to containers as the inventory reports them.
pub struct LogCollector {
    sources: Vec<Arc<dyn LogSource>>,
    out: LogSender,
    resume: ResumeLookup,
    forget: Arc<dyn Fn(&str) + Send + Sync>,
    only: Option<Selector>,
    stats: Arc<LogStats>,
}

impl LogCollector {
    /// Sources are tried in order; records go to `out`.
    pub fn new(
        sources: Vec<Arc<dyn LogSource>>,
        out: LogSender,
        resume: ResumeLookup,
        forget: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Self {
        Self { sources, out, resume, forget, only: None, stats: Arc::default() }
    }

    /// Counts into `stats` (a source that panicked, ...).
    pub fn counting(mut self, stats: Arc<LogStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Follows only the containers `selector` picks.
    pub fn only(mut self, selector: Selector) -> Self {
        self.only = Some(selector);
        self
    }

    /// Runs until `cancel`, then lets every follower finish.
    pub async fn run(self, inventory: Inventory, cancel: CancellationToken) {
        inventory.wait_synced().await;
        let (now, mut changes) = inventory.list_and_subscribe();
        let mut followers: HashMap<ContainerId, Follower> = HashMap::new();
        // Running containers whose source returned for good (a log driver
        // that cannot be read back), by source: a later report of the same
        // container is not a reason to try again; a new start is.
        let mut finished: HashMap<ContainerId, &'static str> = HashMap::new();
        let mut tasks: JoinSet<(ContainerId, &'static str)> = JoinSet::new();
        for c in now {
            let alive = c.state.is_alive();
            // A container that stopped while the agent was away still has
            // output to read if it was being followed.
            let resumable = self.source_for(&c).is_some_and(|s| (self.resume)(&s.resume_key(&c)).is_some());
            if alive || resumable {
                self.attach(Arc::new(c), !alive, &cancel, &mut followers, &mut tasks);
            }
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                change = changes.recv() => match change {
                    Ok(InventoryEvent::Container(change)) => {
                        let c = change.container();
                        let alive = change.after.as_ref().is_some_and(|a| a.state.is_alive());
                        if alive {
                            if change.started() {
                                finished.remove(&c.id);
                            }
                            let source = self.source_for(c).map(|s| s.name());
                            match followers.get_mut(&c.id) {
                                Some(f) if change.started() => f.reattach = true,
                                Some(_) => {}
                                None if source.is_some() && finished.get(&c.id).copied() == source => {}
                                // Also on updates: a container first seen
                                // without its log path (containerd's report
                                // before the CRI's) gets a source once the
                                // richer report arrives.
                                None => self.attach(Arc::new(c.clone()), false, &cancel, &mut followers, &mut tasks),
                            }
                        } else {
                            finished.remove(&c.id);
                            if let Some(f) = followers.get_mut(&c.id) {
                                f.stop.cancel();
                                f.reattach = false;
                            }
                            if change.after.is_none() {
                                // Gone from every runtime: its resume points
                                // go. The last report can be another
                                // runtime's view (containerd's of a Docker
                                // or CRI container), which the source that
                                // read it does not accept: forget under
                                // every source's key.
                                for source in &self.sources {
                                    (self.forget)(&source.resume_key(c));
                                }
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        warn!(missed, "log collector fell behind the inventory; re-reading it");
                        for c in inventory.snapshot() {
                            if c.state.is_alive() && !followers.contains_key(&c.id) {
                                self.attach(Arc::new(c), false, &cancel, &mut followers, &mut tasks);
                            }
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let Ok((id, source)) = done else { continue };
                    match followers.remove(&id) {
                        Some(f) if f.reattach => {
                            if let Some(c) = inventory.get(&id).filter(|c| c.state.is_alive()) {
                                self.attach(Arc::new(c), false, &cancel, &mut followers, &mut tasks);
                            }
                        }
                        Some(f) if !f.stop.is_cancelled() => {
                            finished.insert(id, source);
                        }
                        _ => {}
                    }
                }
            }
        }
        for f in followers.values() {
            f.stop.cancel();
        }
        while tasks.join_next().await.is_some() {}
    }

    fn source_for(&self, c: &Container) -> Option<&Arc<dyn LogSource>> {
        self.sources.iter().find(|s| s.accepts(c))
    }

    fn attach(
        &self,
        container: Arc<Container>,
        stopped: bool,
        cancel: &CancellationToken,
        followers: &mut HashMap<ContainerId, Follower>,
        tasks: &mut JoinSet<(ContainerId, &'static str)>,
    ) {
        if self.only.as_ref().is_some_and(|only| !only(&container)) {
            return;
        }
        let Some(source) = self.source_for(&container).cloned() else {
            debug!(container = %container.id, runtime = %container.runtime, "no log source reads this container");
            return;
        };
        let stop = cancel.child_token();
        if stopped {
            stop.cancel();
        }
        info!(container = %container.id, name = %container.name, source = source.name(), "log collection attached");
        followers.insert(container.id.clone(), Follower { stop: stop.clone(), reattach: false });
        let (out, resume) = (self.out.clone(), Arc::clone(&self.resume));
        let stats = Arc::clone(&self.stats);
        tasks.spawn(async move {
            let id = container.id.clone();
            // A source that panics (an embedder's, say) ends only this
            // container's collection: logged, counted, and the collector
            // forgets it as it would a finished one.
            let followed = AssertUnwindSafe(source.follow(Arc::clone(&container), resume, out, stop)).catch_unwind();
            match followed.await {
                Err(_) => {
                    stats.panics.fetch_add(1, Ordering::Relaxed);
                    error!(container = %id, source = source.name(), "log source panicked; this container's collection ended");
                }
                Ok(Err(e)) => {
                    warn!(container = %id, source = source.name(), error = %ErrorChain(&e), "log collection ended with an error");
                }
                Ok(Ok(())) => debug!(container = %id, source = source.name(), "log collection finished"),
            }
            (id, source.name())
        });
    }
}
