//! Portwarden's own gRPC API, portwarden.v1.
//!
//! This crate is empty so far: it reserves the crate's place in the
//! workspace, and the capability arrives with issue #7. Until then the agent
//! does not offer it, and `portwarden --help` does not mention it.
#![deny(missing_docs)]
