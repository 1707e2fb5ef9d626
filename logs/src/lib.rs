//! Container log collection for Portwarden.
//!
//! - [`LogCollector`]: attaches a source to each container the inventory
//!   reports: the CRI source below and whatever sources the runtime
//!   providers supply (Docker's and Podman's logs APIs live in their
//!   runtime crates; this crate depends on no runtime);
//! - [`CriLogSource`]: CRI log files (containerd's CRI, CRI-O) tailed
//!   through kubelet's rotations, resumed by file identity and offset;
//! - [`SyslogServer`]: RFC 5424 and RFC 3164 over TCP (both framings) and UDP;
//! - [`ForwardServer`]: Fluentd's forward protocol, all four modes, with acks;
//! - [`Pipeline`]: bounded queues with backpressure to every source, outputs
//!   (JSON lines to stdout or a rotated file, RFC 5424 to a remote syslog)
//!   and checkpoints that make a restart lose and repeat nothing;
//! - [`fluent_launch`]: rewrites a Fluent Bit config so it forwards here.
//!
//! ```no_run
//! use std::sync::Arc;
//! use portwarden_logs::{CheckpointStore, CriLogSource, JsonStdout, Pipeline, PipelineOptions, TailOptions};
//! use portwarden_core::{LogSource, LogStats};
//!
//! # async fn demo(container: Arc<portwarden_core::Container>) -> portwarden_logs::Result<()> {
//! let stats = Arc::new(LogStats::default());
//! let store = CheckpointStore::new(Some(std::path::Path::new("/var/lib/portwarden")))?;
//! let pipeline = Pipeline::start(vec![Box::new(JsonStdout::new("node1".into()))], store,
//!     PipelineOptions::default(), Arc::clone(&stats))?;
//! let cri = CriLogSource::new("/".into(), TailOptions::default(), stats);
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let _ = cri.follow(container, pipeline.resume(), pipeline.sender(), cancel).await;
//! pipeline.finish(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod checkpoint;
mod collector;
mod cri;
mod encode;
mod error;
pub mod fluent_launch;
mod forward;
mod net;
mod output;
mod pipeline;
mod resolve;
mod syslog;

pub use checkpoint::{Checkpoint, CheckpointStore};
pub use collector::LogCollector;
pub use cri::{CriLogSource, CriTail, FileCursor, TailOptions};
pub use encode::Encoder;
pub use error::{Error, Result};
pub use forward::{ForwardOptions, ForwardServer};
pub use net::Cidr;
pub use output::{
    BufferStats, Contained, DiskBuffer, FileMark, JsonFile, JsonStdout, OtlpCompression, OtlpConfig, OtlpOutput,
    OtlpProtocol, Output, OutputConfig, Routed, SyslogOutput, TlsConfig, WhenFull, alert_severity,
};
pub use pipeline::{OutputCounters, Pipeline, PipelineOptions, QueueGauges, RecordTap};
pub use resolve::Resolver;
pub use syslog::{SyslogOptions, SyslogServer};
