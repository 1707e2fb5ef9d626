//! containerd objects to core's model.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::CONTAINERD;
use containerd_client::services::v1::Container as NativeContainer;
use containerd_client::types::v1::{Process, Status};
use portwarden_core::{Container, ContainerId, ContainerState, Pod};

/// Labels that name a container, most specific first: the kubelet's (CRI),
/// nerdctl's. Without one, the id is the name, as `ctr` shows it.
const NAME_LABELS: &[&str] = &["io.kubernetes.container.name", "nerdctl/name"];

/// The label containerd's CRI plugin puts on a pod's sandbox (pause)
/// container, which is named `POD` as the kubelet always named it.
const CRI_KIND_LABEL: &str = "io.cri-containerd.kind";

/// Builds a container from its record and, when it has one, its task.
pub(crate) fn container(namespace: &str, c: NativeContainer, task: Option<&Process>, proc_root: &Path) -> Container {
    let labels: BTreeMap<String, String> = c.labels.into_iter().collect();
    let sandbox = labels.get(CRI_KIND_LABEL).is_some_and(|k| k == "sandbox");
    let name = if sandbox {
        "POD".to_owned()
    } else {
        NAME_LABELS.iter().find_map(|k| labels.get(*k)).cloned().unwrap_or_else(|| c.id.clone())
    };
    let state = task.map_or(ContainerState::Created, |t| state(t.status()));
    let pid = task.map(|t| t.pid).filter(|&pid| pid > 0 && state.is_alive());
    Container {
        name,
        image: c.image,
        state,
        pid,
        pod: Pod::from_labels(&labels),
        labels,
        namespace: Some(namespace.to_owned()),
        netns: pid.map(|pid| Container::netns_path(proc_root, pid)),
        sandbox,
        ..Container::new(CONTAINERD, ContainerId::new(c.id))
    }
}

/// The container a listed task belongs to. containerd's `Tasks.List` fills
/// only the task's `id` (which is the container's id), leaving
/// `container_id` empty; other calls fill `container_id`. Either will do.
pub(crate) fn task_container(task: &Process) -> &str {
    if task.container_id.is_empty() { &task.id } else { &task.container_id }
}

fn state(status: Status) -> ContainerState {
    match status {
        Status::Created => ContainerState::Created,
        Status::Running => ContainerState::Running,
        Status::Paused | Status::Pausing => ContainerState::Paused,
        Status::Stopped => ContainerState::Exited,
        Status::Unknown => ContainerState::Unknown,
    }
}

/// A protobuf timestamp as `SystemTime`; now when absent or before 1970.
pub(crate) fn time(ts: Option<&prost_types::Timestamp>) -> SystemTime {
    ts.and_then(|t| {
        let secs = u64::try_from(t.seconds).ok()?;
        let nanos = u32::try_from(t.nanos).ok()?;
        Some(UNIX_EPOCH + Duration::new(secs, nanos))
    })
    .unwrap_or_else(SystemTime::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native(id: &str, labels: &[(&str, &str)]) -> NativeContainer {
        NativeContainer {
            id: id.into(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            image: "localhost/testbed/busybox:1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_running_task_gives_pid_and_netns() {
        let task = Process {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 77,
            status: Status::Running as i32,
            ..Default::default()
        };
        let c = container("team-a", native("c1", &[]), Some(&task), Path::new("/host/proc"));
        assert_eq!((c.name.as_str(), c.state, c.pid), ("c1", ContainerState::Running, Some(77)));
        assert_eq!(c.namespace.as_deref(), Some("team-a"));
        assert_eq!(c.netns.as_deref(), Some(Path::new("/host/proc/77/ns/net")));
    }

    #[test]
    fn a_listed_task_is_matched_by_its_id_when_containerd_leaves_container_id_empty() {
        let listed = Process { id: "c1".into(), pid: 7, status: Status::Running as i32, ..Default::default() };
        assert_eq!(task_container(&listed), "c1");
        let got = Process { container_id: "c2".into(), id: "exec".into(), ..Default::default() };
        assert_eq!(task_container(&got), "c2");
    }

    #[test]
    fn no_task_or_a_stopped_one_means_no_pid() {
        let c = container("default", native("c2", &[]), None, Path::new("/proc"));
        assert_eq!((c.state, c.pid), (ContainerState::Created, None));
        let task = Process { pid: 9, status: Status::Stopped as i32, ..Default::default() };
        let c = container("default", native("c2", &[]), Some(&task), Path::new("/proc"));
        assert_eq!((c.state, c.pid), (ContainerState::Exited, None));
    }

    #[test]
    fn kubelet_labels_give_name_and_pod() {
        let labels = [
            ("io.kubernetes.container.name", "app"),
            ("io.kubernetes.pod.name", "web-0"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.uid", "u1"),
        ];
        let c = container("k8s.io", native("c3", &labels), None, Path::new("/proc"));
        assert_eq!(c.name, "app");
        assert_eq!(c.pod.map(|p| p.name), Some("web-0".to_owned()));
    }
}
