//! [`AfPacketSource`]: [`PacketSource`] over a TPACKET_V3 ring, one thread
//! per captured namespace.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use portwarden_core::{
    Capture, CaptureCounters, CaptureFeed, CaptureGroup, CaptureOptions, CaptureTarget, Direction, Error, GroupSink,
    Interface, PacketBatch, PacketMeta, PacketSource, Result,
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::bpf::Program;
use crate::bridge::Bridge;
use crate::netns;
use crate::pacing::Pacer;
use crate::ring::{Frame, Geometry, Ring};

/// `sll_pkttype` of a frame this namespace sent.
const PACKET_OUTGOING: u8 = 4;
/// How often kernel drop counters are read and sinks ticked (flow timeouts).
const STATS_EVERY: Duration = Duration::from_secs(1);
/// The ring grows before it drops anything when a block shows a rate that
/// would fill the whole ring within this long: a scheduling delay of the
/// capture thread (a busy host, Suricata and the agent's own output at
/// work) must not cost frames. An idle container keeps the small ring.
const RING_HEADROOM: Duration = Duration::from_millis(250);

/// How a block filled: how long its frames took, and their bytes.
#[derive(Clone, Copy, Debug)]
struct Fill {
    span: Duration,
    bytes: usize,
    /// The block's last frame's timestamp.
    last_ns: u64,
}

impl Fill {
    /// Whether frames come fast enough to fill `ring_bytes` within
    /// [`RING_HEADROOM`]. Only a block at least half full says so: a few
    /// frames close together are not a rate.
    fn presses(self, block_bytes: usize, ring_bytes: usize) -> bool {
        if self.bytes * 2 < block_bytes {
            return false;
        }
        // bytes / span > ring_bytes / headroom, without dividing by a zero span.
        (self.bytes as u128) * RING_HEADROOM.as_nanos() > (ring_bytes as u128) * self.span.as_nanos()
    }
}

/// AF_PACKET capture.
#[derive(Clone, Copy, Debug, Default)]
pub struct AfPacketSource;

#[async_trait]
impl PacketSource for AfPacketSource {
    fn name(&self) -> &'static str {
        "af_packet"
    }

    async fn open(
        &self,
        target: &CaptureTarget,
        options: &CaptureOptions,
        feed: CaptureFeed,
        cancel: CancellationToken,
    ) -> Result<Capture> {
        crate::bridge::keep_timestamps();
        let program = Program::for_filter(options.filter.as_deref(), options.snaplen)
            .map_err(|e| Error::Invalid { what: "capture filter".into(), detail: e.to_string() })?;
        let geometry = Geometry::for_snaplen(options.snaplen, options.ring_bytes, options.block_timeout);
        // SAFETY: eventfd(2); the fd is owned below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(Error::unavailable("eventfd", io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let counters = Arc::new(CaptureCounters::default());
        let (ready_tx, ready_rx) = oneshot::channel::<io::Result<()>>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let done = CancellationToken::new();

        let queue_bytes = options.ring_max_bytes.max(options.ring_bytes);
        let worker = Worker {
            counters: Arc::clone(&counters),
            wake: Arc::clone(&wake),
            geometry,
            program: program.clone(),
            snaplen: options.snaplen,
            read_delay: options.read_delay,
            ring_max: options.ring_max_bytes.max(options.ring_bytes),
            netns: target.netns.clone(),
            feed,
        };
        let netns = target.netns.clone();
        let thread_done = done.clone();
        std::thread::Builder::new()
            .name(format!("pw-cap-{}", short(&target.label)))
            .spawn(move || {
                let _done = thread_done.drop_guard();
                // Receiving first (a bridge socket), the ring after: the
                // caller hears "ready" in microseconds, not after the ring's
                // grace period.
                let setup = (|| {
                    if let Some(path) = &netns {
                        netns::enter(path)?;
                    }
                    Bridge::open(&program, queue_bytes)
                })();
                let bridge = match setup {
                    Ok(bridge) => bridge,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Nobody waits for this capture any more: do not run it.
                if ready_tx.send(Ok(())).is_err() {
                    return;
                }
                let built = Ring::new(geometry, &program).and_then(|ring| ring.start().map(|()| ring));
                match built {
                    Ok(ring) => {
                        let split = portwarden_core::time::unix_nanos(std::time::SystemTime::now());
                        worker.run(ring, Handover { bridge, split });
                    }
                    Err(e) => error!(error = %e, "capture ring could not be built; this capture ends"),
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| Error::unavailable("capture thread", e))?;

        // Cancellation reaches the blocking thread through the eventfd.
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => wake_up(&wake),
                () = done.cancelled() => {}
            }
        });

        let what = target.netns.as_ref().map_or_else(|| "own namespace".to_owned(), |p| p.display().to_string());
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(setup_error(&what, &e)),
            Err(_) => return Err(Error::unavailable(what, "capture thread ended during setup")),
        }
        Ok(Capture { counters, done: done_rx })
    }
}

