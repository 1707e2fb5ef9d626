//! The [`ContainerRuntime`] trait: one connected runtime endpoint.

use std::path::Path;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::model::{Container, ContainerId, RuntimeEvent, RuntimeName};

/// What a runtime says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuntimeInfo {
    /// The runtime's name, as its provider gives it.
    pub runtime: RuntimeName,
    /// Its product name (`Docker Engine`, `containerd`, `cri-o`, ...).
    pub name: String,
    /// Its version.
    pub version: String,
    /// The API version it speaks, when it has one.
    pub api_version: Option<String>,
}

/// A connected container runtime.
///
/// Implementations are cheap to share (`Arc<dyn ContainerRuntime>`) and
/// reconnect internally: after the daemon restarts, the next call simply
/// works again. The inventory drives them with `events` + `list` and calls
/// `inspect` for every container an event mentions.
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// The runtime's name, the same as its provider's.
    fn name(&self) -> RuntimeName;

    /// How much this runtime knows about a container, from its provider.
    /// When several runtimes report one container, the inventory takes the
    /// report with the highest priority and fills its gaps from the others
    /// (the built-ins: CRI 30, which knows pods; Docker and Podman 20, which
    /// know names and networks; native containerd 10, which knows little
    /// beyond the task). Equal priorities keep registration order.
    fn merge_priority(&self) -> u8 {
        0
    }

    /// The socket this runtime was reached at, for logs and `portwarden runtimes`.
    fn endpoint(&self) -> &Path;

    /// Asks the runtime who it is. Also serves as a liveness check.
    async fn info(&self) -> Result<RuntimeInfo>;

    /// Every container the runtime knows, stopped ones included.
    ///
    /// A container the runtime lists but cannot describe is skipped with a
    /// warning naming it, never returned half-filled.
    async fn list(&self) -> Result<Vec<Container>>;

    /// One container, by full id.
    async fn inspect(&self, id: &ContainerId) -> Result<Container>;

    /// Subscribes to lifecycle events.
    ///
    /// The subscription is active when this returns, so a caller that
    /// subscribes and then lists misses nothing. The stream ends when `cancel`
    /// fires or the runtime goes away. An `Err` item reports one event that
    /// could not be decoded ([`Error::Protocol`](crate::Error::Protocol)), or,
    /// as the last item, why the connection ended.
    async fn events(&self, cancel: CancellationToken) -> Result<BoxStream<'static, Result<RuntimeEvent>>>;
}

/// Starts a subscription call on its own task and returns its items as a
/// stream.
///
/// Some gRPC servers (containerd's events service, CRI `GetContainerEvents`)
/// send response headers only with the first event, so awaiting the call
/// would block until something happens. This drives `call` in the
/// background instead and waits at most `settle` for it: a call the server
/// refuses at once (unimplemented, permission denied) is returned as `Err`,
/// so the caller can fall back; a call still pending after `settle` is
/// taken as accepted. The wait also lets the request reach the server
/// before the caller lists, narrowing the window for a missed event to the
/// server's own registration (the inventory's periodic resync repairs that).
/// A failure after `settle` arrives as the stream's last item.
pub async fn detached_subscription<T, F>(
    call: F,
    settle: std::time::Duration,
    cancel: CancellationToken,
) -> Result<BoxStream<'static, Result<T>>>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<BoxStream<'static, Result<T>>>> + Send + 'static,
{
    use futures::StreamExt;
    use tokio::sync::{mpsc, oneshot};

    let (resolved_tx, resolved_rx) = oneshot::channel::<Result<()>>();
    let (tx, mut rx) = mpsc::channel::<Result<T>>(256);
    tokio::spawn(async move {
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            () = tx.closed() => return,
            outcome = call => outcome,
        };
        let mut stream = match outcome {
            Ok(stream) => {
                let _ = resolved_tx.send(Ok(()));
                stream
            }
            Err(e) => {
                if let Err(Err(e)) = resolved_tx.send(Err(e)) {
                    let _ = tx.send(Err(e)).await;
                }
                return;
            }
        };
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tx.closed() => return,
                item = stream.next() => match item {
                    Some(item) => if tx.send(item).await.is_err() { return },
                    None => return,
                },
            }
        }
    });
    if let Ok(Ok(Err(e))) = tokio::time::timeout(settle, resolved_rx).await {
        return Err(e);
    }
    Ok(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::Error;

    const SETTLE: Duration = Duration::from_millis(20);

    #[tokio::test]
    async fn a_refused_call_is_an_error_for_the_caller() {
        let call = async { Err::<BoxStream<'static, Result<u8>>, _>(Error::protocol("subscribe", "unimplemented")) };
        let got = detached_subscription(call, SETTLE, CancellationToken::new()).await;
        assert!(matches!(got, Err(Error::Protocol { .. })));
    }

    #[tokio::test]
    async fn a_call_that_answers_only_with_its_first_item_is_accepted() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let call = async move {
            let _ = rx.await; // the server answers late
            Ok(futures::stream::iter(vec![Ok(1u8), Ok(2)]).boxed())
        };
        let stream = detached_subscription(call, SETTLE, CancellationToken::new()).await.expect("accepted");
        tx.send(()).expect("call waiting");
        let items: Vec<u8> = stream.map(|i| i.expect("item")).collect().await;
        assert_eq!(items, [1, 2]);
    }

    #[tokio::test]
    async fn a_late_failure_ends_the_stream_with_it_and_cancel_ends_it_quietly() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let call = async move {
            let _ = rx.await;
            Err::<BoxStream<'static, Result<u8>>, _>(Error::unavailable("sock", "reset"))
        };
        let mut stream = detached_subscription(call, SETTLE, CancellationToken::new()).await.expect("pending");
        tx.send(()).expect("call waiting");
        assert!(matches!(stream.next().await, Some(Err(Error::Unavailable { .. }))));
        assert!(stream.next().await.is_none());

        let cancel = CancellationToken::new();
        let call = futures::future::pending::<Result<BoxStream<'static, Result<u8>>>>();
        let mut stream = detached_subscription(call, SETTLE, cancel.clone()).await.expect("pending");
        cancel.cancel();
        assert!(stream.next().await.is_none());
    }
}
