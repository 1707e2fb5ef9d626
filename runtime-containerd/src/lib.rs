//! containerd's native gRPC API as a Portwarden runtime.
//!
//! [`ContainerdProvider`] probes with the Version service. [`ContainerdRuntime`]
//! lists every namespace (`moby`, `k8s.io`, `default`, ...) or the ones
//! configured, with each container's task for its PID and status, and
//! follows the events service for task and container changes. containerd
//! knows no names or IPs: a container is named by its kubelet or nerdctl
//! label, else by its id, and a CRI runtime on the same socket supplies pod
//! names and IPs through the inventory's merge.
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::Duration;
//! use portwarden_core::ContainerRuntime;
//! use portwarden_runtime_containerd::{ContainerdRuntime, Namespaces};
//!
//! # async fn demo() -> portwarden_core::Result<()> {
//! let socket = Path::new("/run/containerd/containerd.sock");
//! let containerd = ContainerdRuntime::connect(socket, Path::new("/proc"), Namespaces::All, Duration::from_secs(10)).await?;
//! for c in containerd.list().await? {
//!     println!("{:?} {} {} pid={:?}", c.namespace, c.id, c.state, c.pid);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod bundle;
mod convert;
mod events;
mod provider;
mod runtime;
mod status;

/// This runtime's name: its config section is `[runtimes.containerd]`.
pub const CONTAINERD: portwarden_core::RuntimeName = portwarden_core::RuntimeName::from_static("containerd");

/// Its [merge priority](portwarden_core::ContainerRuntime::merge_priority)
/// (containerd native API: knows little beyond the task).
pub const CONTAINERD_PRIORITY: u8 = 10;

pub use provider::ContainerdProvider;
pub use runtime::{ContainerdRuntime, Namespaces};