fn short(label: &str) -> &str {
    let end = label.char_indices().nth(8).map_or(label.len(), |(i, _)| i);
    &label[..end]
}

fn wake_up(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from `one` to an eventfd.
    unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
}

/// Maps a setup failure to the kind callers act on, naming the capability.
fn setup_error(what: &str, e: &io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => Error::PermissionDenied {
            what: format!("capture in {what} ({e}; needs CAP_SYS_ADMIN to enter it and CAP_NET_RAW to capture)"),
        },
        Some(libc::ENOENT | libc::ESRCH) => Error::NotFound { what: format!("network namespace {what}") },
        _ => Error::unavailable(what.to_owned(), io::Error::new(e.kind(), e.to_string())),
    }
}

/// The interfaces seen so far: ifindex -> is loopback, with the last one
/// cached, since frames come in runs from one interface.
#[derive(Default)]
struct Interfaces {
    known: HashMap<u32, bool>,
    last: Option<(u32, bool)>,
}

impl Interfaces {
    /// Whether `index` is a loopback interface; a new one is described
    /// (named, typed) into `new`.
    #[inline]
    fn is_loopback(&mut self, index: u32, probe_fd: i32, new: &mut Vec<Interface>) -> bool {
        match self.last {
            Some((i, lo)) if i == index => lo,
            _ => self.look_up(index, probe_fd, new),
        }
    }

    /// Another interface than the last frame's: rare, kept out of line.
    #[cold]
    #[inline(never)]
    fn look_up(&mut self, index: u32, probe_fd: i32, new: &mut Vec<Interface>) -> bool {
        let lo = *self.known.entry(index).or_insert_with(|| {
            let (iface, is_loopback) = netns::describe(index, probe_fd);
            new.push(iface);
            is_loopback
        });
        self.last = Some((index, lo));
        lo
    }
}

/// The capture thread's state.
struct Worker {
    feed: CaptureFeed,
    counters: Arc<CaptureCounters>,
    wake: Arc<OwnedFd>,
    geometry: Geometry,
    /// To build a bigger ring after drops.
    program: Program,
    snaplen: u32,
    /// How long ready blocks may wait to be read together.
    read_delay: Duration,
    ring_max: usize,
    /// The namespace, for building a bigger ring on a helper thread.
    netns: Option<std::path::PathBuf>,
}

/// The sinks with the group they describe, and reusable per-block buffers.
struct Delivery {
    sinks: Vec<Box<dyn GroupSink>>,
    group: CaptureGroup,
    metas: Vec<PacketMeta>,
    new_interfaces: Vec<Interface>,
}

impl Delivery {
    /// Hands the next ready block of `ring` to the sinks and returns how
    /// it filled; `None` when no block is ready.
    fn next(&mut self, ring: &mut Ring, frames: &mut Frames<'_>) -> Option<Fill> {
        self.metas.clear();
        self.new_interfaces.clear();
        let (metas, new_interfaces) = (&mut self.metas, &mut self.new_interfaces);
        let block = ring.next_block(|frame, offset| frames.take(frame, offset, metas, new_interfaces))?;
        let fill = Fill { span: block.span(), bytes: block.filled(), last_ns: block.last_ns() };
        if self.metas.is_empty() && self.new_interfaces.is_empty() {
            return Some(fill);
        }
        let bytes: u64 = self.metas.iter().map(|p| u64::from(p.len)).sum();
        frames.counters.packets.fetch_add(self.metas.len() as u64, Ordering::Relaxed);
        frames.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        let batch = PacketBatch { new_interfaces: &self.new_interfaces, packets: &self.metas, data: block.data() };
        each_sink(&mut self.sinks, &self.group, frames.counters, |sink, group| sink.batch(group, &batch));
        Some(fill) // dropping `block` hands it back to the kernel
    }
}

