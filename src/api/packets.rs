//! `StreamPackets`: live capture for one caller, and its replay on the
//! caller's side.
//!
//! Each call gets captures of its own (its own filter and snaplen, enforced
//! in the kernel), driven by the daemon's inventory like the daemon's
//! captures. Frames leave the capture thread through a bounded queue that
//! never blocks it: when the caller reads too slowly, frames are skipped
//! and the next batch says how many. When the caller goes away, the
//! stream's token stops the engine, which closes every capture it opened.
//!
//! [`replay`] is the other end: it rebuilds each capture's group and
//! batches and feeds them to the same sinks the CLI uses standalone, so
//! `portwarden capture` writes the same pcapng either way.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use portwarden_core::{
    CaptureEngine, CaptureGroup, CaptureOptions, CaptureStats, ContainerId, Direction, GroupSink, Interface, Inventory,
    LinkType, PacketBatch, PacketMeta, PacketSink, PacketSource,
};
use portwarden_proto::v1;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::streams::{self, Served};
use crate::metrics::Telemetry;
use crate::mode::CapturePlan;

/// Packet streams served at once; each opens a socket per namespace.
const MAX_PACKET_STREAMS: usize = 8;
/// Frame bytes per message, well under the message size limit.
const MESSAGE_DATA_BYTES: usize = 256 << 10;
/// Messages queued per packet stream before frames are skipped: with
/// [`MESSAGE_DATA_BYTES`], at most 8 MiB held for a slow caller.
const PACKET_QUEUE: usize = 32;
/// The largest snaplen a caller may ask for (as in the config).
const MAX_SNAPLEN: u32 = 1 << 20;

/// Starts packet streams for callers.
#[derive(Clone)]
pub(crate) struct PacketStreams {
    source: Arc<dyn PacketSource>,
    options: CaptureOptions,
    inventory: Inventory,
    slots: Arc<Semaphore>,
}

impl PacketStreams {
    pub(crate) fn new(source: Arc<dyn PacketSource>, options: CaptureOptions, inventory: Inventory) -> Self {
        Self { source, options, inventory, slots: Arc::new(Semaphore::new(MAX_PACKET_STREAMS)) }
    }

    /// Checks the request and starts its captures.
    pub(crate) fn start(
        &self,
        request: v1::StreamPacketsRequest,
        plan: CapturePlan,
        telemetry: &Arc<Telemetry>,
        agent: &CancellationToken,
    ) -> Result<Served<v1::PacketEvent>, Status> {
        let selector = request.selector.unwrap_or_default();
        let matcher = selector.matcher().map_err(|e| Status::invalid_argument(format!("selector: {e}")))?;
        let mut options = self.options.clone();
        if request.snaplen > MAX_SNAPLEN {
            return Err(Status::invalid_argument(format!(
                "snaplen must be at most {MAX_SNAPLEN}, got {}",
                request.snaplen
            )));
        }
        if request.snaplen > 0 {
            options.snaplen = request.snaplen;
        }
        let bpf = request.bpf.trim();
        if !bpf.is_empty() {
            options.filter = Some(bpf.to_owned());
        }
        portwarden_capture::Program::for_filter(options.filter.as_deref(), options.snaplen)
            .map_err(|e| Status::invalid_argument(format!("bpf: {e}")))?;
        let own_namespace = match plan {
            CapturePlan::Off => {
                return Err(Status::failed_precondition("capture is off on this agent (`portwarden status` says why)"));
            }
            CapturePlan::OwnNamespace if !selector.is_everything() => {
                return Err(Status::failed_precondition(
                    "this agent cannot enter containers' namespaces (`portwarden status` says why); ask for host: true",
                ));
            }
            CapturePlan::OwnNamespace => true,
            CapturePlan::PerContainer => request.host,
        };
        let permit: OwnedSemaphorePermit = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted(format!("{MAX_PACKET_STREAMS} packet streams are open already")))?;
        let (tx, stop, served) = streams::open(telemetry, agent, PACKET_QUEUE);
        let sink: Arc<dyn PacketSink> = Arc::new(ApiSink { tx });
        let engine = CaptureEngine::new(Arc::clone(&self.source), vec![sink], options).with_selector(matcher);
        let inventory = self.inventory.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if own_namespace {
                if let Err(e) = engine.run_own_namespace(stop).await {
                    tracing::warn!(error = %portwarden_core::ErrorChain(&e), "API capture of the agent's namespace failed");
                }
            } else {
                engine.run(&inventory, stop).await;
            }
        });
        Ok(served)
    }
}

