//! Podman as a Portwarden runtime, through its REST API on `podman.sock`
//! (`podman system service`).
//!
//! Written only against `portwarden-core`'s public traits: core names no
//! runtime, and registering [`PodmanProvider`] is all it takes to add
//! Podman. Containers are listed and inspected through the `libpod`
//! endpoints, which know Podman pods (a pod's members share its infra
//! container's network namespace, and are captured once, together);
//! events come from `/libpod/events`; output is read through the
//! Docker-compatible logs API that Podman serves, with Docker's decoder
//! (`portwarden-runtime-docker`).
//!
//! ```no_run
//! use portwarden_core::Registry;
//! use portwarden_runtime_podman::PodmanProvider;
//!
//! let registry = Registry::new().with_provider(PodmanProvider::default());
//! ```
#![deny(missing_docs)]

mod api;
mod bundle;
mod convert;
mod provider;
mod runtime;

/// This runtime's name: its config section is `[runtimes.podman]`.
pub const PODMAN: portwarden_core::RuntimeName = portwarden_core::RuntimeName::from_static("podman");

/// Its [merge priority](portwarden_core::ContainerRuntime::merge_priority):
/// as Docker's (names, networks and pods). No other runtime reports
/// Podman's containers, so it only orders ties.
pub const PODMAN_PRIORITY: u8 = 20;

pub use provider::PodmanProvider;
pub use runtime::PodmanRuntime;
