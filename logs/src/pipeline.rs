//! From sources to outputs, with backpressure and checkpoints.
//!
//! Sources send batches into a bounded intake. A router numbers each batch,
//! notes the resume points it carries, and hands it to every output's own
//! bounded queue, waiting when one is full: a blocked output stops the
//! router, the intake fills, and sources stop reading. Each output writes in
//! order and reports the last batch it wrote; a committer saves the resume
//! points of batches every output has written, with each file output's
//! length at that batch.
//!
//! A tap ([`Pipeline::tap`]) lets live readers (the API's streams) see every
//! routed batch without ever slowing the outputs: it is a broadcast channel
//! that a slow reader falls behind on, and is told by how much.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use portwarden_core::{ByteBudget, LogBatch, LogSender, LogStats, ResumeLookup, ResumePoints};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};

use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::output::{FileMark, Output, WhenFull};

/// Queue sizes and the checkpoint cadence.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// Batches waiting between sources and the router.
    pub intake: usize,
    /// Batches waiting in front of each output.
    pub queue: usize,
    /// How often resume points are saved.
    pub commit_interval: Duration,
    /// Bytes of records in flight from the sources to the outputs that
    /// wait (`block`) at most; sources wait beyond it. Outputs that may
    /// drop are bounded by their queue instead.
    pub max_bytes: usize,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self { intake: 16, queue: 32, commit_interval: Duration::from_secs(1), max_bytes: 8 << 20 }
    }
}

type Positions = Vec<(Arc<str>, String)>;

/// A batch in an output's queue, with its sequence number.
type Queued = (u64, Arc<LogBatch>);

struct OutputState {
    name: String,
    /// Its batches may be dropped; checkpoints do not wait for it.
    lossy: bool,
    written: AtomicU64,
    counters: Arc<OutputCounters>,
    marks: Mutex<VecDeque<(u64, FileMark)>>,
}

struct Shared {
    /// Resume points of batches not yet written everywhere, by batch number.
    pending: Mutex<VecDeque<(u64, Positions)>>,
    committed: Mutex<Checkpoint>,
    outputs: Vec<OutputState>,
    store: CheckpointStore,
    tap: broadcast::Sender<Arc<LogBatch>>,
    stats: Arc<LogStats>,
    /// The bytes in flight, and each batch's share by number until every
    /// output that waits has written it.
    budget: Arc<ByteBudget>,
    shares: Mutex<VecDeque<(u64, u32)>>,
    /// The resume points sources hand over; its forgotten keys are not
    /// committed.
    points: ResumePoints,
    /// A forgotten key left the committed points: the next commit saves.
    forgotten_since_save: AtomicBool,
}

impl Shared {
    /// The last batch every output that waits has written; `None` when
    /// every output may drop.
    fn written_by_waiting(&self) -> Option<u64> {
        self.outputs.iter().filter(|o| !o.lossy).map(|o| o.written.load(Ordering::Acquire)).min()
    }

    /// Gives back the shares of the batches every output that waits has
    /// written (all of them at once when every output may drop).
    fn release_written(&self) {
        let done = self.written_by_waiting().unwrap_or(u64::MAX);
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        let mut units = 0;
        while let Some((_, n)) = shares.front().filter(|(seq, _)| *seq <= done) {
            units += n;
            shares.pop_front();
        }
        drop(shares);
        if units > 0 {
            self.budget.release(units);
        }
    }
}

/// A running pipeline.
pub struct Pipeline {
    intake: Option<LogSender>,
    /// The resume points `intake` notes, for sources re-attached.
    points: ResumePoints,
    shared: Arc<Shared>,
    gauges: QueueGauges,
    router: JoinHandle<()>,
    writers: Vec<JoinHandle<()>>,
    committer: JoinHandle<()>,
    stop_committer: tokio::sync::watch::Sender<bool>,
}

