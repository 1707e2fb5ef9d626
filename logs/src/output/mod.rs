//! Where records go: JSON lines to stdout or a file, RFC 5424 to a
//! remote syslog, or OpenTelemetry logs (OTLP). Each output runs as its own
//! task behind a bounded queue (see [`crate::Pipeline`]); a write that fails
//! is retried, never skipped.

mod buffer;
mod file;
mod otlp;
mod routed;
mod syslog;
mod tls;

use std::io;

use async_trait::async_trait;
use portwarden_core::LogRecord;
use serde::{Deserialize, Serialize};

pub use buffer::{BufferStats, DiskBuffer};
pub use file::{FileMark, JsonFile, JsonStdout};
pub use otlp::{Compression as OtlpCompression, OtlpConfig, OtlpOutput, Protocol as OtlpProtocol};
pub use routed::{Routed, alert_severity};
pub use syslog::SyslogOutput;
pub use tls::TlsConfig;

/// What the pipeline does with a batch when an output's queue is full
/// (`when_full` of a network output).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait: every source slows down until the output catches up, and
    /// nothing is lost (backpressure). The default.
    #[default]
    Block,
    /// Skip the batch for this output alone, counted in `output_dropped`:
    /// a slow or stuck output never holds the others back, and checkpoints
    /// do not wait for it. An embedder's outputs get this ([`Contained`]).
    DropNewest,
}

/// Wraps an output so that, stuck or slow, it never holds back the other
/// outputs or the sources: its batches are dropped (and counted) while its
/// queue is full. The agent wraps every output an embedder adds.
pub struct Contained(pub Box<dyn Output>);

#[async_trait]
impl Output for Contained {
    fn name(&self) -> String {
        self.0.name()
    }

    async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
        self.0.write(records).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.0.flush().await
    }

    fn mark(&self) -> Option<FileMark> {
        self.0.mark()
    }

    fn restore(&mut self, mark: &FileMark) -> io::Result<()> {
        self.0.restore(mark)
    }

    fn when_full(&self) -> WhenFull {
        WhenFull::DropNewest
    }

    fn buffer_stats(&self) -> Option<std::sync::Arc<BufferStats>> {
        self.0.buffer_stats()
    }
}

/// A destination for records.
#[async_trait]
pub trait Output: Send {
    /// A name for logs and checkpoints (`stdout`, `file:/var/log/x.json`).
    fn name(&self) -> String;

    /// Takes `records` in (encodes them). Nothing need reach the
    /// destination before [`Output::flush`].
    async fn write(&mut self, records: &[LogRecord]) -> io::Result<()>;

    /// Delivers everything taken in so far (to the kernel, for files and
    /// sockets). An error keeps it all for the next attempt.
    async fn flush(&mut self) -> io::Result<()>;

    /// For a file: where it ends now, recorded with the checkpoint.
    fn mark(&self) -> Option<FileMark> {
        None
    }

    /// Before anything is written: returns to the state `mark` recorded at
    /// the last checkpoint, so records read again are not written twice.
    fn restore(&mut self, mark: &FileMark) -> io::Result<()> {
        let _ = mark;
        Ok(())
    }

    /// What the pipeline does when this output's queue is full.
    fn when_full(&self) -> WhenFull {
        WhenFull::Block
    }

    /// Its disk buffer's counters, when it has one.
    fn buffer_stats(&self) -> Option<std::sync::Arc<BufferStats>> {
        None
    }
}

/// An output as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputConfig {
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines in a file, rotated by size.
    File {
        /// The file. Example: `/var/log/portwarden/logs.json`.
        path: std::path::PathBuf,
        /// Rotate when the file would pass this many bytes. Default: 100 MiB.
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
        /// Rotated files kept (`<path>.1` is the newest). Default: 5.
        #[serde(default = "default_max_files")]
        max_files: u32,
    },
    /// RFC 5424, octet-counted, over TCP or TLS, to a remote syslog (a SIEM).
    Syslog {
        /// `host:port`. Example: `siem.example:6514` (TLS) or `:514`.
        address: String,
        /// TLS (RFC 5425); plain TCP without it.
        #[serde(default)]
        tls: Option<TlsConfig>,
        /// When its queue (or disk buffer) is full: `block` (default) or
        /// `drop_newest`.
        #[serde(default)]
        when_full: WhenFull,
        /// A disk buffer of this many bytes in `logs.state_dir`; 0 (the
        /// default) keeps the in-memory queue only.
        #[serde(default)]
        buffer_max_bytes: u64,
    },
    /// OpenTelemetry logs (OTLP) over gRPC or HTTP/protobuf.
    Otlp(OtlpConfig),
}

fn default_max_bytes() -> u64 {
    100 << 20
}

fn default_max_files() -> u32 {
    5
}
