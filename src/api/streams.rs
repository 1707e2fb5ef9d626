//! What every streaming call shares: a bounded queue to the caller, a
//! count of open streams, and a token that stops the producer when the
//! caller goes away or the agent stops.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::metrics::Telemetry;

/// Items queued per stream before the producer waits (or drops, for packets).
pub(crate) const STREAM_QUEUE: usize = 256;

/// The response side of a streaming call. Dropping it (the caller hung up,
/// or tonic finished) cancels its producer and ends the count.
pub(crate) struct Served<T> {
    rx: mpsc::Receiver<Result<T, tonic::Status>>,
    _stop: DropGuard,
    _open: OpenStream,
}

/// Counts a stream as open while it lives.
struct OpenStream(Arc<Telemetry>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.api_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A new stream: the sender its producer writes, the token that says stop
/// (a child of the agent's), and the stream tonic serves.
pub(crate) fn open<T>(
    telemetry: &Arc<Telemetry>,
    agent: &CancellationToken,
    capacity: usize,
) -> (mpsc::Sender<Result<T, tonic::Status>>, CancellationToken, Served<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    let stop = agent.child_token();
    telemetry.api_streams.fetch_add(1, Ordering::Relaxed);
    let served = Served { rx, _stop: stop.clone().drop_guard(), _open: OpenStream(Arc::clone(telemetry)) };
    (tx, stop, served)
}

impl<T> Stream for Served<T> {
    type Item = Result<T, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
