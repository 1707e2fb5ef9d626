//! Docker API objects to core's model.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::DOCKER;
use portwarden_core::{Container, ContainerId, ContainerState, Pod, RuntimeEvent, RuntimeEventKind};

use crate::api;

/// Builds a container from `GET /containers/{id}/json`.
pub(crate) fn from_inspect(inspect: api::Inspect, proc_root: &Path) -> Container {
    let (status, pid) = inspect.state.map_or((String::new(), 0), |s| (s.status, s.pid));
    let (image, labels) = inspect.config.map_or((String::new(), None), |c| (c.image, c.labels));
    let network_mode = inspect.host_config.map(|h| h.network_mode).unwrap_or_default();
    build(Parts {
        id: inspect.id,
        name: inspect.name,
        image,
        status,
        pid,
        labels: labels.unwrap_or_default(),
        network_mode,
        networks: inspect.network_settings.unwrap_or_default(),
        proc_root,
    })
}

/// Builds a container from a `GET /containers/json` entry, which lacks the
/// PID: good for stopped containers, and the fallback when inspect fails.
pub(crate) fn from_summary(summary: api::Summary, proc_root: &Path) -> Container {
    build(Parts {
        id: summary.id,
        name: summary.names.into_iter().next().unwrap_or_default(),
        image: summary.image,
        status: summary.state,
        pid: 0,
        labels: summary.labels.unwrap_or_default(),
        network_mode: summary.host_config.map(|h| h.network_mode).unwrap_or_default(),
        networks: summary.network_settings.unwrap_or_default(),
        proc_root,
    })
}

struct Parts<'a> {
    id: String,
    name: String,
    image: String,
    status: String,
    pid: i64,
    labels: BTreeMap<String, String>,
    network_mode: String,
    networks: api::NetworkSettings,
    proc_root: &'a Path,
}

fn build(p: Parts<'_>) -> Container {
    let state = state(&p.status);
    // Docker reports pid 0 for stopped containers; a negative or oversized
    // value is malformed and treated as unknown.
    let pid = u32::try_from(p.pid).ok().filter(|&pid| pid > 0 && state.is_alive());
    // A stopped container's last IP may already belong to another one.
    let ips = if state.is_alive() { p.networks.addresses() } else { Vec::new() };
    Container {
        name: p.name.trim_start_matches('/').to_owned(),
        image: p.image,
        state,
        pid,
        pod: Pod::from_labels(&p.labels),
        // dockershim and cri-dockerd mark a pod's pause container so.
        sandbox: p.labels.get("io.kubernetes.docker.type").is_some_and(|t| t == "podsandbox"),
        labels: p.labels,
        ips,
        netns: pid.map(|pid| Container::netns_path(p.proc_root, pid)),
        host_network: p.network_mode == "host",
        ..Container::new(DOCKER, ContainerId::new(p.id))
    }
}

fn state(status: &str) -> ContainerState {
    match status {
        "created" => ContainerState::Created,
        "running" => ContainerState::Running,
        "paused" => ContainerState::Paused,
        "restarting" => ContainerState::Restarting,
        "removing" => ContainerState::Removing,
        "exited" => ContainerState::Exited,
        "dead" => ContainerState::Dead,
        _ => ContainerState::Unknown,
    }
}

/// The container actions the inventory subscribes to (Docker's `event` filter).
pub(crate) const WATCHED_ACTIONS: &[&str] = &["create", "start", "die", "pause", "unpause", "rename", "destroy"];

/// Maps one Docker event; `None` for actions the inventory ignores.
pub(crate) fn event(ev: api::Event) -> Option<RuntimeEvent> {
    if ev.kind != "container" || ev.actor.id.is_empty() {
        return None;
    }
    let kind = match ev.action.as_str() {
        "create" => RuntimeEventKind::Created,
        "start" => RuntimeEventKind::Started,
        // Podman's own API says `died` and `remove` (with the exit code
        // as `containerExitCode`) where Docker says `die` and `destroy`.
        "die" | "died" => {
            let attributes = ev.actor.attributes.as_ref();
            let code = attributes
                .and_then(|a| a.get("exitCode").or_else(|| a.get("containerExitCode")))
                .and_then(|c| c.parse().ok());
            RuntimeEventKind::Exited { exit_code: code }
        }
        "pause" => RuntimeEventKind::Paused,
        "unpause" => RuntimeEventKind::Resumed,
        "rename" => RuntimeEventKind::Changed,
        "destroy" | "remove" => RuntimeEventKind::Deleted,
        _ => return None,
    };
    let time = u64::try_from(ev.time_nano)
        .ok()
        .filter(|&n| n > 0)
        .map_or_else(SystemTime::now, |n| UNIX_EPOCH + Duration::from_nanos(n));
    Some(RuntimeEvent { id: ContainerId::new(ev.actor.id), kind, time })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(json: &str) -> Container {
        from_inspect(serde_json::from_str(json).expect("fixture decodes"), Path::new("/host/proc"))
    }

    #[test]
    fn running_container_gets_pid_netns_ips_and_pod() {
        let c = inspect(include_str!("../tests/data/inspect-running.json"));
        assert_eq!(c.name, "web");
        assert_eq!(c.image, "localhost/testbed/busybox:1");
        assert_eq!(c.state, ContainerState::Running);
        assert_eq!(c.pid, Some(4242));
        assert_eq!(c.netns.as_deref(), Some(Path::new("/host/proc/4242/ns/net")));
        assert_eq!(c.ips, ["172.18.0.5".parse::<std::net::IpAddr>().expect("ip")]);
        let pod = c.pod.expect("pod from labels");
        assert_eq!((pod.name.as_str(), pod.namespace.as_str(), pod.uid.as_str()), ("web-0", "shop", "u-1"));
        assert!(!c.host_network);
    }

    #[test]
    fn stopped_or_pidless_containers_have_no_netns() {
        let c = inspect(r#"{"Id":"abc","Name":"/x","State":{"Status":"exited","Pid":0}}"#);
        assert_eq!((c.state, c.pid, c.netns), (ContainerState::Exited, None, None));
        let c = inspect(r#"{"Id":"abc","State":{"Status":"running","Pid":-1}}"#);
        assert_eq!((c.state, c.pid), (ContainerState::Running, None));
        let c = inspect(r#"{"Id":"abc","State":null,"Config":null,"NetworkSettings":null}"#);
        assert_eq!(c.state, ContainerState::Unknown);
    }

    #[test]
    fn host_network_is_flagged() {
        let c = inspect(r#"{"Id":"h","State":{"Status":"running","Pid":7},"HostConfig":{"NetworkMode":"host"}}"#);
        assert!(c.host_network);
    }

    #[test]
    fn inspect_without_an_id_is_malformed() {
        assert!(serde_json::from_str::<api::Inspect>(r#"{"Name":"/x"}"#).is_err());
    }

    #[test]
    fn events_map_to_core_kinds() {
        let ev: api::Event = serde_json::from_str(
            r#"{"Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"exitCode":"137"}},"timeNano":1700000000000000000}"#,
        )
        .expect("decodes");
        let ev = event(ev).expect("mapped");
        assert_eq!(ev.kind, RuntimeEventKind::Exited { exit_code: Some(137) });
        assert_eq!(ev.time, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let exec: api::Event =
            serde_json::from_str(r#"{"Type":"container","Action":"exec_start: sh","Actor":{"ID":"abc"}}"#)
                .expect("decodes");
        assert!(event(exec).is_none());
    }
}
