//! Pre-start attach: capture and detection attached before a container
//! runs its first instruction.
//!
//! A container's runtime learns of it from the runtime's events only after
//! it has started, and a container that sends at once loses its first
//! packets to that delay. This crate closes the gap with fanotify, as
//! Inspektor Gadget's container hook does: the OCI runtimes and monitors
//! (runc, crun, conmon) are marked for `FAN_OPEN_EXEC_PERM`; each `create`
//! names the bundle and the pid file; the pid file's directory is marked
//! for `FAN_ACCESS_PERM`; and when the runtime's shim reads the pid file,
//! the container's namespaces exist and its init is parked. The read is
//! held while the agent opens the capture in the container's network
//! namespace ([`Attach::attach`]), then allowed.
//!
//! The hook fails open: every held read is allowed within its time limit
//! (at most [`HARD_LIMIT`]), anything it does not understand is allowed at
//! once and counted, and if the agent dies the kernel allows everything.
//! Where it cannot run at all, [`Hook::start`] says why ([`Off`]) and the
//! agent attaches from runtime events as before.
#![deny(missing_docs)]

mod fanotify;
mod hook;
mod invocation;
mod paths;
mod pending;
mod stats;

pub use hook::{Attach, HARD_LIMIT, Hook, HookOptions, Off, Outcome, Verdict};
pub use stats::{Stats, StatsSnapshot};