impl Worker {
    fn run(self, mut ring: Ring, handover: Handover) {
        let Worker { feed, counters, wake, mut geometry, program, snaplen, read_delay, mut ring_max, netns } = self;
        let mut pacer = Pacer::new(read_delay);
        let CaptureFeed { group: mut group_rx, sinks } = feed;
        let group: CaptureGroup = group_rx.borrow_and_update().clone();
        let mut out = Delivery { sinks, group, metas: Vec::new(), new_interfaces: Vec::new() };
        // For the interface ioctls, in this thread's namespace. Without it
        // (no fds left) interfaces are still named, their type assumed Ethernet.
        // SAFETY: socket(2); the fd is owned only when valid.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: `raw` is a fresh fd nothing else owns.
        let probe = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
        let probe_fd = probe.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let mut frames = Frames {
            counters: &counters,
            interfaces: Interfaces::default(),
            probe_fd,
            keep_from: 0,
            keep_before: u64::MAX,
        };
        counters.ring_bytes.store(geometry.bytes(), Ordering::Relaxed);
        each_sink(&mut out.sinks, &out.group, &counters, |sink, group| sink.started(group));
        handover.deliver(&mut out, &mut frames, snaplen);
        let drain_time = |g: Geometry| g.timeout * 2 + Duration::from_millis(10);
        let mut stopping: Option<Instant> = None;
        let mut stats_at = Instant::now();
        let mut pending: Option<Growth> = None;
        let mut dropped_before_growth = 0;
        loop {
            // Members come and go, and later reports carry names and pods:
            // every sink call, ticks and close included, sees the latest.
            if group_rx.borrow().has_changed() {
                out.group = group_rx.borrow_and_update().clone();
                each_sink(&mut out.sinks, &out.group, &counters, |sink, group| sink.members_changed(group));
            }
            // A busy ring never reaches `wait`, so look for the stop request
            // on every round.
            if stopping.is_none() && take_wake(&wake) {
                stopping = Some(Instant::now() + drain_time(geometry));
            }
            if stopping.is_some_and(|deadline| Instant::now() >= deadline) {
                break;
            }
            if stats_at.elapsed() >= STATS_EVERY {
                let drops = read_stats(&ring, &counters);
                if drops > 0 {
                    pacer.dropped(Instant::now());
                }
                let now = portwarden_core::time::unix_nanos(std::time::SystemTime::now());
                each_sink(&mut out.sinks, &out.group, &counters, |sink, group| sink.tick(group, now));
                stats_at = Instant::now();
                if drops > 0 && can_grow(geometry, ring_max, stopping, &pending) {
                    pending = Some(grow(snaplen, ring_max, geometry, &netns, &program));
                    dropped_before_growth = drops;
                }
            }
            if let Some((bigger, built)) = &pending {
                match built.try_recv() {
                    Err(std::sync::mpsc::TryRecvError::Empty) => {}
                    Ok(Ok(fresh)) => {
                        let bigger = *bigger;
                        pending = None;
                        match switch(&mut ring, fresh, &mut out, &mut frames, &wake) {
                            Ok(woken) => {
                                let (key, from_bytes, to_bytes) = (out.group.key, geometry.bytes(), bigger.bytes());
                                if dropped_before_growth > 0 {
                                    warn!(
                                        capture = key,
                                        drops = dropped_before_growth,
                                        from_bytes,
                                        to_bytes,
                                        "the kernel dropped frames; capture ring grown"
                                    );
                                } else {
                                    info!(
                                        capture = key,
                                        from_bytes, to_bytes, "frames come fast; capture ring grown before any drop"
                                    );
                                }
                                geometry = bigger;
                                counters.ring_bytes.store(geometry.bytes(), Ordering::Relaxed);
                                if woken {
                                    stopping = Some(Instant::now() + drain_time(geometry));
                                }
                            }
                            Err(e) => {
                                warn!(capture = out.group.key, error = %e, "could not grow the capture ring; keeping it");
                                ring_max = geometry.bytes() as usize;
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        warn!(capture = out.group.key, error = %e, "could not grow the capture ring; keeping it");
                        ring_max = geometry.bytes() as usize;
                        pending = None;
                    }
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => pending = None,
                }
            }
            if let Some(fill) = out.next(&mut ring, &mut frames) {
                if pacer.block(fill.span) {
                    counters.ring_reads.fetch_add(1, Ordering::Relaxed);
                }
                if can_grow(geometry, ring_max, stopping, &pending)
                    && fill.presses(geometry.block_size as usize, geometry.bytes() as usize)
                {
                    pending = Some(grow(snaplen, ring_max, geometry, &netns, &program));
                    dropped_before_growth = 0;
                }
                continue;
            }
            // Nothing ready. Unless stopping, let blocks pile up a while
            // when pacing is on, then read them in one round.
            let pause = pacer.pause(ring.blocks(), geometry.block_size, Instant::now());
            if !pause.is_zero() && stopping.is_none() {
                if sleep_unless_woken(&wake, pause) {
                    stopping = Some(Instant::now() + drain_time(geometry));
                }
                continue;
            }
            // When stopping, wait for the kernel to retire the open block
            // (its timeout), so its last frames are not lost.
            let timeout = match stopping {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) => left,
                    None => break,
                },
                None => STATS_EVERY,
            };
            if wait(ring.fd(), &wake, timeout) && stopping.is_none() {
                stopping = Some(Instant::now() + drain_time(geometry));
            }
        }
        read_stats(&ring, &counters);
        let stats = counters.snapshot();
        each_sink(&mut out.sinks, &out.group, &counters, |sink, group| sink.close(group, stats));
        debug!(
            packets = stats.packets,
            ring_reads = counters.ring_reads.load(Ordering::Relaxed),
            "capture thread done"
        );
    }
}

