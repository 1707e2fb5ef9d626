//! Podman's containers in the runtime-neutral model.

use std::path::Path;

use portwarden_core::{Container, ContainerId, ContainerState, Pod};

use crate::PODMAN;
use crate::api;

/// A container from its inspect document; `pod_name` is its pod's name,
/// looked up by the caller (inspect gives only the pod's id).
pub(crate) fn from_inspect(i: api::Inspect, pod_name: Option<String>, proc_root: &Path) -> Container {
    let state = state(&i.state.status);
    let pid = u32::try_from(i.state.pid).ok().filter(|&pid| pid > 0 && state.is_alive());
    let labels = i.config.and_then(|c| c.labels).unwrap_or_default();
    // A stopped container's last address may already be another's.
    let ips = match (state.is_alive(), i.network_settings) {
        (true, Some(n)) => n.addresses(),
        _ => Vec::new(),
    };
    // Labels the kubelet set (`podman kube play` keeps them) name the
    // Kubernetes pod; otherwise the Podman pod, which has no namespace.
    let pod = Pod::from_labels(&labels).or_else(|| {
        (!i.pod.is_empty()).then(|| Pod { name: pod_name.unwrap_or_default(), namespace: String::new(), uid: i.pod })
    });
    let host_network = i.host_config.is_some_and(|h| h.network_mode == "host");
    Container {
        name: i.name,
        image: i.image_name,
        state,
        pid,
        labels,
        pod,
        ips,
        netns: pid.map(|pid| Container::netns_path(proc_root, pid)),
        host_network,
        sandbox: i.is_infra,
        ..Container::new(PODMAN, ContainerId::new(i.id))
    }
}

/// A container from its list entry alone, for one that is not running
/// (nothing more to learn) or could not be inspected.
pub(crate) fn from_list(e: api::ListEntry) -> Container {
    let labels = e.labels.unwrap_or_default();
    Container {
        name: e.names.into_iter().next().unwrap_or_default(),
        image: e.image,
        state: state(&e.state),
        pod: Pod::from_labels(&labels).or_else(|| {
            (!e.pod_name.is_empty()).then(|| Pod { name: e.pod_name, namespace: String::new(), uid: String::new() })
        }),
        labels,
        sandbox: e.is_infra,
        ..Container::new(PODMAN, ContainerId::new(e.id))
    }
}

/// Podman's states (libpod's `ContainerStatus`).
pub(crate) fn state(status: &str) -> ContainerState {
    match status {
        "created" | "configured" | "initialized" => ContainerState::Created,
        "running" | "stopping" => ContainerState::Running,
        "paused" => ContainerState::Paused,
        "restarting" => ContainerState::Restarting,
        "removing" => ContainerState::Removing,
        "exited" | "stopped" => ContainerState::Exited,
        _ => ContainerState::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(json: &str) -> Container {
        from_inspect(
            serde_json::from_str(json).expect("fixture decodes"),
            Some("web-pod".into()),
            Path::new("/host/proc"),
        )
    }

    #[test]
    fn a_running_pod_member_gets_pid_netns_ips_and_its_pod() {
        let c = inspect(
            r#"{"Id":"ea06","Name":"app","ImageName":"localhost/testbed/busybox:1",
                "State":{"Status":"running","Pid":710},"Pod":"6809","IsInfra":false,
                "Config":{"Labels":{"a":"b"}},
                "NetworkSettings":{"IPAddress":"10.89.0.15","Networks":{"tb-podman":{"IPAddress":"10.89.0.15"}}},
                "HostConfig":{"NetworkMode":"container:a4a7"}}"#,
        );
        assert_eq!((c.name.as_str(), c.state, c.pid), ("app", ContainerState::Running, Some(710)));
        assert_eq!(c.runtime, PODMAN);
        assert_eq!(c.netns.as_deref(), Some(Path::new("/host/proc/710/ns/net")));
        assert_eq!(c.ips, ["10.89.0.15".parse::<std::net::IpAddr>().unwrap()]);
        let pod = c.pod.expect("pod");
        assert_eq!((pod.name.as_str(), pod.namespace.as_str(), pod.uid.as_str()), ("web-pod", "", "6809"));
        assert!(!c.host_network && !c.sandbox);
        let infra = inspect(
            r#"{"Id":"a4a7","Name":"6809-infra","State":{"Status":"running","Pid":689},"Pod":"6809","IsInfra":true}"#,
        );
        assert!(infra.sandbox, "the infra container sorts after the pod's own");
    }

    #[test]
    fn a_stopped_container_has_no_pid_and_no_stale_address() {
        let c = inspect(
            r#"{"Id":"x","Name":"done","State":{"Status":"exited","Pid":0},
                "NetworkSettings":{"IPAddress":"10.89.0.2"},"HostConfig":{"NetworkMode":"host"}}"#,
        );
        assert_eq!((c.state, c.pid, c.ips.len()), (ContainerState::Exited, None, 0));
        assert!(c.host_network && c.pod.is_none());
    }
}
