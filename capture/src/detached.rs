//! [`Detached`]: a packet sink run on a thread of its own, behind a bounded
//! queue, so that a sink which blocks or is slow (an embedder's, say) costs
//! its own frames and never the capture threads, the other sinks, or the
//! kernel rings. Each ring block is copied for it; when the queue is full the
//! block is dropped for this sink alone and counted. A sink that panics is
//! dropped for that capture and counted.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use portwarden_core::{CaptureGroup, CaptureStats, GroupSink, Interface, PacketBatch, PacketMeta, PacketSink};
use tracing::{error, warn};

/// Messages queued at most (besides the byte bound).
const QUEUE_MESSAGES: usize = 4096;

/// What a detached sink dropped or lost.
#[derive(Debug, Default)]
pub struct DetachedStats {
    /// Ring blocks not handed to the sink because its queue was full.
    pub dropped_batches: AtomicU64,
    /// Frames in those blocks.
    pub dropped_frames: AtomicU64,
    /// Captures whose sink panicked (it is dropped for that capture).
    pub panics: AtomicU64,
    /// Captures whose start or end the sink missed, its queue being full.
    pub missed_captures: AtomicU64,
}

/// Runs `inner` on a thread of its own (see the module docs).
pub struct Detached {
    tx: SyncSender<Message>,
    queued: Arc<AtomicU64>,
    max_bytes: u64,
    stats: Arc<DetachedStats>,
    next: AtomicU64,
}

enum Message {
    Open { id: u64, group: CaptureGroup },
    Group { id: u64, group: CaptureGroup },
    Batch { id: u64, interfaces: Vec<Interface>, metas: Vec<PacketMeta>, data: Vec<u8> },
    Tick { id: u64, now_ns: u64 },
    Close { id: u64, stats: CaptureStats },
}

impl Detached {
    /// Starts the sink's thread, named `name`; at most `max_bytes` of frames
    /// wait for it.
    pub fn spawn(name: &str, inner: Arc<dyn PacketSink>, max_bytes: u64) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE_MESSAGES);
        let queued = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(DetachedStats::default());
        let (q, s) = (Arc::clone(&queued), Arc::clone(&stats));
        std::thread::Builder::new().name(format!("pw-sink-{name}")).spawn(move || serve(&*inner, &rx, &q, &s))?;
        Ok(Self { tx, queued, max_bytes, stats, next: AtomicU64::new(0) })
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<DetachedStats> {
        Arc::clone(&self.stats)
    }
}

impl PacketSink for Detached {
    fn open(&self, group: &CaptureGroup) -> Box<dyn GroupSink> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        // Never waits, not even to open or close: a sink so far behind that
        // its queue is full misses this capture (counted) rather than stall
        // the capture thread.
        if self.tx.try_send(Message::Open { id, group: group.clone() }).is_err() {
            self.stats.missed_captures.fetch_add(1, Ordering::Relaxed);
        }
        Box::new(DetachedGroup {
            id,
            tx: self.tx.clone(),
            queued: Arc::clone(&self.queued),
            max_bytes: self.max_bytes,
            stats: Arc::clone(&self.stats),
            members: group.containers.clone(),
        })
    }
}

struct DetachedGroup {
    id: u64,
    tx: SyncSender<Message>,
    queued: Arc<AtomicU64>,
    max_bytes: u64,
    stats: Arc<DetachedStats>,
    /// The members last sent, to pass on changes only.
    members: Vec<portwarden_core::Container>,
}

impl DetachedGroup {
    fn drop_batch(&self, frames: usize) {
        if self.stats.dropped_batches.fetch_add(1, Ordering::Relaxed) == 0 {
            warn!(capture = self.id, "a detached capture sink is not keeping up; its frames are dropped and counted");
        }
        self.stats.dropped_frames.fetch_add(frames as u64, Ordering::Relaxed);
    }
}