/// The bridge socket that received while the first ring was built, and
/// when the ring took over: frames stamped before `split` come from the
/// bridge, the rest from the ring (as when a ring grows).
struct Handover {
    bridge: Bridge,
    split: u64,
}

impl Handover {
    /// Delivers the bridge's frames, then lets the ring take over.
    fn deliver(self, out: &mut Delivery, frames: &mut Frames<'_>, snaplen: u32) {
        let Handover { bridge, split } = self;
        out.metas.clear();
        out.new_interfaces.clear();
        let mut data = Vec::new();
        let (metas, new_interfaces) = (&mut out.metas, &mut out.new_interfaces);
        let drops = bridge.drain(snaplen, split, |frame| {
            let offset = data.len();
            data.extend_from_slice(frame.data);
            frames.take(frame, offset, metas, new_interfaces);
        });
        close_elsewhere(bridge);
        frames.counters.kernel_drops.fetch_add(drops, Ordering::Relaxed);
        frames.keep_from = split;
        if out.metas.is_empty() && out.new_interfaces.is_empty() {
            return;
        }
        let bytes: u64 = out.metas.iter().map(|p| u64::from(p.len)).sum();
        frames.counters.packets.fetch_add(out.metas.len() as u64, Ordering::Relaxed);
        frames.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        let batch = PacketBatch { new_interfaces: &out.new_interfaces, packets: &out.metas, data: &data };
        each_sink(&mut out.sinks, &out.group, frames.counters, |sink, group| sink.batch(group, &batch));
    }
}

/// How far out of order the kernel may stamp frames it writes into one
/// ring (cores racing between stamping a frame and taking the ring's
/// lock): a ring is past a time once it holds a frame stamped this much
/// later (1 ms).
const REORDERING_NS: u64 = 1_000_000;

/// Closes a packet socket (a bridge, a ring replaced by a bigger one) on a
/// short-lived thread of its own: closing waits for an RCU grace period
/// (10-30 ms), and a capture thread blocked that long let a freshly grown
/// 4 MiB ring overflow under 400 k frames/s.
fn close_elsewhere<T: Send + 'static>(socket: T) {
    // Should the thread not start, the socket is closed here, as it drops.
    let _ = std::thread::Builder::new().name("pw-cap-close".into()).spawn(move || drop(socket));
}

/// A ring being built to replace a smaller one, and its geometry.
type Growth = (Geometry, std::sync::mpsc::Receiver<io::Result<Ring>>);

