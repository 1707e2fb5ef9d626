//! The [`PacketSource`] trait: captured frames from one network namespace.
//!
//! Capture is attached per network namespace, not per container: the
//! containers of a pod share one namespace and so one capture, attributed to
//! all of them. The engine builds a [`CaptureTarget`] for each namespace as
//! the inventory reports containers starting, and drops it when the last one
//! stops.

use std::path::PathBuf;
use std::time::SystemTime;

use async_trait::async_trait;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::model::Container;

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// When the kernel saw it.
    pub timestamp: SystemTime,
    /// The interface index inside the captured namespace.
    pub ifindex: u32,
    /// The frame's length on the wire, which may exceed `data.len()` when
    /// the snaplen cut it.
    pub original_len: u32,
    /// The captured bytes, starting at the link-layer header.
    pub data: Vec<u8>,
}

/// A network namespace to capture, and who lives in it.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureTarget {
    /// The namespace to enter (`<proc root>/<pid>/ns/net`), or `None` for the
    /// agent's own namespace (host-only and sidecar modes).
    pub netns: Option<PathBuf>,
    /// The containers that share it; empty for the host or the agent itself.
    pub containers: Vec<Container>,
}

/// How to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureOptions {
    /// Bytes kept per frame. GRO/TSO frames on veths reach 64 KiB, so the
    /// default is tcpdump's 262144.
    pub snaplen: u32,
    /// A tcpdump-syntax filter, compiled and enforced in the kernel.
    pub filter: Option<String>,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self { snaplen: 262_144, filter: None }
    }
}

/// Kernel counters for one capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames the socket received.
    pub received: u64,
    /// Frames the kernel dropped because the ring was full.
    pub dropped: u64,
}

/// A way to capture packets in a network namespace.
#[async_trait]
pub trait PacketSource: Send + Sync {
    /// A short name for logs (`af_packet`, ...).
    fn name(&self) -> &'static str;

    /// Starts capturing `target`. Frames arrive in batches; the stream ends
    /// when `cancel` fires or the namespace disappears.
    async fn open(
        &self,
        target: &CaptureTarget,
        options: &CaptureOptions,
        cancel: CancellationToken,
    ) -> Result<BoxStream<'static, Result<Vec<Packet>>>>;
}