type EventSender = mpsc::Sender<Result<v1::PacketEvent, Status>>;

/// Hands frames to one caller.
struct ApiSink {
    tx: EventSender,
}

impl PacketSink for ApiSink {
    fn open(&self, _group: &CaptureGroup) -> Box<dyn GroupSink> {
        Box::new(ApiGroup { tx: self.tx.clone(), sent_members: None, interfaces: Vec::new(), announced: 0, dropped: 0 })
    }
}

/// One capture's side of a stream.
struct ApiGroup {
    tx: EventSender,
    /// The members the caller last heard of.
    sent_members: Option<Vec<ContainerId>>,
    /// Every interface seen; the first `announced` reached the caller.
    interfaces: Vec<v1::Interface>,
    announced: usize,
    /// Frames skipped since the last batch that got through.
    dropped: u64,
}

fn wire_interface(i: &Interface) -> v1::Interface {
    let arphrd = match i.link {
        LinkType::Ethernet => 1,
        LinkType::RawIp => 0xFFFE,
        LinkType::Other(n) => u32::from(n),
    };
    v1::Interface { index: i.index, name: i.name.clone(), arphrd }
}

fn link_of(arphrd: u32) -> LinkType {
    match arphrd {
        1 | 772 => LinkType::Ethernet,
        0xFFFE | 519 => LinkType::RawIp,
        n => LinkType::Other(u16::try_from(n).unwrap_or(u16::MAX)),
    }
}

