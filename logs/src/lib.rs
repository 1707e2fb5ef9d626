//! Container log collection: Docker logs API, CRI log files, syslog and Fluentd forward.
//!
//! This crate is empty so far: it reserves the crate's place in the
//! workspace, and the capability arrives with issue #5. Until then the agent
//! does not offer it, and `portwarden --help` does not mention it.
#![deny(missing_docs)]
