//! The capture contract: a [`PacketSource`] captures one network
//! namespace's frames, and [`PacketSink`]s consume them, each with per-capture
//! state ([`GroupSink`]) for a [`CaptureGroup`].
//!
//! Capture is attached per network namespace, not per container: the
//! containers of a pod share one namespace and so one capture, attributed to
//! all of them.
//!
//! Sinks run on the capture's own thread and see each kernel ring block in
//! place, as a borrowed [`PacketBatch`]: no frame is copied or handed to
//! another thread on its way to pcapng or the flow table. A sink that blocks
//! (a slow output) makes the ring fill, and the kernel's drops are counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::model::{Container, Pod};
use crate::netns::NetnsId;

/// How an interface frames its packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// Ethernet (veth, bridges, `lo`).
    Ethernet,
    /// Bare IP packets (tun devices, some tunnels).
    RawIp,
    /// Another ARPHRD type; frames are passed on undecoded.
    Other(u16),
}

/// An interface inside a captured namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Interface {
    /// The ifindex inside that namespace.
    pub index: u32,
    /// Its name there (`eth0`, `lo`, ...).
    pub name: String,
    /// Its framing.
    pub link: LinkType,
}

/// Which way a frame went, from the captured namespace's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by this namespace.
    Incoming,
    /// Sent by this namespace.
    Outgoing,
}

/// An 802.1Q (or 802.1ad) tag the kernel took off a frame on receipt (VLAN
/// offload: every veth does it). It belongs back after the MAC addresses
/// wherever the frame is written out whole, as libpcap puts it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// The tag protocol id: 0x8100, or 0x88a8 for a service tag.
    pub tpid: u16,
    /// Priority, drop eligibility and VLAN id.
    pub tci: u16,
}

impl VlanTag {
    /// The four bytes that go after the MAC addresses.
    pub fn bytes(self) -> [u8; 4] {
        let [a, b] = self.tpid.to_be_bytes();
        let [c, d] = self.tci.to_be_bytes();
        [a, b, c, d]
    }
}

/// One frame's place in its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// When the kernel saw it, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The interface it was seen on.
    pub ifindex: u32,
    /// Its length on the wire; more than the captured length when cut.
    pub original_len: u32,
    /// Its direction.
    pub direction: Direction,
    /// Where its captured bytes start in [`PacketBatch::data`].
    pub offset: u32,
    /// How many bytes were captured.
    pub len: u32,
    /// A tag the kernel took off the frame (its bytes do not hold it).
    pub vlan: Option<VlanTag>,
    /// The sender offloaded its TCP/UDP checksum and it was not filled in
    /// yet (`TP_STATUS_CSUMNOTREADY`): the checksum field is not meaningful.
    /// Usual for traffic a container sends over its veth.
    pub checksum_pending: bool,
}

impl PacketMeta {
    /// The timestamp as `SystemTime`.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.timestamp_ns)
    }
}

/// Frames captured together (one kernel ring block), with any interfaces
/// first seen among them. Borrowed: valid during the sink call only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketBatch<'a> {
    /// Interfaces that appear in this batch for the first time.
    pub new_interfaces: &'a [Interface],
    /// One entry per frame, in capture order; offsets index `data`.
    pub packets: &'a [PacketMeta],
    /// The memory the frames live in.
    pub data: &'a [u8],
}

impl<'a> PacketBatch<'a> {
    /// Each frame with its bytes. Entries pointing outside `data` are skipped.
    pub fn iter(&self) -> impl Iterator<Item = (&'a PacketMeta, &'a [u8])> + 'a {
        let data = self.data;
        self.packets.iter().filter_map(move |m| {
            let start = m.offset as usize;
            data.get(start..start.checked_add(m.len as usize)?).map(|bytes| (m, bytes))
        })
    }

    /// True when the batch holds no frames.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
}

/// A network namespace to capture. Who lives in it travels separately, in
/// the [`CaptureFeed`]'s group, because it changes while the capture runs.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureTarget {
    /// The namespace to enter (`<proc root>/<pid>/ns/net`), or `None` for the
    /// agent's own namespace (host-only and sidecar modes).
    pub netns: Option<PathBuf>,
    /// A short label for the capture thread and logs.
    pub label: String,
}

/// How to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureOptions {
    /// Bytes kept per frame. Default: 130816, the most that fits a 128 KiB
    /// ring block: GRO/TSO frames on veths reach 64 KiB plus headers, and a
    /// 256 KiB snaplen (tcpdump's) would double every block.
    pub snaplen: u32,
    /// A tcpdump-syntax filter, compiled and enforced in the kernel.
    pub filter: Option<String>,
    /// Memory for the kernel ring at first, in bytes. Default: 256 KiB (two
    /// blocks). The ring is mapped into the agent, so it counts in its RSS
    /// once per captured namespace: 4 MiB rings made 100 idle containers
    /// cost 418 MiB, 256 KiB ones 43 MiB.
    pub ring_bytes: usize,
    /// What the ring grows to, once: when a block shows a rate that would
    /// fill the ring within 250 ms (a burst), or when the kernel drops
    /// frames; equal to `ring_bytes` keeps it fixed. Default: 4 MiB.
    /// A fixed 4 MiB ring dropped fewer frames under a flood than a grown
    /// one: set both to 4 MiB where that matters more than memory.
    pub ring_max_bytes: usize,
    /// How long the kernel may hold a partly filled block before handing it
    /// over: the capture's latency at low rates. Default: 20 ms.
    pub block_timeout: Duration,
    /// How long ready blocks may wait so that one wake-up reads several,
    /// which costs less CPU per frame; never longer than a quarter of the
    /// ring takes to fill at the rate just seen. Adds up to this much
    /// latency. Default: zero, each block is read as soon as it is ready
    /// (detection wants frames at once).
    pub read_delay: Duration,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            snaplen: 130_816,
            filter: None,
            ring_bytes: 256 << 10,
            ring_max_bytes: 4 << 20,
            block_timeout: Duration::from_millis(20),
            read_delay: Duration::ZERO,
        }
    }
}