/// Whether the ring may grow now: below its maximum, not stopping, and no
/// bigger ring already on the way.
fn can_grow(geometry: Geometry, ring_max: usize, stopping: Option<Instant>, pending: &Option<Growth>) -> bool {
    (geometry.bytes() as usize) < ring_max && stopping.is_none() && pending.is_none()
}

/// Starts building the biggest ring allowed, on a helper thread, so the
/// kernel's allocation does not stall the capture while frames arrive.
fn grow(
    snaplen: u32,
    ring_max: usize,
    geometry: Geometry,
    netns: &Option<std::path::PathBuf>,
    program: &Program,
) -> Growth {
    let bigger = Geometry::for_snaplen(snaplen, ring_max, geometry.timeout);
    (bigger, build_ring(netns.clone(), bigger, program.clone()))
}

/// Builds a ring (unbound, receiving nothing) in `netns` on a short-lived
/// thread of its own.
fn build_ring(
    netns: Option<std::path::PathBuf>,
    geometry: Geometry,
    program: Program,
) -> std::sync::mpsc::Receiver<io::Result<Ring>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("pw-cap-grow".into()).spawn(move || {
        let built = (|| {
            if let Some(path) = &netns {
                netns::enter(path)?;
            }
            Ring::new(geometry, &program)
        })();
        let _ = tx.send(built);
    });
    if let Err(e) = spawned {
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = tx.send(Err(e));
        return rx;
    }
    rx
}

/// Replaces `ring` with `fresh` (built, not yet bound) without losing or
/// doubling frames.
///
/// The new socket is bound first; `split` is read after that, so every
/// frame stamped at or after it reaches the new ring. The old ring is then
/// drained of frames stamped before `split`, and the new ring skips frames
/// stamped before it: each frame is delivered exactly once, and in order:
/// the new ring, which fills meanwhile, is read only once the old one is
/// done (interleaving them put later frames before earlier ones, and
/// Suricata's stream reassembly then missed data). The old ring is done
/// once one of its blocks ends past `split` (busy traffic: at once), or
/// once its last block has retired (the block timeout). Waiting for the
/// timeout under busy traffic let the unread new ring overflow: growing a
/// ring from 2 to 4 MiB under 400 k frames/s of 512 bytes dropped a fifth
/// of them. A frame the new ring drops in that window may also have
/// reached the old one: the drop counter can overstate by that much, never
/// understate. Returns whether a stop request arrived meanwhile.
fn switch(
    ring: &mut Ring,
    fresh: Ring,
    out: &mut Delivery,
    frames: &mut Frames<'_>,
    wake: &OwnedFd,
) -> io::Result<bool> {
    fresh.start()?;
    let split = portwarden_core::time::unix_nanos(std::time::SystemTime::now());
    // Drops until now are real; the old socket's drops after `split` are of
    // frames the new ring also receives, so they are read and discarded below.
    read_stats(ring, frames.counters);
    let deadline = Instant::now() + fresh.timeout() * 2 + Duration::from_millis(10);
    let mut woken = false;
    // The old ring's frames before `split`, until it is past `split` or its
    // last block has retired.
    (frames.keep_from, frames.keep_before) = (0, split);
    loop {
        if let Some(fill) = out.next(ring, frames) {
            if fill.last_ns >= split.saturating_add(REORDERING_NS) {
                break;
            }
            continue;
        }
        match deadline.checked_duration_since(Instant::now()) {
            Some(left) => woken |= wait(ring.fd(), wake, left.min(Duration::from_millis(2))),
            None => break,
        }
    }
    // From now on the new ring, from `split` on.
    (frames.keep_from, frames.keep_before) = (split, u64::MAX);
    let _ = ring.take_stats();
    close_elsewhere(std::mem::replace(ring, fresh));
    Ok(woken)
}

/// Per-frame state of the capture thread.
struct Frames<'a> {
    counters: &'a CaptureCounters,
    interfaces: Interfaces,
    probe_fd: i32,
    /// Frames stamped before this were delivered from a previous ring.
    keep_from: u64,
    /// Frames stamped from this on will be delivered from the next ring.
    keep_before: u64,
}