impl Pipeline {
    /// Starts the pipeline. The checkpoint in `store` is loaded, and file
    /// outputs are cut back to their checkpointed length first.
    pub fn start(
        outputs: Vec<Box<dyn Output>>,
        store: CheckpointStore,
        options: PipelineOptions,
        stats: Arc<LogStats>,
    ) -> crate::Result<Pipeline> {
        if outputs.is_empty() {
            return Err(crate::Error::NoOutput);
        }
        let checkpoint = store.load(&stats);
        let mut reopened = Vec::new();
        for mut output in outputs {
            if let Some(mark) = checkpoint.outputs.get(&output.name()) {
                output.restore(mark).map_err(|source| crate::Error::Restore { name: output.name(), source })?;
            }
            reopened.push(output);
        }
        let saved = checkpoint.positions.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        // Where each file output starts is a checkpoint too: a crash before
        // the first regular one cuts back to it instead of keeping records
        // that will be read again.
        let states = reopened
            .iter()
            .map(|o| OutputState {
                name: o.name(),
                lossy: o.when_full() == WhenFull::DropNewest,
                written: AtomicU64::new(0),
                counters: Arc::new(OutputCounters { buffer: o.buffer_stats(), ..OutputCounters::default() }),
                marks: Mutex::new(o.mark().map(|m| (0, m)).into_iter().collect()),
            })
            .collect();
        let points = ResumePoints::from_saved(saved);
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            committed: Mutex::new(checkpoint),
            outputs: states,
            store,
            stats,
            tap: broadcast::channel(TAP_BATCHES).0,
            budget: Arc::new(ByteBudget::new(options.max_bytes)),
            shares: Mutex::default(),
            points: points.clone(),
            forgotten_since_save: AtomicBool::new(false),
        });
        if let Some(checkpoint) = collect_commit(&shared) {
            save(&shared, &checkpoint);
        }
        let (intake, mut intake_rx) = mpsc::channel::<LogBatch>(options.intake.max(1));
        let intake = LogSender::new(intake, points.clone()).with_budget(Arc::clone(&shared.budget));
        let mut queues = Vec::new();
        let mut writers = Vec::new();
        let mut gauges = QueueGauges { intake: intake.downgrade(), outputs: Vec::new() };
        for (i, mut output) in reopened.into_iter().enumerate() {
            let (tx, mut rx) = mpsc::channel::<Queued>(options.queue.max(1));
            gauges.outputs.push((output.name(), tx.downgrade(), Arc::clone(&shared.outputs[i].counters)));
            queues.push((tx, output.when_full(), Arc::clone(&shared.outputs[i].counters)));
            let shared = Arc::clone(&shared);
            writers.push(tokio::spawn(async move {
                let mut queued = Vec::new();
                let mut broken = false;
                // Everything already queued is written with one flush.
                while rx.recv_many(&mut queued, 64).await > 0 {
                    let mut records = 0;
                    if !broken {
                        let written = AssertUnwindSafe(async {
                            let counters = &shared.outputs[i].counters;
                            for (_, batch) in &queued {
                                write_until_done(output.as_mut(), batch, &shared.stats, counters).await;
                                records += batch.len() as u64;
                            }
                            flush_until_done(output.as_mut(), &shared.stats, counters).await;
                        })
                        .catch_unwind()
                        .await;
                        if written.is_err() {
                            // An output that panics (an embedder's, say) is
                            // cut off alone: its queue is drained unwritten
                            // so the others, and checkpoints, go on.
                            broken = true;
                            shared.stats.panics.fetch_add(1, Ordering::Relaxed);
                            error!(output = %output.name(), "log output panicked; it gets no more records");
                        }
                    }
                    let seq = queued.last().map_or(0, |(seq, _)| *seq);
                    if let (false, Some(mark)) = (broken, output.mark()) {
                        shared.outputs[i].marks.lock().unwrap_or_else(|e| e.into_inner()).push_back((seq, mark));
                    }
                    shared.outputs[i].written.store(seq, Ordering::Release);
                    shared.release_written();
                    shared.stats.written.fetch_add(records, Ordering::Relaxed);
                    shared.outputs[i].counters.sent.fetch_add(records, Ordering::Relaxed);
                    queued.clear();
                }
            }));
        }
        let router = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                let mut seq = 0u64;
                while let Some(batch) = intake_rx.recv().await {
                    seq += 1;
                    let units = shared.budget.units_of(&batch);
                    shared.shares.lock().unwrap_or_else(|e| e.into_inner()).push_back((seq, units));
                    let mut last: HashMap<Arc<str>, String> = HashMap::new();
                    for r in &batch {
                        if let Some(p) = &r.position {
                            last.insert(Arc::clone(&p.key), p.state.clone());
                        }
                    }
                    shared
                        .pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back((seq, last.into_iter().collect()));
                    shared.stats.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    let batch = Arc::new(batch);
                    if shared.tap.receiver_count() > 0 {
                        let _ = shared.tap.send(Arc::clone(&batch));
                    }
                    for (q, when_full, counters) in &queues {
                        let queued = (seq, Arc::clone(&batch));
                        let sent = match when_full {
                            WhenFull::Block => q.send(queued).await.is_ok(),
                            WhenFull::DropNewest => match q.try_send(queued) {
                                Ok(()) => true,
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    shared.stats.output_dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                                    counters.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                                    true
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => false,
                            },
                        };
                        if !sent {
                            return;
                        }
                    }
                    if shared.outputs.iter().all(|o| o.lossy) {
                        shared.release_written();
                    }
                }
            }
        });
        let (stop_committer, mut stop) = tokio::sync::watch::channel(false);
        let committer = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                let mut tick = tokio::time::interval(options.commit_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        // Saving is file I/O: a blocking thread does it.
                        _ = tick.tick() => commit_off_thread(&shared).await,
                        _ = stop.changed() => return,
                    }
                }
            }
        });
        Ok(Pipeline { intake: Some(intake), points, shared, gauges, router, writers, committer, stop_committer })
    }

    /// Every batch routed from now on, for live readers. A reader that
    /// falls more than 128 batches behind skips ahead (`Lagged`).
    pub fn tap(&self) -> RecordTap {
        RecordTap(self.shared.tap.clone())
    }

    /// How full the queues are, for metrics.
    pub fn gauges(&self) -> QueueGauges {
        self.gauges.clone()
    }

    /// Where sources send. The pipeline drains once every clone is dropped.
    pub fn sender(&self) -> LogSender {
        self.intake.clone().expect("pipeline is running")
    }

    /// Saved (or newer, handed over in this run) resume points, for sources.
    pub fn resume(&self) -> ResumeLookup {
        self.points.lookup()
    }

    /// Drops a key's resume point (its container is gone), for the
    /// collector. Batches still in the queues that carry it do not bring
    /// it back when they are committed.
    pub fn forgetter(&self) -> Arc<dyn Fn(&str) + Send + Sync> {
        let (shared, points) = (Arc::clone(&self.shared), self.points.clone());
        Arc::new(move |key: &str| {
            points.forget(key);
            let mut committed = shared.committed.lock().unwrap_or_else(|e| e.into_inner());
            if committed.positions.remove(key).is_some() {
                shared.forgotten_since_save.store(true, Ordering::Relaxed);
            }
        })
    }

    /// Waits for sources to finish (every sender dropped), writes what is
    /// queued, and saves a last checkpoint. Bounded by `grace`: an output
    /// that never drains does not keep the agent from stopping.
    pub async fn finish(mut self, grace: Duration) {
        self.intake = None;
        let drained = tokio::time::timeout(grace, async {
            let _ = (&mut self.router).await;
            for w in &mut self.writers {
                let _ = w.await;
            }
        })
        .await;
        if drained.is_err() {
            warn!(grace = ?grace, "log outputs did not drain in time; unwritten records are read again on restart");
            self.router.abort();
            for w in &self.writers {
                w.abort();
            }
        }
        let _ = self.stop_committer.send(true);
        let _ = (&mut self.committer).await;
        commit_off_thread(&self.shared).await;
    }
}