/// Live counters of one capture, updated by the capture thread.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    /// Frames delivered.
    pub packets: AtomicU64,
    /// Bytes delivered (captured length).
    pub bytes: AtomicU64,
    /// Frames the kernel dropped because the ring was full (PACKET_STATISTICS).
    pub kernel_drops: AtomicU64,
    /// Outgoing copies on `lo` skipped, so each loopback frame counts once.
    pub loopback_duplicates: AtomicU64,
    /// The kernel ring's current size in bytes (it grows after drops).
    pub ring_bytes: AtomicU64,
    /// Wake-ups that read ring blocks: fewer per frame when reads are paced
    /// (`CaptureOptions::read_delay`).
    pub ring_reads: AtomicU64,
    /// Sinks that panicked, each dropped from this capture alone.
    pub sink_panics: AtomicU64,
}

impl CaptureCounters {
    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> CaptureStats {
        CaptureStats {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            kernel_drops: self.kernel_drops.load(Ordering::Relaxed),
        }
    }
}

/// A copy of [`CaptureCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CaptureStats {
    /// Frames delivered.
    pub packets: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Frames the kernel dropped.
    pub kernel_drops: u64,
}

/// A running capture.
pub struct Capture {
    /// Counters, shared with the capture thread.
    pub counters: Arc<CaptureCounters>,
    /// Resolves when the capture has stopped and its sinks are closed.
    pub done: tokio::sync::oneshot::Receiver<()>,
}

/// What a capture feeds: the sinks, and the group they describe (updated as
/// containers join and leave the namespace).
pub struct CaptureFeed {
    /// The group; the capture thread picks up changes between batches.
    pub group: tokio::sync::watch::Receiver<CaptureGroup>,
    /// The sinks' per-capture state, driven on the capture thread.
    pub sinks: Vec<Box<dyn GroupSink>>,
}

/// A way to capture packets in a network namespace.
#[async_trait]
pub trait PacketSource: Send + Sync {
    /// A short name for logs (`af_packet`, ...).
    fn name(&self) -> &'static str;

    /// Starts capturing `target` into `feed`. When `cancel` fires the
    /// capture drains what the kernel still holds, closes the sinks, and
    /// resolves [`Capture::done`].
    async fn open(
        &self,
        target: &CaptureTarget,
        options: &CaptureOptions,
        feed: CaptureFeed,
        cancel: CancellationToken,
    ) -> Result<Capture>;
}

/// What a sink knows about the namespace a capture covers.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureGroup {
    /// Unique per capture within this process (pcapng and flow ids use it).
    pub key: u64,
    /// The namespace, or `None` for the agent's own.
    pub netns: Option<NetnsId>,
    /// The running containers in it, sorted by name; empty for the host or
    /// the agent itself.
    pub containers: Vec<Container>,
}

impl CaptureGroup {
    /// The container traffic is attributed to: the only member, or the
    /// first by name when a pod's containers share the namespace.
    pub fn container(&self) -> Option<&Container> {
        self.containers.first()
    }

    /// The pod every member belongs to, when they agree on one.
    pub fn pod(&self) -> Option<&Pod> {
        let first = self.containers.first()?.pod.as_ref()?;
        self.containers.iter().all(|c| c.pod.as_ref() == Some(first)).then_some(first)
    }

    /// A short human label: the attributed container's name, or `host`.
    pub fn label(&self) -> String {
        self.container().map_or_else(|| "host".to_owned(), |c| c.display_name().to_owned())
    }
}

/// Per-capture state of a sink, driven on that capture's thread.
pub trait GroupSink: Send {
    /// The capture is set up and frames will follow.
    fn started(&mut self, _group: &CaptureGroup) {}
    /// A batch arrived; it is borrowed from the kernel ring for this call.
    fn batch(&mut self, group: &CaptureGroup, batch: &PacketBatch<'_>);
    /// The members changed: one came or went, or a later report gave one
    /// a name or a pod. Later calls see the new group too; this is for a
    /// sink that publishes who is captured between batches.
    fn members_changed(&mut self, _group: &CaptureGroup) {}
    /// Called about once a second, with the wall clock in ns (flow timeouts).
    fn tick(&mut self, _group: &CaptureGroup, _now_ns: u64) {}
    /// The capture ended; flush what is held.
    fn close(&mut self, _group: &CaptureGroup, _stats: CaptureStats) {}
}

/// Something that consumes captured packets: flows, pcapng, a mirror.
pub trait PacketSink: Send + Sync {
    /// State for one new capture.
    fn open(&self, group: &CaptureGroup) -> Box<dyn GroupSink>;
}
