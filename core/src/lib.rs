//! Portwarden's core: the container model, the plugin traits, runtime
//! detection and the live inventory.
//!
//! This crate names no runtime. Adapters implement [`RuntimeProvider`] and
//! [`ContainerRuntime`] (the `portwarden-runtime-*` crates), capture
//! implements [`PacketSource`], log collection implements [`LogSource`]. An
//! embedder registers the providers it wants in a [`Registry`], lets
//! [`Registry::detect`] find the sockets that answer, and hands the connected
//! runtimes to an [`Inventory`], which keeps a merged, live map of every
//! container on the host.
//!
//! ```no_run
//! use portwarden_core::{DetectOptions, Inventory, InventoryEvent, InventoryOptions, Registry};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo(registry: Registry) {
//! // `registry` holds the providers, e.g. `portwarden::default_registry()`.
//! let detection = registry.detect(&DetectOptions::default()).await;
//! for rejected in &detection.rejected {
//!     println!("{} {}: {}", rejected.runtime, rejected.socket.display(), rejected.reason);
//! }
//! let runtimes = detection.runtimes.into_iter().map(|d| d.runtime).collect();
//! let inventory = Inventory::new(runtimes, InventoryOptions::default());
//! let mut changes = inventory.subscribe();
//! let cancel = CancellationToken::new();
//! tokio::spawn({
//!     let inventory = inventory.clone();
//!     let cancel = cancel.clone();
//!     async move { inventory.run(cancel).await }
//! });
//! while let Ok(InventoryEvent::Container(change)) = changes.recv().await {
//!     if change.started() {
//!         println!("started: {}", change.container().name);
//!     }
//! }
//! # }
//! ```
#![deny(missing_docs)]

mod bundle;
pub mod capabilities;
mod engine;
mod error;
pub mod hostpath;
mod inventory;
mod log;
mod log_stats;
mod model;
pub mod netns;
mod packet;
mod provider;
mod registry;
mod runtime;
#[cfg(test)]
mod testing;
pub mod text;
pub mod time;

pub use bundle::{OCI, OciBundle};
pub use capabilities::{Cap, Capabilities};
pub use engine::{AttachMisses, CaptureEngine, EarlyAttach, EarlyOutcome, EarlyRequest, LiveCapture, Selector};
pub use error::{BoxError, Error, ErrorChain, Result};
pub use inventory::{ContainerChange, Inventory, InventoryEvent, InventoryOptions, Origin};
pub use log::{
    ByteBudget, ClaimedIdentity, LogBatch, LogOrigin, LogPosition, LogRecord, LogSender, LogSource, LogSourceOptions,
    LogStream, ResumeLookup, ResumePoints, WeakLogSender, saved_resume,
};
pub use log_stats::{LogStats, LogStatsSnapshot};
pub use model::{Container, ContainerId, ContainerState, Pod, RuntimeEvent, RuntimeEventKind, RuntimeName};
pub use netns::{NetnsGroup, NetnsId};
pub use packet::{
    Capture, CaptureCounters, CaptureFeed, CaptureGroup, CaptureOptions, CaptureStats, CaptureTarget, Direction,
    GroupSink, Interface, LinkType, PacketBatch, PacketMeta, PacketSink, PacketSource, VlanTag,
};
pub use provider::{RuntimeEnv, RuntimeProvider};
pub use registry::{DetectOptions, Detected, Detection, DuplicateRuntime, Registry, Rejected, Rejection};
pub use runtime::{ContainerRuntime, RuntimeInfo, detached_subscription};
