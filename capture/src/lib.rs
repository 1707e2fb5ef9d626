//! Per-container packet capture.
//!
//! [`AfPacketSource`] implements [`PacketSource`](portwarden_core::PacketSource):
//! for each network namespace a dedicated thread enters it (`setns`), opens an
//! AF_PACKET socket over all its interfaces (`lo` included, its duplicate
//! outgoing copies dropped as libpcap does), attaches a tcpdump-syntax filter
//! compiled to classic BPF ([`Program`]), and reads a memory-mapped
//! TPACKET_V3 ring. Kernel drop counters are read with `PACKET_STATISTICS`.
//! On stop it waits for the kernel to retire the open block, so the last
//! frames are delivered. Sinks run on that thread and read each ring block
//! in place: no frame is copied or handed between threads.
//!
//! [`summarize`] decodes frames with etherparse; [`FlowTable`] turns them into
//! Suricata-style EVE `flow` records; [`PcapngOut`] writes pcapng with one
//! interface per container interface; [`sinks`] plugs both into the
//! capture engine.
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use portwarden_capture::sinks::{FlowSink, SharedWriter};
//! use portwarden_capture::{AfPacketSource, FlowTimeouts};
//! use portwarden_core::{CaptureEngine, CaptureOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> portwarden_core::Result<()> {
//! let out: SharedWriter = Arc::new(Mutex::new(Box::new(std::io::stdout())));
//! let flows = Arc::new(FlowSink::new(out, FlowTimeouts::default()));
//! let options = CaptureOptions { filter: Some("tcp port 80".into()), ..CaptureOptions::default() };
//! let engine = CaptureEngine::new(Arc::new(AfPacketSource), vec![flows], options);
//! // This process's own network namespace, until cancelled; with an
//! // inventory, `engine.run(&inventory, cancel)` follows every container.
//! engine.run_own_namespace(CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod bpf;
mod bridge;
mod decode;
mod detached;
mod flow;
mod netns;
mod pacing;
mod pcapng;
mod ring;
pub mod sinks;
mod source;

pub use bpf::{FilterError, Program};
pub use bridge::keep_timestamps;
pub use decode::{Proto, Skip, Summary, summarize};
pub use detached::{Detached, DetachedStats};
pub use flow::{EndReason, Flow, FlowCounters, FlowTable, FlowTimeouts};
pub use pcapng::{Destination, IdbInfo, PcapngOut, numbered};
pub use source::AfPacketSource;
