//! Container events from a CRI runtime: `GetContainerEvents` where the
//! runtime streams them (containerd 1.7+, CRI-O 1.26+), otherwise a poller
//! that lists containers at a fixed interval and reports the differences.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::{BoxStream, Stream, StreamExt};
use k8s_cri::v1::{ContainerEventResponse, ContainerEventType, ContainerState as CriState};
use portwarden_core::{ContainerId, Error, Result, RuntimeEvent, RuntimeEventKind};

/// Maps the runtime's event stream. A transport error ends the stream as
/// `Unavailable`, so the inventory reconnects.
pub(crate) fn from_stream<S>(stream: S, endpoint: String) -> BoxStream<'static, Result<RuntimeEvent>>
where
    S: Stream<Item = std::result::Result<ContainerEventResponse, tonic::Status>> + Send + 'static,
{
    stream
        .filter_map(move |item| {
            let out = match item {
                Ok(response) => event(&response).map(Ok),
                Err(status) => Some(Err(Error::unavailable(endpoint.clone(), status))),
            };
            futures::future::ready(out)
        })
        .boxed()
}

fn event(response: &ContainerEventResponse) -> Option<RuntimeEvent> {
    if response.container_id.is_empty() {
        return None;
    }
    let kind = match ContainerEventType::try_from(response.container_event_type).ok()? {
        ContainerEventType::ContainerCreatedEvent => RuntimeEventKind::Created,
        ContainerEventType::ContainerStartedEvent => RuntimeEventKind::Started,
        ContainerEventType::ContainerStoppedEvent => RuntimeEventKind::Exited { exit_code: None },
        ContainerEventType::ContainerDeletedEvent => RuntimeEventKind::Deleted,
    };
    let time = u64::try_from(response.created_at)
        .ok()
        .filter(|&n| n > 0)
        .map_or_else(SystemTime::now, |n| UNIX_EPOCH + Duration::from_nanos(n));
    Some(RuntimeEvent { id: ContainerId::new(response.container_id.clone()), kind, time })
}

/// Each container's CRI state at one poll.
pub(crate) type Snapshot = HashMap<String, i32>;

/// The events that turn `before` into `after`.
pub(crate) fn diff(before: &Snapshot, after: &Snapshot) -> Vec<RuntimeEvent> {
    let now = SystemTime::now();
    let mut events = Vec::new();
    for (id, &state) in after {
        let kind = match (before.get(id), CriState::try_from(state)) {
            (Some(&old), _) if old == state => continue,
            (_, Ok(CriState::ContainerRunning)) => RuntimeEventKind::Started,
            (_, Ok(CriState::ContainerExited)) => RuntimeEventKind::Exited { exit_code: None },
            (None, Ok(CriState::ContainerCreated)) => RuntimeEventKind::Created,
            _ => RuntimeEventKind::Changed,
        };
        events.push(RuntimeEvent { id: ContainerId::new(id.clone()), kind, time: now });
    }
    for id in before.keys().filter(|id| !after.contains_key(*id)) {
        events.push(RuntimeEvent { id: ContainerId::new(id.clone()), kind: RuntimeEventKind::Deleted, time: now });
    }
    events
}

/// Polls `list` every `interval`, starting from `baseline`, and yields the
/// differences. `polls` counts completed polls. A failed poll ends the stream.
pub(crate) fn poll<F, Fut>(
    baseline: Snapshot,
    interval: Duration,
    polls: Arc<AtomicU64>,
    list: F,
) -> BoxStream<'static, Result<RuntimeEvent>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Snapshot>> + Send,
{
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (baseline, tick, list, polls, false);
    futures::stream::unfold(state, |(before, mut tick, list, polls, failed)| async move {
        if failed {
            return None;
        }
        tick.tick().await;
        let result = list().await;
        polls.fetch_add(1, Ordering::Relaxed);
        Some(match result {
            Ok(after) => {
                let events: Vec<Result<RuntimeEvent>> = diff(&before, &after).into_iter().map(Ok).collect();
                (futures::stream::iter(events), (after, tick, list, polls, false))
            }
            Err(e) => (futures::stream::iter(vec![Err(e)]), (before, tick, list, polls, true)),
        })
    })
    .flatten()
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn response(id: &str, kind: ContainerEventType) -> ContainerEventResponse {
        ContainerEventResponse {
            container_id: id.into(),
            container_event_type: kind as i32,
            created_at: 1_700_000_000_000_000_000,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_event_stream_maps_each_type_and_ends_on_a_transport_error() {
        let items = vec![
            Ok(response("a", ContainerEventType::ContainerCreatedEvent)),
            Ok(response("a", ContainerEventType::ContainerStartedEvent)),
            Ok(response("", ContainerEventType::ContainerStartedEvent)),
            Ok(ContainerEventResponse { container_id: "a".into(), container_event_type: 99, ..Default::default() }),
            Ok(response("a", ContainerEventType::ContainerStoppedEvent)),
            Ok(response("a", ContainerEventType::ContainerDeletedEvent)),
            Err(tonic::Status::unavailable("gone")),
        ];
        let out: Vec<Result<RuntimeEvent>> = from_stream(futures::stream::iter(items), "cri".into()).collect().await;
        let kinds: Vec<_> = out.iter().filter_map(|e| e.as_ref().ok().map(|e| e.kind)).collect();
        assert_eq!(
            kinds,
            [
                RuntimeEventKind::Created,
                RuntimeEventKind::Started,
                RuntimeEventKind::Exited { exit_code: None },
                RuntimeEventKind::Deleted
            ]
        );
        assert!(out.last().is_some_and(|e| e.as_ref().is_err_and(Error::is_transient)));
        let first = out[0].as_ref().expect("event");
        assert_eq!(first.time, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    }

    #[test]
    fn diff_reports_starts_stops_and_removals() {
        let running = CriState::ContainerRunning as i32;
        let exited = CriState::ContainerExited as i32;
        let created = CriState::ContainerCreated as i32;
        let before = Snapshot::from([("stays".into(), running), ("stops".into(), running), ("goes".into(), exited)]);
        let after = Snapshot::from([
            ("stays".into(), running),
            ("stops".into(), exited),
            ("new".into(), created),
            ("fast".into(), running),
        ]);
        let mut got: Vec<(String, RuntimeEventKind)> =
            diff(&before, &after).into_iter().map(|e| (e.id.to_string(), e.kind)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                ("fast".into(), RuntimeEventKind::Started),
                ("goes".into(), RuntimeEventKind::Deleted),
                ("new".into(), RuntimeEventKind::Created),
                ("stops".into(), RuntimeEventKind::Exited { exit_code: None }),
            ]
        );
    }

    #[tokio::test]
    async fn the_poller_counts_polls_and_stops_after_a_failure() {
        let polls = Arc::new(AtomicU64::new(0));
        let script = Arc::new(Mutex::new(vec![
            Err(Error::unavailable("cri", "down")),
            Ok(Snapshot::from([("a".into(), CriState::ContainerRunning as i32)])),
        ]));
        let list = move || {
            let next = script.lock().expect("lock").pop().expect("scripted");
            async move { next }
        };
        let out: Vec<_> = poll(Snapshot::new(), Duration::from_millis(1), Arc::clone(&polls), list).collect().await;
        assert_eq!(out.len(), 2);
        assert!(out[0].as_ref().is_ok_and(|e| e.kind == RuntimeEventKind::Started));
        assert!(out[1].is_err());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