/// Batches a tap holds for its slowest reader: unread batches stay in
/// memory, so this bounds what a slow API client can make the agent keep.
pub(crate) const TAP_BATCHES: usize = 128;

/// Subscribes live readers to the pipeline's batches.
#[derive(Clone)]
pub struct RecordTap(broadcast::Sender<Arc<LogBatch>>);

impl RecordTap {
    /// A reader that sees every batch routed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogBatch>> {
        self.0.subscribe()
    }
}

/// What one output did: records written, failed attempts retried,
/// records dropped because its queue was full (`when_full = "drop_newest"`).
#[derive(Debug, Default)]
pub struct OutputCounters {
    /// Records written (delivered, for network outputs).
    pub sent: AtomicU64,
    /// Writes or flushes that failed and were retried.
    pub retries: AtomicU64,
    /// Records dropped at its full queue.
    pub dropped: AtomicU64,
    /// Its disk buffer's counters, when it has one.
    pub buffer: Option<Arc<crate::output::BufferStats>>,
}

/// Reads the pipeline's queue depths and each output's counters without
/// keeping its queues open.
#[derive(Clone)]
pub struct QueueGauges {
    intake: mpsc::WeakSender<LogBatch>,
    outputs: Vec<(String, mpsc::WeakSender<Queued>, Arc<OutputCounters>)>,
}

