//! The Kubernetes CRI (runtime.v1) as a Portwarden runtime, for CRI-O and any CRI endpoint.
//!
//! This crate is empty so far: it reserves the crate's place in the
//! workspace, and the capability arrives with issue #3. Until then the agent
//! does not offer it, and `portwarden --help` does not mention it.
#![deny(missing_docs)]