impl Frames<'_> {
    /// Records one frame, skipping `lo`'s outgoing duplicates.
    #[inline]
    fn take(&mut self, frame: Frame<'_>, offset: usize, metas: &mut Vec<PacketMeta>, new: &mut Vec<Interface>) {
        if frame.timestamp_ns < self.keep_from || frame.timestamp_ns >= self.keep_before {
            return;
        }
        let is_loopback = self.interfaces.is_loopback(frame.ifindex, self.probe_fd, new);
        let outgoing = frame.pkttype == PACKET_OUTGOING;
        // On loopback every frame is seen leaving and arriving; keep one, as libpcap does.
        if outgoing && is_loopback {
            self.counters.loopback_duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        metas.push(PacketMeta {
            timestamp_ns: frame.timestamp_ns,
            ifindex: frame.ifindex,
            original_len: frame.original_len,
            direction: if outgoing { Direction::Outgoing } else { Direction::Incoming },
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
            len: u32::try_from(frame.data.len()).unwrap_or(0),
            vlan: frame.vlan,
            checksum_pending: frame.checksum_pending,
        });
    }
}
/// Calls `f` on every sink. A sink that panics is logged, counted and
/// dropped, so one bug costs that sink, not the capture and the other sinks.
fn each_sink(
    sinks: &mut Vec<Box<dyn GroupSink>>,
    group: &CaptureGroup,
    counters: &CaptureCounters,
    mut f: impl FnMut(&mut dyn GroupSink, &CaptureGroup),
) {
    sinks.retain_mut(|sink| {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(sink.as_mut(), group))).is_ok();
        if !ok {
            counters.sink_panics.fetch_add(1, Ordering::Relaxed);
            error!(capture = group.key, "a capture sink panicked; it is dropped, the capture goes on");
        }
        ok
    });
}

/// Waits for the ring or the wake-up fd; true when woken to stop.
fn wait(ring_fd: i32, wake: &OwnedFd, timeout: Duration) -> bool {
    let mut fds = [
        libc::pollfd { fd: ring_fd, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX).max(1);
    // SAFETY: `fds` is a valid array of two pollfds.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            warn!(error = %e, "poll on capture socket failed");
            return true;
        }
    }
    fds[1].revents & libc::POLLIN != 0 && take_wake(wake)
}

/// Sleeps for `pause` unless a stop request comes first; true when it did.
fn sleep_unless_woken(wake: &OwnedFd, pause: Duration) -> bool {
    let mut fds = [libc::pollfd { fd: wake.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    let ms = libc::c_int::try_from(pause.as_millis()).unwrap_or(libc::c_int::MAX).max(1);
    // SAFETY: `fds` is a valid array of one pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
    n > 0 && take_wake(wake)
}

/// True once a stop was requested; reading resets the eventfd so it stops
/// being readable. Never blocks (the fd is non-blocking).
fn take_wake(wake: &OwnedFd) -> bool {
    let mut value = 0u64;
    // SAFETY: reads at most the 8-byte counter into `value`.
    let n = unsafe { libc::read(wake.as_raw_fd(), (&raw mut value).cast(), 8) };
    n == 8 && value > 0
}

/// Adds the kernel's drops since the last read to the counters; returns them.
fn read_stats(ring: &Ring, counters: &CaptureCounters) -> u64 {
    match ring.take_stats() {
        Ok((_, drops)) => {
            counters.kernel_drops.fetch_add(drops, Ordering::Relaxed);
            drops
        }
        Err(e) => {
            debug!(error = %e, "PACKET_STATISTICS failed");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: usize = 128 << 10;
    const RING: usize = 2 * BLOCK;

    #[test]
    fn a_fast_full_block_grows_the_ring_before_it_drops() {
        // 9 MB/s (a replay at 20 000 pps): the ring is full in 28 ms.
        assert!(Fill { span: Duration::from_millis(14), bytes: BLOCK, last_ns: 0 }.presses(BLOCK, RING));
        // All of a block in one instant.
        assert!(Fill { span: Duration::ZERO, bytes: BLOCK, last_ns: 0 }.presses(BLOCK, RING));
    }

    #[test]
    fn slow_or_sparse_blocks_keep_the_small_ring() {
        // 128 KiB a second: a second of headroom.
        assert!(!Fill { span: Duration::from_secs(1), bytes: BLOCK, last_ns: 0 }.presses(BLOCK, RING));
        // A few frames close together, retired by the block timeout.
        assert!(!Fill { span: Duration::ZERO, bytes: 3 * 1500, last_ns: 0 }.presses(BLOCK, RING));
    }
}
