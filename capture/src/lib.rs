//! Per-container packet capture: AF_PACKET inside a network namespace, BPF, flows and pcapng.
//!
//! This crate is empty so far: it reserves the crate's place in the
//! workspace, and the capability arrives with issue #4. Until then the agent
//! does not offer it, and `portwarden --help` does not mention it.
#![deny(missing_docs)]