impl GroupSink for DetachedGroup {
    fn batch(&mut self, group: &CaptureGroup, batch: &PacketBatch<'_>) {
        if group.containers != self.members {
            self.members = group.containers.clone();
            let _ = self.tx.try_send(Message::Group { id: self.id, group: group.clone() });
        }
        // Copy the frames out of the ring block, packed.
        let size: usize = batch.iter().map(|(_, bytes)| bytes.len()).sum();
        if self.queued.load(Ordering::Relaxed) + size as u64 > self.max_bytes {
            self.drop_batch(batch.packets.len());
            return;
        }
        let mut data = Vec::with_capacity(size);
        let mut metas = Vec::with_capacity(batch.packets.len());
        for (meta, bytes) in batch.iter() {
            metas.push(PacketMeta { offset: data.len() as u32, ..*meta });
            data.extend_from_slice(bytes);
        }
        let frames = metas.len();
        let message = Message::Batch { id: self.id, interfaces: batch.new_interfaces.to_vec(), metas, data };
        match self.tx.try_send(message) {
            Ok(()) => {
                self.queued.fetch_add(size as u64, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.drop_batch(frames),
        }
    }

    fn tick(&mut self, _group: &CaptureGroup, now_ns: u64) {
        let _ = self.tx.try_send(Message::Tick { id: self.id, now_ns });
    }

    fn close(&mut self, _group: &CaptureGroup, stats: CaptureStats) {
        if self.tx.try_send(Message::Close { id: self.id, stats }).is_err() {
            self.stats.missed_captures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The sink's thread: one inner state per capture, until every sender is gone.
fn serve(inner: &dyn PacketSink, rx: &Receiver<Message>, queued: &AtomicU64, stats: &DetachedStats) {
    let mut captures: HashMap<u64, (CaptureGroup, Box<dyn GroupSink>)> = HashMap::new();
    let guarded = |id: u64,
                   captures: &mut HashMap<u64, (CaptureGroup, Box<dyn GroupSink>)>,
                   f: &mut dyn FnMut(&CaptureGroup, &mut dyn GroupSink)| {
        let Some((group, sink)) = captures.get_mut(&id) else { return };
        if std::panic::catch_unwind(AssertUnwindSafe(|| f(group, sink.as_mut()))).is_err() {
            stats.panics.fetch_add(1, Ordering::Relaxed);
            error!(capture = group.key, "a detached capture sink panicked; it is dropped for this capture");
            captures.remove(&id);
        }
    };
    for message in rx {
        match message {
            Message::Open { id, group } => {
                let opened = std::panic::catch_unwind(AssertUnwindSafe(|| inner.open(&group)));
                match opened {
                    Ok(sink) => {
                        captures.insert(id, (group, sink));
                        guarded(id, &mut captures, &mut |g, s| s.started(g));
                    }
                    Err(_) => {
                        stats.panics.fetch_add(1, Ordering::Relaxed);
                        error!(capture = group.key, "a detached capture sink panicked opening; not fed this capture");
                    }
                }
            }
            Message::Group { id, group } => {
                if let Some(entry) = captures.get_mut(&id) {
                    entry.0 = group;
                }
            }
            Message::Batch { id, interfaces, metas, data } => {
                queued.fetch_sub(data.len() as u64, Ordering::Relaxed);
                let batch = PacketBatch { new_interfaces: &interfaces, packets: &metas, data: &data };
                guarded(id, &mut captures, &mut |g, s| s.batch(g, &batch));
            }
            Message::Tick { id, now_ns } => guarded(id, &mut captures, &mut |g, s| s.tick(g, now_ns)),
            Message::Close { id, stats: capture } => {
                guarded(id, &mut captures, &mut |g, s| s.close(g, capture));
                captures.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    use portwarden_core::Direction;

    use super::*;

    /// Blocks in its first batch until released; counts the frames it saw.
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        frames: Arc<AtomicU64>,
        panic_on: Option<u64>,
    }

    impl PacketSink for Gate {
        fn open(&self, _group: &CaptureGroup) -> Box<dyn GroupSink> {
            Box::new(GateGroup {
                open: Arc::clone(&self.open),
                frames: Arc::clone(&self.frames),
                panic_on: self.panic_on,
            })
        }
    }

    struct GateGroup {
        open: Arc<(Mutex<bool>, Condvar)>,
        frames: Arc<AtomicU64>,
        panic_on: Option<u64>,
    }

    impl GroupSink for GateGroup {
        fn batch(&mut self, _group: &CaptureGroup, batch: &PacketBatch<'_>) {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            let seen = self.frames.fetch_add(batch.packets.len() as u64, Ordering::Relaxed);
            assert!(self.panic_on != Some(seen), "a sink bug");
        }
    }

    fn batch_of(data: &[u8]) -> (Vec<PacketMeta>, usize) {
        let meta = PacketMeta {
            timestamp_ns: 1,
            ifindex: 1,
            original_len: data.len() as u32,
            direction: Direction::Incoming,
            offset: 0,
            len: data.len() as u32,
            vlan: None,
            checksum_pending: false,
        };
        (vec![meta], data.len())
    }

    #[test]
    fn a_blocked_sink_costs_its_own_frames_only_and_catches_up_when_released() {
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let frames = Arc::new(AtomicU64::new(0));
        let gate = Gate { open: Arc::clone(&open), frames: Arc::clone(&frames), panic_on: None };
        let detached = Detached::spawn("test", Arc::new(gate), 10_000).expect("thread");
        let group = CaptureGroup { key: 1, netns: None, containers: Vec::new() };
        let mut sink = detached.open(&group);
        let data = [7u8; 1000];
        let (metas, _) = batch_of(&data);
        let started = Instant::now();
        for _ in 0..100 {
            sink.batch(&group, &PacketBatch { new_interfaces: &[], packets: &metas, data: &data });
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the capture side never waits for the sink");
        let stats = detached.stats();
        let dropped = stats.dropped_frames.load(Ordering::Relaxed);
        assert!((85..=91).contains(&dropped), "about 10 KB queued, the rest dropped: {dropped}");
        // Released: it gets what was queued.
        *open.0.lock().unwrap() = true;
        open.1.notify_all();
        sink.close(&group, CaptureStats::default());
        let deadline = Instant::now() + Duration::from_secs(5);
        while frames.load(Ordering::Relaxed) + dropped < 100 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(frames.load(Ordering::Relaxed) + dropped, 100, "every frame delivered or counted");
    }

    #[test]
    fn a_panicking_sink_is_dropped_for_that_capture_and_counted() {
        let open = Arc::new((Mutex::new(true), Condvar::new()));
        let frames = Arc::new(AtomicU64::new(0));
        let gate = Gate { open, frames: Arc::clone(&frames), panic_on: Some(1) };
        let detached = Detached::spawn("test", Arc::new(gate), 1 << 20).expect("thread");
        let group = CaptureGroup { key: 1, netns: None, containers: Vec::new() };
        let mut sink = detached.open(&group);
        let data = [7u8; 100];
        let (metas, _) = batch_of(&data);
        for _ in 0..5 {
            sink.batch(&group, &PacketBatch { new_interfaces: &[], packets: &metas, data: &data });
        }
        sink.close(&group, CaptureStats::default());
        let stats = detached.stats();
        let deadline = Instant::now() + Duration::from_secs(5);
        while stats.panics.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(stats.panics.load(Ordering::Relaxed), 1);
        assert_eq!(frames.load(Ordering::Relaxed), 2, "fed until it panicked, not after");
    }
}
