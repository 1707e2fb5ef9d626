//! containerd's native gRPC API as a Portwarden runtime.
//!
//! This crate is empty so far: it reserves the crate's place in the
//! workspace, and the capability arrives with issue #3. Until then the agent
//! does not offer it, and `portwarden --help` does not mention it.
#![deny(missing_docs)]
