//! containerd event envelopes to core events.
//!
//! The subscription asks for task and container topics. Of those, the ones
//! that change what the inventory shows are mapped; the rest (`/tasks/oom`,
//! exec processes, I/O, checkpoints, or anything a newer containerd adds)
//! are ignored and counted, so a surprise is visible in the counter, never
//! an error.

use containerd_client::events::{
    ContainerCreate, ContainerDelete, ContainerUpdate, TaskDelete, TaskExit, TaskPaused, TaskResumed, TaskStart,
};
use containerd_client::types::Envelope;
use portwarden_core::{ContainerId, RuntimeEvent, RuntimeEventKind};
use prost::Message;

use crate::convert;

/// The subscription's filters: every task and container event.
pub(crate) const FILTERS: &[&str] = &[r#"topic~="^/tasks/""#, r#"topic~="^/containers/""#];

/// What one envelope means to the inventory.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    /// A lifecycle change in `namespace`.
    Event { namespace: String, event: RuntimeEvent },
    /// A topic the inventory does not act on, or a payload that did not decode.
    Ignored,
}

/// Decodes one envelope.
pub(crate) fn decode(envelope: &Envelope) -> Decoded {
    let Some(any) = envelope.event.as_ref() else { return Decoded::Ignored };
    let payload = any.value.as_slice();
    let mapped = match envelope.topic.as_str() {
        "/tasks/start" => TaskStart::decode(payload).ok().map(|e| (e.container_id, RuntimeEventKind::Started)),
        // Exec processes exit too; only the init process ending stops the container.
        "/tasks/exit" => TaskExit::decode(payload)
            .ok()
            .filter(|e| e.id.is_empty() || e.id == e.container_id)
            .map(|e| (e.container_id, RuntimeEventKind::Exited { exit_code: i32::try_from(e.exit_status).ok() })),
        "/tasks/delete" => TaskDelete::decode(payload)
            .ok()
            .filter(|e| e.id.is_empty() || e.id == e.container_id)
            .map(|e| (e.container_id, RuntimeEventKind::Changed)),
        "/tasks/paused" => TaskPaused::decode(payload).ok().map(|e| (e.container_id, RuntimeEventKind::Paused)),
        "/tasks/resumed" => TaskResumed::decode(payload).ok().map(|e| (e.container_id, RuntimeEventKind::Resumed)),
        "/containers/create" => ContainerCreate::decode(payload).ok().map(|e| (e.id, RuntimeEventKind::Created)),
        "/containers/update" => ContainerUpdate::decode(payload).ok().map(|e| (e.id, RuntimeEventKind::Changed)),
        "/containers/delete" => ContainerDelete::decode(payload).ok().map(|e| (e.id, RuntimeEventKind::Deleted)),
        _ => None,
    };
    match mapped {
        Some((id, kind)) if !id.is_empty() => Decoded::Event {
            namespace: envelope.namespace.clone(),
            event: RuntimeEvent { id: ContainerId::new(id), kind, time: convert::time(envelope.timestamp.as_ref()) },
        },
        _ => Decoded::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Any;

    fn envelope(topic: &str, payload: Vec<u8>) -> Envelope {
        Envelope {
            timestamp: None,
            namespace: "team-a".into(),
            topic: topic.into(),
            event: Some(Any { type_url: String::new(), value: payload }),
        }
    }

    #[test]
    fn task_start_and_init_exit_are_events() {
        let start = TaskStart { container_id: "c1".into(), pid: 5 }.encode_to_vec();
        let Decoded::Event { namespace, event } = decode(&envelope("/tasks/start", start)) else { panic!("event") };
        assert_eq!((namespace.as_str(), event.id.as_str(), event.kind), ("team-a", "c1", RuntimeEventKind::Started));

        let exit = TaskExit { container_id: "c1".into(), id: "c1".into(), exit_status: 3, ..Default::default() };
        let Decoded::Event { event, .. } = decode(&envelope("/tasks/exit", exit.encode_to_vec())) else { panic!() };
        assert_eq!(event.kind, RuntimeEventKind::Exited { exit_code: Some(3) });
    }

    #[test]
    fn exec_exits_unknown_topics_and_garbage_are_ignored() {
        let exec = TaskExit { container_id: "c1".into(), id: "exec-1".into(), ..Default::default() };
        assert_eq!(decode(&envelope("/tasks/exit", exec.encode_to_vec())), Decoded::Ignored);
        assert_eq!(decode(&envelope("/tasks/oom", vec![])), Decoded::Ignored);
        assert_eq!(decode(&envelope("/snapshot/prepare", vec![1, 2, 3])), Decoded::Ignored);
        assert_eq!(decode(&envelope("/tasks/start", vec![0xff, 0xff, 0xff])), Decoded::Ignored);
        let mut empty = envelope("/tasks/start", vec![]);
        empty.event = None;
        assert_eq!(decode(&empty), Decoded::Ignored);
    }
}
