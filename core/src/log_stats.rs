//! Counters for everything log collection skips, cuts or drops, so none of
//! it is silent. One [`LogStats`] is shared by every source (a runtime
//! provider's included), listener and output.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Log collection counters, shared by every source and output.
        #[derive(Debug, Default)]
        pub struct LogStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of [`LogStats`].
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct LogStatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl LogStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> LogStatsSnapshot {
                LogStatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Records handed to the outputs.
    records,
    /// Records written by every output.
    written,
    /// Lines that are not in their source's format (CRI, a logs API's frames).
    malformed,
    /// CRI lines without the `P`/`F` tag field, taken as full lines.
    untagged,
    /// Messages cut at the size limit (marked `truncated`).
    truncated,
    /// Log files truncated in place and re-read from the start.
    truncated_files,
    /// Log file rotations followed.
    rotations,
    /// Log files deleted while they were read (what was written before is
    /// still read from the open file).
    files_deleted,
    /// Checkpoints whose file was gone, so reading restarted at the current file.
    resume_lost,
    /// Lines skipped on resume because they were already delivered.
    deduplicated,
    /// Containers whose log driver cannot be read back through their runtime.
    unreadable_drivers,
    /// Syslog or forward frames whose length or structure was wrong.
    framing_errors,
    /// Syslog messages that parsed as neither RFC 5424 nor RFC 3164 (kept whole).
    unparsed_syslog,
    /// Connections refused because their source is not in the allowed networks.
    refused_peers,
    /// Forward payloads that are not msgpack or not a forward message.
    invalid_forward,
    /// Compressed forward chunks dropped for inflating past the limit.
    decompression_limit,
    /// UDP syslog datagrams dropped because the pipeline was full.
    udp_dropped,
    /// Forward chunks acknowledged.
    acks,
    /// Output write failures (each retried).
    output_errors,
    /// Records an output that may drop (an embedder's) did not get because
    /// its queue was full.
    output_dropped,
    /// Records a receiver refused for good (an OTLP partial success, a
    /// status that is not worth retrying, a record too large even alone):
    /// counted and warned about, never retried in a loop.
    output_rejected,
    /// Record bodies cut to fit an output's request size limit.
    output_truncated,
    /// Flow records dropped because the pipeline was full (capture never
    /// waits for the outputs).
    flows_dropped,
    /// Log sources and outputs that panicked: each is cut off alone (a
    /// source for its container, an output for good), the rest go on.
    panics,
    /// Corrupt checkpoint files set aside.
    corrupt_checkpoints,
}