/// Batches waiting in a queue (0 once it closed).
fn depth<T>(queue: &mpsc::WeakSender<T>) -> usize {
    queue.upgrade().map_or(0, |q| q.max_capacity() - q.capacity())
}

impl QueueGauges {
    /// Batches waiting between the sources and the router.
    pub fn intake(&self) -> usize {
        depth(&self.intake)
    }

    /// Batches waiting in front of each output, by output name.
    pub fn outputs(&self) -> Vec<(String, usize)> {
        self.outputs.iter().map(|(name, q, _)| (name.clone(), depth(q))).collect()
    }

    /// Each output's counters, by output name.
    pub fn counters(&self) -> Vec<(String, &OutputCounters)> {
        self.outputs.iter().map(|(name, _, c)| (name.clone(), c.as_ref())).collect()
    }
}

/// Retries taking a batch in until it succeeds: a record is never skipped.
async fn write_until_done(output: &mut dyn Output, batch: &LogBatch, stats: &LogStats, counters: &OutputCounters) {
    let mut backoff = Duration::from_millis(100);
    while let Err(e) = output.write(batch).await {
        stats.output_errors.fetch_add(1, Ordering::Relaxed);
        counters.retries.fetch_add(1, Ordering::Relaxed);
        warn!(output = %output.name(), error = %e, retry_in = ?backoff, "log output failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Retries delivering until it succeeds.
async fn flush_until_done(output: &mut dyn Output, stats: &LogStats, counters: &OutputCounters) {
    let mut backoff = Duration::from_millis(100);
    while let Err(e) = output.flush().await {
        stats.output_errors.fetch_add(1, Ordering::Relaxed);
        counters.retries.fetch_add(1, Ordering::Relaxed);
        warn!(output = %output.name(), error = %e, retry_in = ?backoff, "log output failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Saves the resume points of every batch all outputs have written. The
/// file is written on a blocking thread, and only when something changed:
/// an idle agent keeps no thread busy.
async fn commit_off_thread(shared: &Arc<Shared>) {
    let Some(checkpoint) = collect_commit(shared) else { return };
    let shared = Arc::clone(shared);
    if tokio::task::spawn_blocking(move || save(&shared, &checkpoint)).await.is_err() {
        warn!("saving log checkpoints failed (its thread ended abnormally); the next save retries");
    }
}

/// Moves what every output that waits has written into the committed
/// checkpoint; returns it when it changed.
fn collect_commit(shared: &Shared) -> Option<Checkpoint> {
    // With every output lossy, a batch counts once any output wrote it.
    let done = shared
        .written_by_waiting()
        .unwrap_or_else(|| shared.outputs.iter().map(|o| o.written.load(Ordering::Acquire)).max().unwrap_or(0));
    let mut committed = shared.committed.lock().unwrap_or_else(|e| e.into_inner());
    let mut changed = shared.forgotten_since_save.swap(false, Ordering::Relaxed);
    {
        let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        while pending.front().is_some_and(|(seq, _)| *seq <= done) {
            if let Some((_, positions)) = pending.pop_front() {
                for (k, v) in positions {
                    // A container removed while this batch waited.
                    if !shared.points.is_forgotten(&k) {
                        committed.positions.insert(k.to_string(), v);
                    }
                }
                changed = true;
            }
        }
    }
    for o in &shared.outputs {
        let mut marks = o.marks.lock().unwrap_or_else(|e| e.into_inner());
        let mut newest = None;
        while marks.front().is_some_and(|(seq, _)| *seq <= done) {
            newest = marks.pop_front().map(|(_, m)| m);
        }
        if let Some(mark) = newest {
            committed.outputs.insert(o.name.clone(), mark);
            changed = true;
        }
    }
    changed.then(|| committed.clone())
}

fn save(shared: &Shared, checkpoint: &Checkpoint) {
    if let Err(e) = shared.store.save(checkpoint) {
        warn!(error = %e, "cannot save log checkpoints");
    } else {
        debug!("log checkpoints saved");
    }
}
