//! The Docker Engine API as a Portwarden runtime.
//!
//! [`DockerProvider`] plugs into a [`Registry`](portwarden_core::Registry):
//! its probe is one `GET /version`. [`DockerRuntime`] lists with
//! `/containers/json` (inspecting running containers for their PID), inspects
//! with `/containers/{id}/json`, and follows `/events` filtered to the
//! container lifecycle. Everything goes over `docker.sock` with hyper and
//! hyperlocal; Docker's errors become core's kinds (404 is `NotFound`, a
//! connection failure is `Unavailable`, an unreadable or truncated body is
//! `Protocol`).
//!
//! Kubernetes pod metadata comes from the kubelet's `io.kubernetes.pod.*`
//! labels, when present.
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::Duration;
//! use portwarden_core::ContainerRuntime;
//! use portwarden_runtime_docker::DockerRuntime;
//!
//! # async fn demo() -> portwarden_core::Result<()> {
//! let docker = DockerRuntime::new(Path::new("/var/run/docker.sock"), Path::new("/proc"), Duration::from_secs(10));
//! for c in docker.list().await? {
//!     println!("{} {} pid={:?} ips={:?}", c.id.short(), c.name, c.pid, c.ips);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod api;
mod bundle;
mod client;
pub mod compat;
mod convert;
mod events;
pub mod logs;
mod provider;
mod runtime;

/// This runtime's name: its config section is `[runtimes.docker]`.
pub const DOCKER: portwarden_core::RuntimeName = portwarden_core::RuntimeName::from_static("docker");

/// Its [merge priority](portwarden_core::ContainerRuntime::merge_priority)
/// (Docker Engine API: names, networks).
pub const DOCKER_PRIORITY: u8 = 20;

pub use logs::{
    DecodeError, DockerCursor, DockerDecoder, DockerLine, DockerLogSource, DockerLogs, LogsBody, StreamCursor,
};
pub use provider::DockerProvider;
pub use runtime::DockerRuntime;
