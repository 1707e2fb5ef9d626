//! [`PacketSink`]s for the capture engine: EVE flow records and pcapng.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::SystemTime;

use portwarden_core::{
    CaptureGroup, CaptureStats, GroupSink, LinkType, LogOrigin, LogRecord, LogSender, LogStats, PacketBatch,
    PacketSink, WeakLogSender,
};
use serde_json::Value;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::decode::{Skip, summarize};
use crate::flow::{EndReason, Flow, FlowTable, FlowTimeouts};
use crate::pcapng::{IdbInfo, PcapngOut};

/// A shared line-oriented output (stdout, a file).
pub type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

/// The `container` object for events of a capture group: the attributed
/// container in the design's JSON shape, or `null` for the host.
pub fn container_json(group: &CaptureGroup) -> Value {
    group.container().and_then(|c| serde_json::to_value(c).ok()).unwrap_or(Value::Null)
}

/// Emits an EVE `flow` event for each flow that ends: a JSON line to a
/// writer, or a record into the log pipeline, for its outputs.
pub struct FlowSink {
    out: FlowOut,
    timeouts: FlowTimeouts,
}

/// Where flow events go.
#[derive(Clone)]
enum FlowOut {
    Lines(SharedWriter),
    /// Records (origin `flow`, the event as `raw`), handed over without
    /// waiting: capture never waits for the outputs; what finds the
    /// pipeline full is dropped and counted in `flows_dropped`.
    Records(WeakLogSender, Arc<LogStats>),
}

impl FlowSink {
    /// Flow records go to `out`, one JSON line each.
    pub fn new(out: SharedWriter, timeouts: FlowTimeouts) -> FlowSink {
        FlowSink { out: FlowOut::Lines(out), timeouts }
    }

    /// Flow records go into the log pipeline through `out`, for the outputs
    /// that take them. The sink does not keep the pipeline open.
    pub fn to_records(out: &LogSender, stats: Arc<LogStats>, timeouts: FlowTimeouts) -> FlowSink {
        FlowSink { out: FlowOut::Records(out.weak(), stats), timeouts }
    }
}

impl PacketSink for FlowSink {
    fn open(&self, group: &CaptureGroup) -> Box<dyn GroupSink> {
        // Flow ids: capture key in the high bits, a counter in the low ones.
        let table = FlowTable::new(self.timeouts, group.key << 40);
        Box::new(GroupFlows { out: self.out.clone(), table, links: HashMap::new() })
    }
}

struct GroupFlows {
    out: FlowOut,
    table: FlowTable,
    links: HashMap<u32, LinkType>,
}

