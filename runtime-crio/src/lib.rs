//! The Kubernetes CRI (`runtime.v1`) as a Portwarden runtime, for CRI-O and
//! any other CRI endpoint, containerd's included.
//!
//! [`CriProvider`] probes with `Version`. [`CriRuntime`] lists with
//! `ListContainers`, then asks `ContainerStatus` with `verbose=true` for each
//! container's PID (from the `info` JSON) and log path, and
//! `PodSandboxStatus` for its pod's name, namespace, uid and IPs. Changes
//! come from `GetContainerEvents` where the runtime has it; otherwise (for
//! example containerd 1.6) a poller lists containers every
//! [`CriOptions::poll_interval`] and reports what changed. The choice is
//! logged when the stream starts.
//!
//! ```no_run
//! use std::path::Path;
//! use portwarden_core::ContainerRuntime;
//! use portwarden_runtime_crio::{CriOptions, CriRuntime};
//!
//! # async fn demo() -> portwarden_core::Result<()> {
//! let cri = CriRuntime::connect(Path::new("/run/crio/crio.sock"), Path::new("/proc"), CriOptions::default()).await?;
//! for c in cri.list().await? {
//!     let pod = c.pod.as_ref().map(|p| format!("{}/{}", p.namespace, p.name));
//!     println!("{} {} pod={pod:?} pid={:?} ips={:?}", c.id.short(), c.name, c.pid, c.ips);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod bundle;
pub(crate) mod channel;
mod convert;
mod events;
mod provider;
mod runtime;

/// This runtime's name: its config section is `[runtimes.cri]`.
pub const CRI: portwarden_core::RuntimeName = portwarden_core::RuntimeName::from_static("cri");

/// Its [merge priority](portwarden_core::ContainerRuntime::merge_priority)
/// (CRI: knows pods).
pub const CRI_PRIORITY: u8 = 30;

pub use channel::connect as connect_channel;
pub use provider::CriProvider;
pub use runtime::{CriOptions, CriRuntime, EventMode};
