//! Per-container packet capture.
//!
//! [`AfPacketSource`] implements [`PacketSource`](portwarden_core::PacketSource):
//! for each network namespace a dedicated thread enters it (`setns`), opens an
//! AF_PACKET socket over all its interfaces (`lo` included, its duplicate
//! outgoing copies dropped as libpcap does), attaches a tcpdump-syntax filter
//! compiled to classic BPF ([`Program`]), and reads a memory-mapped
//! TPACKET_V3 ring. Kernel drop counters are read with `PACKET_STATISTICS`.
//! On stop it waits for the kernel to retire the open block, so the last
//! frames are delivered.
//!
//! [`summarize`] decodes frames with etherparse; [`FlowTable`] turns them into
//! Suricata-style EVE `flow` records; [`PcapngOut`] writes pcapng with one
//! interface per container interface; [`sinks`] plugs both into the
//! capture engine.
//!
//! ```no_run
//! use portwarden_capture::AfPacketSource;
//! use portwarden_core::{CaptureOptions, CaptureTarget, PacketSource};
//! use futures::StreamExt;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> portwarden_core::Result<()> {
//! let target = CaptureTarget { netns: Some("/proc/4242/ns/net".into()), label: "web".into(), containers: vec![] };
//! let options = CaptureOptions { filter: Some("tcp port 80".into()), ..CaptureOptions::default() };
//! let mut capture = AfPacketSource.open(&target, &options, CancellationToken::new()).await?;
//! while let Some(batch) = capture.batches.next().await {
//!     for (meta, bytes) in batch?.iter() {
//!         println!("if{} {} bytes", meta.ifindex, bytes.len());
//!     }
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod bpf;
mod decode;
mod flow;
mod netns;
mod pcapng;
mod ring;
pub mod sinks;
mod source;

pub use bpf::{FilterError, Program};
pub use decode::{Proto, Skip, Summary, summarize};
pub use flow::{EndReason, Flow, FlowCounters, FlowTable, FlowTimeouts};
pub use pcapng::{Destination, IdbInfo, PcapngOut, numbered};
pub use source::AfPacketSource;