impl GroupFlows {
    fn emit(&self, group: &CaptureGroup, flows: Vec<Flow>, reason: EndReason) {
        if flows.is_empty() {
            return;
        }
        let container = container_json(group);
        match &self.out {
            FlowOut::Lines(out) => {
                let mut text = String::new();
                for flow in flows {
                    text.push_str(&flow.to_eve(reason, &container).to_string());
                    text.push('\n');
                }
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                    warn!(error = %e, "could not write flow records");
                }
            }
            FlowOut::Records(out, stats) => {
                let owner = group.container().map(|c| Arc::new(c.clone()));
                let batch: Vec<LogRecord> = flows
                    .into_iter()
                    .map(|flow| {
                        let mut r = LogRecord::new(SystemTime::now(), LogOrigin::Flow, None, "flow".into());
                        r.container.clone_from(&owner);
                        r.raw = Some(flow.to_eve(reason, &container).to_string());
                        r
                    })
                    .collect();
                let n = batch.len() as u64;
                if let Err(TrySendError::Full(_)) = out.try_send(batch) {
                    stats.flows_dropped.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
    }
}

impl GroupSink for GroupFlows {
    fn batch(&mut self, _group: &CaptureGroup, batch: &PacketBatch<'_>) {
        for iface in batch.new_interfaces {
            self.links.insert(iface.index, iface.link);
        }
        for (meta, bytes) in batch.iter() {
            let link = self.links.get(&meta.ifindex).copied().unwrap_or(LinkType::Ethernet);
            match summarize(link, bytes) {
                Ok(summary) => self.table.observe(meta.timestamp_ns, &summary, meta.original_len),
                Err(Skip::NotIp) => self.table.counters.non_ip += 1,
                Err(Skip::Malformed) => self.table.counters.decode_errors += 1,
            }
        }
    }

    fn tick(&mut self, group: &CaptureGroup, now_ns: u64) {
        let ended = self.table.expire(now_ns);
        self.emit(group, ended, EndReason::Timeout);
    }

    fn close(&mut self, group: &CaptureGroup, _stats: CaptureStats) {
        let ended = self.table.drain();
        self.emit(group, ended, EndReason::Shutdown);
    }
}

/// Writes every frame to one pcapng output, each container interface its
/// own IDB; with a limit, cancels `done` after that many frames.
pub struct PcapngSink {
    out: Arc<Mutex<PcapngOut>>,
    snaplen: u32,
    remaining: Option<Arc<AtomicU64>>,
    done: CancellationToken,
}

impl PcapngSink {
    /// Frames go to `out`; `limit` frames at most, then `done` is cancelled.
    pub fn new(out: PcapngOut, snaplen: u32, limit: Option<u64>, done: CancellationToken) -> PcapngSink {
        PcapngSink {
            out: Arc::new(Mutex::new(out)),
            snaplen,
            remaining: limit.map(|n| Arc::new(AtomicU64::new(n))),
            done,
        }
    }
}

impl PacketSink for PcapngSink {
    fn open(&self, _group: &CaptureGroup) -> Box<dyn GroupSink> {
        Box::new(GroupPcapng {
            out: Arc::clone(&self.out),
            snaplen: self.snaplen,
            remaining: self.remaining.clone(),
            done: self.done.clone(),
            failed: false,
        })
    }
}

struct GroupPcapng {
    out: Arc<Mutex<PcapngOut>>,
    snaplen: u32,
    remaining: Option<Arc<AtomicU64>>,
    done: CancellationToken,
    failed: bool,
}

/// `if_description`: who the interface belongs to.
fn describe(group: &CaptureGroup) -> String {
    let Some(c) = group.container() else { return "host network namespace".into() };
    let mut text = format!("runtime={} id={} name={} image={}", c.runtime, c.id, c.name, c.image);
    if let Some(pod) = group.pod() {
        text.push_str(&format!(" pod={}/{} pod_uid={}", pod.namespace, pod.name, pod.uid));
    }
    if group.containers.len() > 1 {
        let names: Vec<&str> = group.containers.iter().map(|c| c.name.as_str()).collect();
        text.push_str(&format!(" containers={}", names.join(",")));
    }
    text
}

impl GroupSink for GroupPcapng {
    fn batch(&mut self, group: &CaptureGroup, batch: &PacketBatch<'_>) {
        if self.failed {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let result = (|| -> std::io::Result<()> {
            for iface in batch.new_interfaces {
                let info = IdbInfo {
                    name: format!("{}/{}", group.label(), iface.name),
                    description: describe(group),
                    link: iface.link,
                    snaplen: self.snaplen,
                };
                out.add_interface(group.key, iface.index, info)?;
            }
            // With a count, claim up to this batch's frames from what is left.
            let offered = batch.packets.len() as u64;
            let allowed = match &self.remaining {
                None => offered,
                Some(remaining) => {
                    let left = remaining
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n > 0).then(|| n.saturating_sub(offered))
                        })
                        .unwrap_or(0);
                    if left > 0 && left <= offered {
                        self.done.cancel();
                    }
                    left.min(offered)
                }
            };
            out.write_frames(group.key, batch.iter().take(usize::try_from(allowed).unwrap_or(usize::MAX)))?;
            out.flush()
        })();
        if let Err(e) = result {
            // A closed pipe (`-w - | head`) ends the capture, not the agent.
            warn!(error = %e, "pcapng output failed; stopping it");
            self.failed = true;
            self.done.cancel();
        }
    }
}