impl GroupSink for ApiGroup {
    fn batch(&mut self, group: &CaptureGroup, batch: &PacketBatch<'_>) {
        self.interfaces.extend(batch.new_interfaces.iter().map(wire_interface));
        let members: Vec<ContainerId> = group.containers.iter().map(|c| c.id.clone()).collect();
        let mut frames = batch.iter().peekable();
        while frames.peek().is_some() {
            let mut data = BytesMut::new();
            let mut metas = Vec::new();
            while let Some((meta, bytes)) = frames.next_if(|_| data.len() < MESSAGE_DATA_BYTES) {
                let start = data.len();
                match meta.vlan {
                    // The tag the kernel took off goes back in, as libpcap does.
                    Some(tag) if bytes.len() >= 12 => {
                        data.extend_from_slice(&bytes[..12]);
                        data.extend_from_slice(&tag.bytes());
                        data.extend_from_slice(&bytes[12..]);
                    }
                    _ => data.extend_from_slice(bytes),
                }
                metas.push((meta, start..data.len()));
            }
            let data = data.freeze();
            let count = metas.len() as u64;
            let changed = self.sent_members.as_ref() != Some(&members);
            let message = v1::PacketBatch {
                capture: group.key,
                containers: if changed { group.containers.iter().map(Into::into).collect() } else { Vec::new() },
                containers_changed: changed,
                interfaces: self.interfaces[self.announced..].to_vec(),
                packets: metas
                    .into_iter()
                    .map(|(m, range)| v1::Packet {
                        time_unix_nano: m.timestamp_ns,
                        ifindex: m.ifindex,
                        original_len: m.original_len + if m.vlan.is_some() { 4 } else { 0 },
                        outgoing: m.direction == Direction::Outgoing,
                        data: data.slice(range),
                    })
                    .collect(),
                dropped: self.dropped,
            };
            let event = v1::PacketEvent { event: Some(v1::packet_event::Event::Batch(message)) };
            match self.tx.try_send(Ok(event)) {
                Ok(()) => {
                    self.sent_members = Some(members.clone());
                    self.announced = self.interfaces.len();
                    self.dropped = 0;
                }
                Err(mpsc::error::TrySendError::Full(_)) => self.dropped += count,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }

    fn close(&mut self, group: &CaptureGroup, stats: CaptureStats) {
        let ended = v1::CaptureEnded { capture: group.key, packets: stats.packets, kernel_drops: stats.kernel_drops };
        let _ = self.tx.try_send(Ok(v1::PacketEvent { event: Some(v1::packet_event::Event::Ended(ended)) }));
    }
}

/// One capture as the caller rebuilds it.
struct Replayed {
    group: CaptureGroup,
    sinks: Vec<Box<dyn GroupSink>>,
    /// Frames received, for the report when the daemon's own totals never
    /// arrive (this side stopped first).
    received: u64,
}

/// Feeds a packet stream to `sinks` as if the captures ran here, until the
/// stream ends or `done` fires. Returns the frames the daemon skipped
/// because this side read too slowly.
pub(crate) async fn replay(
    mut stream: tonic::Streaming<v1::PacketEvent>,
    sinks: &[Arc<dyn PacketSink>],
    done: CancellationToken,
) -> anyhow::Result<u64> {
    let mut captures: HashMap<u64, Replayed> = HashMap::new();
    let mut skipped = 0u64;
    let mut data = Vec::new();
    let mut metas = Vec::new();
    loop {
        let event = tokio::select! {
            () = done.cancelled() => break,
            got = stream.message() => match got.map_err(super::status_error)? {
                Some(event) => event,
                None => break,
            },
        };
        match event.event {
            Some(v1::packet_event::Event::Batch(b)) => {
                skipped += b.dropped;
                let containers: Vec<_> = b.containers.iter().map(v1::Container::to_model).collect();
                let capture = captures.entry(b.capture).or_insert_with(|| {
                    let group = CaptureGroup { key: b.capture, netns: None, containers: containers.clone() };
                    let mut sinks: Vec<Box<dyn GroupSink>> = sinks.iter().map(|s| s.open(&group)).collect();
                    for s in &mut sinks {
                        s.started(&group);
                    }
                    Replayed { group, sinks, received: 0 }
                });
                if b.containers_changed {
                    capture.group.containers = containers;
                }
                let interfaces: Vec<Interface> = b
                    .interfaces
                    .iter()
                    .map(|i| Interface { index: i.index, name: i.name.clone(), link: link_of(i.arphrd) })
                    .collect();
                data.clear();
                metas.clear();
                for p in &b.packets {
                    let offset = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    data.extend_from_slice(&p.data);
                    metas.push(PacketMeta {
                        timestamp_ns: p.time_unix_nano,
                        ifindex: p.ifindex,
                        original_len: p.original_len,
                        direction: if p.outgoing { Direction::Outgoing } else { Direction::Incoming },
                        offset,
                        len: u32::try_from(p.data.len()).unwrap_or(u32::MAX),
                        vlan: None,
                        checksum_pending: false,
                    });
                }
                capture.received += metas.len() as u64;
                let batch = PacketBatch { new_interfaces: &interfaces, packets: &metas, data: &data };
                for s in &mut capture.sinks {
                    s.batch(&capture.group, &batch);
                }
            }
            Some(v1::packet_event::Event::Ended(e)) => {
                if let Some(mut c) = captures.remove(&e.capture) {
                    let stats = CaptureStats { packets: e.packets, bytes: 0, kernel_drops: e.kernel_drops };
                    for s in &mut c.sinks {
                        s.close(&c.group, stats);
                    }
                }
            }
            None => {}
        }
    }
    for (_, mut c) in captures {
        let stats = CaptureStats { packets: c.received, ..CaptureStats::default() };
        for s in &mut c.sinks {
            s.close(&c.group, stats);
        }
    }
    Ok(skipped)
}
